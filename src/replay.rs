//! `ringback replay FILE.jsonl`: ingests a backlog of recorded provider requests at full speed,
//! through the same checks as the webhooks, then decides and sends their alerts, grouped per chat.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use futures_util::StreamExt;
use serde::Deserialize;

use crate::clock::Clock;
use crate::config::Config;
use crate::domain::Provider;
use crate::ingest::{self, IngestState};
use crate::pipeline::Pipeline;
use crate::store::Store;

/// Alerts for a backlog wait this long for others to the same chat, at least: a thousand calls
/// become a few long messages per chat rather than a thousand that Telegram's limits would spread
/// over hours.
pub const GROUP_SECONDS: u64 = 60;

/// How many recorded requests are ingested at once; the writer commits them together.
const IN_FLIGHT: usize = 64;

/// Recorded headers that describe the original connection, or the token the replay replaces
/// with the config's own.
const NOT_REPLAYED: [&str; 4] = [
    "host",
    "content-length",
    "transfer-encoding",
    "x-ringback-token",
];

/// One recorded request, as ringback stores it beside each record (`call_records.request_*`):
/// method, path, query, headers, body (text, or `body_base64`), and where it came from.
#[derive(Debug, Clone, Deserialize)]
pub struct Recorded {
    #[serde(default = "post")]
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub query: String,
    #[serde(default)]
    pub headers: Headers,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub body_base64: Option<String>,
    #[serde(default)]
    pub remote_addr: Option<String>,
}

fn post() -> String {
    "POST".into()
}

/// Headers as pairs (`[["content-type", "application/json"]]`) or as an object.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum Headers {
    #[default]
    None,
    Pairs(Vec<(String, String)>),
    Map(std::collections::BTreeMap<String, String>),
}

/// What a replay did with the file's lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub stored: usize,
    pub duplicates: usize,
    /// `(line number, why)`: refused requests are also kept in `rejected_requests`.
    pub refused: Vec<(usize, String)>,
}

/// The replay's own config: no webhook rate limit (a backlog comes from one address), and every
/// route groups its alerts for at least [`GROUP_SECONDS`].
pub fn replay_config(mut config: Config) -> Config {
    config.server.rate_limit_per_second = 0;
    for route in &mut config.routes {
        route.group_wait_seconds = route.group_wait_seconds.max(GROUP_SECONDS);
    }
    config
}

/// Ingests each line of `text` (JSON Lines) as the webhook would; `progress` is told of each.
pub async fn ingest(
    state: &IngestState,
    config: &Config,
    text: &str,
    progress: &(dyn Fn() + Sync),
) -> Summary {
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let results: Vec<(usize, Result<String, String>)> = futures_util::stream::iter(lines)
        .map(|(index, line)| async move {
            let result = replay_line(state, config, line).await;
            progress();
            (index + 1, result)
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let mut summary = Summary::default();
    for (line, result) in results {
        match result.as_deref() {
            Ok("stored") => summary.stored += 1,
            Ok("duplicate") => summary.duplicates += 1,
            Ok(other) => summary.refused.push((line, other.to_owned())),
            Err(why) => summary.refused.push((line, why.to_owned())),
        }
    }
    summary.refused.sort();
    summary
}

/// Replays one line; `Ok("stored" | "duplicate")`, or why it was refused.
async fn replay_line(state: &IngestState, config: &Config, line: &str) -> Result<String, String> {
    let recorded: Recorded =
        serde_json::from_str(line).map_err(|e| format!("not a recorded request: {e}"))?;
    let name = recorded
        .path
        .strip_prefix("/webhooks/")
        .ok_or_else(|| format!("{} is not a webhook path (/webhooks/...)", recorded.path))?
        .to_owned();
    // Stored requests have ringback's own token removed: the replay signs in with the config's.
    let token = name
        .parse::<Provider>()
        .ok()
        .and_then(|p| config.provider(p))
        .map(|p| p.token.expose().to_owned())
        .unwrap_or_default();
    let uri = if recorded.query.is_empty() {
        recorded.path.clone()
    } else {
        format!("{}?{}", recorded.path, recorded.query)
    };
    let body = match (&recorded.body_base64, &recorded.body) {
        (Some(encoded), _) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| format!("body_base64 is not base64: {e}"))?
        }
        (None, Some(text)) => text.clone().into_bytes(),
        (None, None) => Vec::new(),
    };
    let mut builder = Request::builder().method(recorded.method.as_str()).uri(uri);
    let headers = match recorded.headers {
        Headers::None => Vec::new(),
        Headers::Pairs(pairs) => pairs,
        Headers::Map(map) => map.into_iter().collect(),
    };
    for (name, value) in headers {
        if !NOT_REPLAYED.contains(&name.to_ascii_lowercase().as_str()) {
            builder = builder.header(name, value);
        }
    }
    let mut request = builder
        .header("x-ringback-token", token)
        .body(Body::from(body))
        .map_err(|e| format!("not a valid request: {e}"))?;
    let from = recorded
        .remote_addr
        .as_deref()
        .and_then(|a| {
            a.parse::<SocketAddr>()
                .ok()
                .or_else(|| a.parse().ok().map(|ip| SocketAddr::new(ip, 0)))
        })
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    request.extensions_mut().insert(ConnectInfo(from));
    let response = ingest::webhook(state, name, request).await;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if status.is_success() {
        Ok(answer["status"].as_str().unwrap_or("stored").to_owned())
    } else {
        Err(format!(
            "{status}: {} {}",
            answer["error"].as_str().unwrap_or_default(),
            answer["detail"].as_str().unwrap_or_default()
        ))
    }
}

/// The ingest endpoint and alert pipeline a replay runs with (see [`replay_config`]).
pub fn build(
    config: Config,
    store: Store,
    clock: Clock,
) -> anyhow::Result<(IngestState, Pipeline, Arc<Config>)> {
    let config = Arc::new(replay_config(config));
    let pipeline = crate::startup::build_pipeline(config.clone(), store.clone(), clock.clone())?;
    let ingest = IngestState::new(
        &config,
        store,
        clock,
        Arc::new(crate::pipeline::Wake::new()),
    );
    Ok((ingest, pipeline, config))
}
