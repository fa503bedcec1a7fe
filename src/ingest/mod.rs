//! The webhook front door: `/webhooks/{provider}` authenticates, parses and durably stores each CDR
//! before answering 2xx; every refusal is a JSON 4xx, and the refused request is kept with its reason.

pub mod auth;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use crate::classify::{self, DecisionRequest};
use crate::clock::Clock;
use crate::config::{Config, ProviderSettings};
use crate::domain::{CallRecord, Leg, Outcome, Provider};
use crate::normalize::{self, Inbound, ParseError, callr};
use crate::pipeline::Wake;
use crate::store::{Ingested, RawRequest, Rejection, Store};

/// Headers that carry secrets: never stored, never logged.
const SECRET_HEADERS: [&str; 4] = [
    auth::TOKEN_HEADER,
    "authorization",
    "proxy-authorization",
    "cookie",
];

/// What the webhook handler needs, built once from the config.
pub struct IngestState {
    store: Store,
    providers: HashMap<Provider, ProviderSettings>,
    body_limit: usize,
    trust_forwarded_for: bool,
    settle: chrono::Duration,
    clock: Clock,
    /// Wakes the alert pipeline when a stored record asks for a decision sooner than it would
    /// wake by itself.
    wake: Arc<Wake>,
    limiter: Option<SourceLimiter>,
    requests: std::sync::atomic::AtomicU64,
}

type SourceLimiter = governor::DefaultKeyedRateLimiter<std::net::IpAddr>;

impl IngestState {
    pub fn new(config: &Config, store: Store, clock: Clock, wake: Arc<Wake>) -> Self {
        let providers = Provider::ALL
            .into_iter()
            .filter_map(|p| config.provider(p).map(|s| (p, s)))
            .collect();
        IngestState {
            store,
            providers,
            body_limit: config.server.body_limit_bytes,
            trust_forwarded_for: config.server.trust_forwarded_for,
            settle: chrono::Duration::seconds(
                i64::try_from(config.alerts.settle_seconds).unwrap_or(i64::MAX / 1000),
            ),
            clock,
            wake,
            limiter: std::num::NonZeroU32::new(config.server.rate_limit_per_second).map(
                |per_second| {
                    let burst = std::num::NonZeroU32::new(config.server.rate_limit_burst)
                        .unwrap_or(per_second);
                    governor::RateLimiter::dashmap(
                        governor::Quota::per_second(per_second).allow_burst(burst),
                    )
                },
            ),
            requests: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(seconds to wait)` when `ip` is over its rate limit.
    fn over_limit(&self, ip: Option<std::net::IpAddr>) -> Option<u64> {
        let (limiter, ip) = (self.limiter.as_ref()?, ip?);
        // Forget quiet sources now and then, so memory follows the active ones.
        if self
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % 4096
            == 4095
        {
            limiter.retain_recent();
        }
        limiter.check_key(&ip).err().map(|not_until| {
            let clock = governor::clock::DefaultClock::default();
            not_until
                .wait_time_from(governor::clock::Clock::now(&clock))
                .as_secs()
                .max(1)
        })
    }

    pub fn enabled(&self, provider: Provider) -> bool {
        self.providers.contains_key(&provider)
    }
}

/// A refusal: the HTTP status, a stable error code and a sentence saying what to fix.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    error: &'static str,
    detail: String,
    field: Option<String>,
}

impl Refusal {
    fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        Refusal {
            status,
            error,
            detail: detail.into(),
            field: None,
        }
    }

    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.error, "detail": self.detail });
        if let Some(field) = self.field {
            body["field"] = json!(field);
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<ParseError> for Refusal {
    fn from(e: ParseError) -> Self {
        match &e {
            ParseError::Malformed(_) => {
                Refusal::new(StatusCode::BAD_REQUEST, "malformed_payload", e.to_string())
            }
            ParseError::Invalid { field, .. } => Refusal {
                field: Some(field.clone()),
                ..Refusal::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unusable_payload",
                    e.to_string(),
                )
            },
        }
    }
}

/// Handles one request to `/webhooks/{name}`, in a span naming the provider and, once read, the call.
pub async fn webhook(state: &IngestState, name: String, request: Request) -> Response {
    use tracing::Instrument;
    let span = tracing::info_span!("webhook", provider = %name, call_id = tracing::field::Empty);
    handle(state, name, request).instrument(span).await
}

async fn handle(state: &IngestState, name: String, request: Request) -> Response {
    let received_at = state.clock.now();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let source = auth::client_ip(peer, request.headers(), state.trust_forwarded_for);
    if let Some(wait) = state.over_limit(source) {
        // Not kept in rejected_requests: a flood must not be able to fill the database.
        metrics::counter!("ringback_webhooks_total", "provider" => "any", "result" => "rate_limited")
            .increment(1);
        tracing::debug!(source = ?source, "webhook rate limit reached");
        let mut response = Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests from this address; retry in {wait} s (server.rate_limit_per_second)"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(wait));
        return response;
    }
    let (parts, body) = request.into_parts();
    let query_pairs: Vec<(String, String)> =
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let query_token = query_pairs
        .iter()
        .find(|(k, _)| k == auth::TOKEN_QUERY_KEY)
        .map(|(_, v)| v.clone());
    let payload_pairs: Vec<(String, String)> = query_pairs
        .into_iter()
        .filter(|(k, _)| k != auth::TOKEN_QUERY_KEY)
        .collect();
    let mut raw = RawRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&payload_pairs)
            .finish(),
        headers: stored_headers(&parts.headers),
        body: Vec::new(),
        remote_addr: peer.map(|p| p.to_string()),
        received_at,
    };

    let arrival = Arrival {
        method: &parts.method,
        headers: &parts.headers,
        source,
        token: query_token.as_deref(),
        payload_pairs: &payload_pairs,
    };
    let outcome = match accept(state, &name, &arrival, body, &mut raw).await {
        Ok((record, decision)) => store(state, record, raw, decision).await,
        Err(refusal) => Err((refusal, Some(raw))),
    };
    match outcome {
        Ok(response) => response,
        Err((refusal, raw)) => {
            let provider = if name.parse::<Provider>().is_ok() {
                name.clone()
            } else {
                "unknown".into()
            };
            metrics::counter!("ringback_webhooks_total", "provider" => provider, "result" => refusal.error)
                .increment(1);
            tracing::warn!(
                provider = %name,
                status = refusal.status.as_u16(),
                error = refusal.error,
                detail = %refusal.detail,
                "webhook rejected"
            );
            match raw {
                Some(raw) => keep_rejected(&state.store, &name, raw, &refusal).await,
                None => tracing::error!(
                    provider = %name,
                    "the storage writer stopped holding this request: it is not kept among the \
                     rejected ones, and its provider is asked to send it again"
                ),
            }
            refusal.into_response()
        }
    }
}

/// What is known of a request before its body is read.
struct Arrival<'a> {
    method: &'a Method,
    headers: &'a HeaderMap,
    /// The client address (the peer, or the proxy's `X-Forwarded-For` when trusted).
    source: Option<std::net::IpAddr>,
    /// ringback's own `token` from the query string.
    token: Option<&'a str>,
    /// The rest of the query string: the payload of GET webhooks.
    payload_pairs: &'a [(String, String)],
}

/// A record to store, and the decision it asks for with when that is due.
type Accepted = (CallRecord, Option<(DecisionRequest, DateTime<Utc>)>);

/// Everything between receiving a request and its record being ready to store: `raw` gets the
/// body.
async fn accept(
    state: &IngestState,
    name: &str,
    arrival: &Arrival<'_>,
    body: Body,
    raw: &mut RawRequest,
) -> Result<Accepted, Refusal> {
    let Arrival {
        method,
        headers,
        source,
        token: query_token,
        payload_pairs,
    } = *arrival;
    let provider: Provider = name.parse().map_err(|_| {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "unknown_provider",
            format!(
                "no provider is called `{name}`; ringback accepts /webhooks/telecmi, /webhooks/callr \
                 and /webhooks/callerdesk"
            ),
        )
    })?;
    let settings = state.providers.get(&provider).ok_or_else(|| {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "provider_disabled",
            format!(
                "provider `{provider}` is not enabled: set providers.{provider}.token in the config"
            ),
        )
    })?;
    let methods: &[Method] = match provider {
        Provider::Callr => &[Method::POST],
        Provider::Telecmi | Provider::Callerdesk => &[Method::GET, Method::POST],
    };
    if !methods.contains(method) {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{provider} webhooks are sent with {}, not {method}",
                methods
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        ));
    }
    if !auth::allowed(&settings.allow_from, source) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "source_not_allowed",
            format!(
                "{} is not in providers.{provider}.allow_from",
                source.map_or("an unknown address".to_owned(), |ip| ip.to_string())
            ),
        ));
    }
    raw.body = read_body(body, headers, state.body_limit).await?;
    match auth::check_token(&settings.token, query_token, headers) {
        auth::TokenCheck::Valid => {}
        auth::TokenCheck::Missing => {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the request carries no token: add ?token=... to the webhook URL given to the \
                 provider, or send an X-Ringback-Token header",
            ));
        }
        auth::TokenCheck::Wrong => {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("the token is wrong: it must equal providers.{provider}.token"),
            ));
        }
    }
    if let Some((secret, algorithm)) = &settings.hmac {
        let signature = headers
            .get("x-callr-hmacsignature")
            .and_then(|v| v.to_str().ok());
        callr::verify_signature(secret.expose().as_bytes(), *algorithm, signature, &raw.body)
            .map_err(|e| Refusal::new(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string()))?;
    }

    let inbound = Inbound {
        is_get: *method == Method::GET,
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        query: payload_pairs,
        body: &raw.body,
    };
    let record = normalize::parse(provider, &inbound, &settings.parse)?;
    tracing::Span::current().record("call_id", record.call_id.as_str());
    let decide_at = raw.received_at + state.settle;
    let decision = classify::decision_for(&record).map(|d| (d, decide_at));
    Ok((record, decision))
}

/// Stores an accepted record and answers for it. The record and its request move to the
/// storage writer rather than being copied; a refusal gets the request back to keep, if the
/// writer could give it back.
async fn store(
    state: &IngestState,
    record: CallRecord,
    raw: RawRequest,
    decision: Option<(DecisionRequest, DateTime<Utc>)>,
) -> Result<Response, (Refusal, Option<RawRequest>)> {
    let answer = Answer {
        provider: record.provider,
        leg: record.leg,
        outcome: record.outcome,
        call_id: record.call_id.clone(),
    };
    let due = decision.as_ref().map(|(_, at)| *at);
    match state.store.ingest(record, raw, decision).await {
        Ok(ingested) => {
            if let (Some(at), Ingested::Stored { .. }) = (due, ingested) {
                state.wake.due_at(at);
            }
            Ok(stored_response(&answer, ingested))
        }
        Err(not_stored) => {
            tracing::error!(
                provider = %answer.provider,
                call_id = %answer.call_id,
                error = %not_stored.error,
                "cannot store a webhook"
            );
            let refusal = Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the record could not be stored; the provider should send it again",
            );
            Err((refusal, not_stored.request))
        }
    }
}

/// What the answer to a stored webhook tells of its record.
struct Answer {
    provider: Provider,
    leg: Leg,
    outcome: Outcome,
    call_id: String,
}

async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Vec<u8>, Refusal> {
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is over the {limit}-byte limit (server.body_limit_bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "unreadable_body",
            format!("the body could not be read: {e}"),
        )),
    }
}

fn stored_response(answer: &Answer, ingested: Ingested) -> Response {
    let (status, id) = match ingested {
        Ingested::Stored { id } => ("stored", id),
        Ingested::Duplicate { id } => ("duplicate", id),
    };
    metrics::counter!("ringback_webhooks_total", "provider" => answer.provider.as_str(), "result" => status)
        .increment(1);
    if status == "stored" {
        metrics::counter!("ringback_records_total", "provider" => answer.provider.as_str(), "outcome" => answer.outcome.as_str())
            .increment(1);
    }
    tracing::info!(
        provider = %answer.provider,
        call_id = %answer.call_id,
        leg = answer.leg.as_str(),
        outcome = %answer.outcome,
        result = status,
        record_id = id,
        "webhook accepted"
    );
    // Written out rather than built as a JSON tree: the two values need no escaping, and this is
    // every accepted webhook's answer.
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"status":"{status}","record_id":{id}}}"#),
    )
        .into_response()
}

async fn keep_rejected(store: &Store, provider: &str, request: RawRequest, refusal: &Refusal) {
    let rejection = Rejection {
        provider: provider.to_owned(),
        request,
        status: refusal.status.as_u16(),
        error: refusal.error.to_owned(),
        detail: refusal.detail.clone(),
    };
    if let Err(e) = store.reject(&rejection).await {
        tracing::error!(error = %e, "cannot keep a rejected request");
    }
}

fn stored_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| !SECRET_HEADERS.contains(&name.as_str()))
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const BODY: &str = r#"{"type":"cdr","direction":"inbound","cmiuuid":"w-1","status":"missed","from":919810000001,"time":1795428000000}"#;

    /// A webhook endpoint on a SQLite file with `settle_seconds`, at a fixed time, and the store
    /// and wake-up it uses.
    async fn endpoint(
        dir: &tempfile::TempDir,
        settle_seconds: u64,
    ) -> (IngestState, Store, Arc<Wake>, DateTime<Utc>) {
        let db = dir.path().join("w.db");
        let text = format!(
            "[storage]\nurl = \"sqlite://{}\"\n\n[providers.telecmi]\ntoken = \"t0k\"\n\n\
             [alerts]\nsettle_seconds = {settle_seconds}\n",
            db.display()
        );
        let config =
            crate::config::parse_with_env(std::path::Path::new("c.toml"), &text, dir.path(), [])
                .unwrap();
        let store = Store::open(&config.storage.url).await.unwrap();
        let now = chrono::Utc
            .with_ymd_and_hms(2026, 11, 23, 9, 15, 0)
            .unwrap();
        let wake = Arc::new(Wake::new());
        let state = IngestState::new(&config, store.clone(), Clock::manual(now), wake.clone());
        (state, store, wake, now)
    }

    /// TeleCMI's webhook of one missed call.
    fn missed_call() -> Request {
        Request::builder()
            .method(Method::POST)
            .uri("/webhooks/telecmi")
            .header(header::CONTENT_TYPE, "application/json")
            .header(auth::TOKEN_HEADER, "t0k")
            .body(Body::from(BODY))
            .unwrap()
    }

    /// Stores one missed call through the webhook with `settle_seconds`, while the decider
    /// sleeps until a minute from now; whether that woke the decider.
    async fn wakes_a_decider_sleeping_a_minute(settle_seconds: u64) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let (state, _store, wake, now) = endpoint(&dir, settle_seconds).await;
        wake.sleeping_until(now + chrono::Duration::minutes(1));
        let response = webhook(&state, "telecmi".into(), missed_call()).await;
        assert_eq!(response.status(), StatusCode::OK);
        wake.woken()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stored_record_wakes_the_decider_only_when_due_before_it_would_wake() {
        assert!(
            wakes_a_decider_sleeping_a_minute(0).await,
            "due at once: the decider must not sleep on it"
        );
        assert!(
            !wakes_a_decider_sleeping_a_minute(3600).await,
            "due in an hour: the decider's own wake-up comes first"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_that_cannot_be_stored_is_refused_and_its_request_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (state, store, _wake, now) = endpoint(&dir, 0).await;
        store.close_writer().await;
        let response = webhook(&state, "telecmi".into(), missed_call()).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "storage_unavailable");
        // The request went to the writer and came back, whole, to be kept.
        let kept = store.rejections(10).await.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].error, "storage_unavailable");
        assert_eq!(kept[0].status, 503);
        assert_eq!(kept[0].request.body, BODY.as_bytes());
        assert_eq!(kept[0].request.path, "/webhooks/telecmi");
        assert_eq!(kept[0].request.received_at, now);
        assert_eq!(store.count_records().await.unwrap(), 0);
    }
}
