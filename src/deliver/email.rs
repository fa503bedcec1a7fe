//! Sends alert emails (plain-text and HTML parts) over SMTP with lettre: STARTTLS, implicit TLS,
//! or a plain connection only when the URL says so; SMTP 4xx is retried, 5xx is final.

use std::fmt;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::DeliveryError;
use crate::render::Email;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `smtp://`: upgrade with STARTTLS, and refuse a server that cannot.
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Implicit,
    /// `smtp://...?tls=opportunistic`: STARTTLS when offered.
    Opportunistic,
    /// `smtp://...?tls=none`: no TLS at all.
    None,
}

/// A parsed `email.smtp_url`; its password never appears in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    user: Option<String>,
    password: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SmtpUrlError {
    #[error("email.smtp_url is not a URL: {0}; write smtp://user:pass@host:587")]
    NotAUrl(String),
    #[error("email.smtp_url must start with smtp:// or smtps://, not {0}://")]
    Scheme(String),
    #[error("email.smtp_url has no host")]
    NoHost,
    #[error("email.smtp_url: tls={0} is not one of required, opportunistic, none")]
    TlsMode(String),
    #[error(
        "email.smtp_url sends a password over a connection without TLS; use smtps:// or STARTTLS, \
         or set email.allow_plain_auth = true if the network is trusted"
    )]
    PlainAuth,
}

impl SmtpSettings {
    pub fn parse(url: &str, allow_plain_auth: bool) -> Result<SmtpSettings, SmtpUrlError> {
        // The URL holds a password: errors describe it without echoing it.
        let parsed = url::Url::parse(url).map_err(|e| SmtpUrlError::NotAUrl(e.to_string()))?;
        let implicit = match parsed.scheme() {
            "smtp" => false,
            "smtps" => true,
            other => return Err(SmtpUrlError::Scheme(other.to_owned())),
        };
        let host = parsed.host_str().ok_or(SmtpUrlError::NoHost)?.to_owned();
        let tls = parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let security = match (implicit, tls.as_deref()) {
            (true, _) => Security::Implicit,
            (false, None | Some("required")) => Security::StartTls,
            (false, Some("opportunistic")) => Security::Opportunistic,
            (false, Some("none")) => Security::None,
            (false, Some(other)) => return Err(SmtpUrlError::TlsMode(other.to_owned())),
        };
        let user = (!parsed.username().is_empty()).then(|| percent_decode(parsed.username()));
        let password = parsed.password().map(percent_decode);
        if user.is_some()
            && matches!(security, Security::None | Security::Opportunistic)
            && !allow_plain_auth
        {
            return Err(SmtpUrlError::PlainAuth);
        }
        let port = parsed.port().unwrap_or(match security {
            Security::Implicit => 465,
            Security::StartTls | Security::Opportunistic => 587,
            Security::None => 25,
        });
        Ok(SmtpSettings {
            host,
            port,
            security,
            user,
            password,
        })
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} ({:?}{})",
            self.host,
            self.port,
            self.security,
            if self.user.is_some() {
                ", with a login"
            } else {
                ""
            }
        )
    }
}

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(
        settings: &SmtpSettings,
        from: Mailbox,
        timeout: Duration,
    ) -> Result<Mailer, String> {
        let tls = |host: &str| {
            TlsParameters::new(host.to_owned())
                .map_err(|e| format!("cannot set up TLS for {host}: {e}"))
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(settings.port)
            .timeout(Some(timeout));
        builder = match settings.security {
            Security::StartTls => builder.tls(Tls::Required(tls(&settings.host)?)),
            Security::Implicit => builder.tls(Tls::Wrapper(tls(&settings.host)?)),
            Security::Opportunistic => builder.tls(Tls::Opportunistic(tls(&settings.host)?)),
            Security::None => builder.tls(Tls::None),
        };
        if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
        })
    }

    /// Sends `email` to `to`; returns the server's acceptance line.
    pub async fn send(&self, to: &str, email: &Email) -> Result<String, DeliveryError> {
        let to: Mailbox = to.parse().map_err(|e| {
            DeliveryError::Permanent(format!("`{to}` is not an email address: {e}"))
        })?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                email.html.clone(),
            ))
            .map_err(|e| DeliveryError::Permanent(format!("cannot build the email: {e}")))?;
        match self.transport.send(message).await {
            Ok(response) => Ok(format!(
                "{} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            )),
            Err(e) if e.is_permanent() => Err(DeliveryError::Permanent(format!(
                "the SMTP server refused the email: {e}"
            ))),
            Err(e) => Err(DeliveryError::Transient(format!("SMTP: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls() {
        let s = SmtpSettings::parse("smtp://u%40x:p%3Ass@mail.example.com", false).unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.security),
            ("mail.example.com", 587, Security::StartTls)
        );
        assert_eq!(s.user.as_deref(), Some("u@x"));
        assert_eq!(s.password.as_deref(), Some("p:ss"));
        let s = SmtpSettings::parse("smtps://mail.example.com", false).unwrap();
        assert_eq!((s.port, s.security), (465, Security::Implicit));
        let s = SmtpSettings::parse("smtp://127.0.0.1:2525?tls=none", false).unwrap();
        assert_eq!((s.port, s.security), (2525, Security::None));
        assert!(matches!(
            SmtpSettings::parse("smtp://u:p@h:25?tls=none", false),
            Err(SmtpUrlError::PlainAuth)
        ));
        assert!(SmtpSettings::parse("smtp://u:p@h:25?tls=none", true).is_ok());
        assert!(matches!(
            SmtpSettings::parse("http://h", false),
            Err(SmtpUrlError::Scheme(_))
        ));
        assert!(matches!(
            SmtpSettings::parse("smtp://h?tls=maybe", false),
            Err(SmtpUrlError::TlsMode(_))
        ));
    }

    #[test]
    fn passwords_are_not_shown() {
        let s = SmtpSettings::parse("smtp://user:hunter2@h", false).unwrap();
        assert!(!format!("{s} {s:?}").contains("hunter2"));
        let err = SmtpSettings::parse("smtp://user:hunter2@h?tls=bogus", false).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }
}
