//! Who may call a webhook: the provider's token (query `token` or `X-Ringback-Token` header,
//! compared in constant time) and its optional allow-list of source networks.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::config::Secret;

pub const TOKEN_HEADER: &str = "x-ringback-token";
pub const TOKEN_QUERY_KEY: &str = "token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    Valid,
    Missing,
    Wrong,
}

/// Checks the token a provider sent, from the query string or the header.
pub fn check_token(
    expected: &Secret,
    query_token: Option<&str>,
    headers: &HeaderMap,
) -> TokenCheck {
    let header_token = headers.get(TOKEN_HEADER).map(|v| v.as_bytes());
    let Some(given) = query_token.map(str::as_bytes).or(header_token) else {
        return TokenCheck::Missing;
    };
    if bool::from(given.ct_eq(expected.expose().as_bytes())) {
        TokenCheck::Valid
    } else {
        TokenCheck::Wrong
    }
}

/// The address a request came from: the peer, or the first `X-Forwarded-For` hop when the
/// operator said the proxy in front of ringback sets it.
pub fn client_ip(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trust_forwarded_for: bool,
) -> Option<IpAddr> {
    if trust_forwarded_for {
        let forwarded = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|first| first.trim().parse::<IpAddr>().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    peer.map(|p| p.ip())
}

/// An empty allow-list admits everyone.
pub fn allowed(allow_from: &[ipnet::IpNet], ip: Option<IpAddr>) -> bool {
    if allow_from.is_empty() {
        return true;
    }
    let Some(ip) = ip else { return false };
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    allow_from.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_query_or_header() {
        let secret = Secret::new("s3cret");
        let mut headers = HeaderMap::new();
        assert_eq!(check_token(&secret, None, &headers), TokenCheck::Missing);
        assert_eq!(
            check_token(&secret, Some("s3cret"), &headers),
            TokenCheck::Valid
        );
        assert_eq!(
            check_token(&secret, Some("s3cre"), &headers),
            TokenCheck::Wrong
        );
        headers.insert(TOKEN_HEADER, "s3cret".parse().unwrap());
        assert_eq!(check_token(&secret, None, &headers), TokenCheck::Valid);
        headers.insert(TOKEN_HEADER, "nope".parse().unwrap());
        assert_eq!(check_token(&secret, None, &headers), TokenCheck::Wrong);
    }

    #[test]
    fn allow_lists() {
        let nets: Vec<ipnet::IpNet> = vec!["203.0.113.0/24".parse().unwrap()];
        assert!(allowed(&[], None));
        assert!(allowed(&nets, Some("203.0.113.9".parse().unwrap())));
        assert!(allowed(&nets, Some("::ffff:203.0.113.9".parse().unwrap())));
        assert!(!allowed(&nets, Some("198.51.100.1".parse().unwrap())));
        assert!(!allowed(&nets, None));
    }

    #[test]
    fn forwarded_for_only_when_trusted() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9, 10.0.0.1".parse().unwrap());
        assert_eq!(
            client_ip(Some(peer), &headers, false),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            client_ip(Some(peer), &headers, true),
            Some("203.0.113.9".parse().unwrap())
        );
    }
}
