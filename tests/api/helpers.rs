//! Starts the real ringback server on 127.0.0.1:0 with a temporary config and database.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use ringback::clock::Clock;
use ringback::config;
use ringback::domain::Provider;
use ringback::reload::{ConfigSource, Live};
use ringback::startup::{Application, Workers};
use ringback::store::{Rejection, Store, StoredRecord};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;

pub const TELECMI_TOKEN: &str = "telecmi-test-token";
pub const CALLR_TOKEN: &str = "callr-test-token";
pub const CALLERDESK_TOKEN: &str = "callerdesk-test-token";

/// Tests start on Monday 2026-11-23 at 10:00 UTC (15:30 in Asia/Kolkata).
pub fn start_time() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
        .unwrap()
        .to_utc()
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub store: Store,
    pub clock: Clock,
    pub live: Arc<Live>,
    dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// The config every test starts from; `extra` is appended (new sections or keys of the last one).
pub fn base_config(db: &Path, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
body_limit_bytes = 4096
reload_token = "reload-secret"

[storage]
url = "sqlite://{db}"

[providers.telecmi]
token = "{TELECMI_TOKEN}"

[providers.callerdesk]
token = "{CALLERDESK_TOKEN}"
timezone = "Asia/Kolkata"

[templates]
dir = "{templates}"

[providers.callr]
token = "{CALLR_TOKEN}"
{extra}
"#,
        db = db.display(),
        templates = concat!(env!("CARGO_MANIFEST_DIR"), "/templates"),
    )
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with("").await
}

/// Starts ringback with the base config plus `extra` TOML (appended under `[providers.callr]`).
pub async fn spawn_app_with(extra: &str) -> TestApp {
    spawn_app_from(|db| base_config(db, extra)).await
}

/// Starts ringback with the config text `config` makes from the database path.
pub async fn spawn_app_from(config: impl FnOnce(&Path) -> String) -> TestApp {
    spawn_app_on(Clock::manual(start_time()), config).await
}

/// Starts ringback on `clock` (shared with the fakes) with the config `config` makes.
pub async fn spawn_app_on(clock: Clock, config: impl FnOnce(&Path) -> String) -> TestApp {
    start(config_dir(config).await, clock).await
}

/// A new temporary folder holding the config `config` makes from the database path there,
/// moved onto the test database.
async fn config_dir(config: impl FnOnce(&Path) -> String) -> TempDir {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let db = dir.path().join("ringback.db");
    std::fs::write(config_file(&dir), on_test_database(config(&db), &db).await).unwrap();
    dir
}

/// With `RINGBACK_TEST_DATABASE=postgres`, moves a config onto a fresh PostgreSQL database of its
/// own (on 127.0.0.1:5432, trust auth); otherwise leaves it on its SQLite file.
pub async fn on_test_database(config: String, db: &Path) -> String {
    if std::env::var("RINGBACK_TEST_DATABASE").as_deref() != Ok("postgres") {
        return config;
    }
    use sqlx::Connection;
    let name = format!("ringback_test_{}", fastrand::u64(..));
    let mut admin = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/test")
        .await
        .expect("PostgreSQL answers on 127.0.0.1:5432");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    config.replace(
        &format!("sqlite://{}", db.display()),
        &format!("postgres://postgres@127.0.0.1:5432/{name}"),
    )
}

/// Starts ringback on the base config and a database that `prepare` (given the database's URL)
/// has set up first, as an earlier version of ringback would have left it.
pub async fn spawn_app_on_prepared<F, Fut>(prepare: F) -> TestApp
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = config_dir(|db| base_config(db, "")).await;
    let url = config::load_with_env(&config_file(&dir), [])
        .unwrap()
        .storage
        .url;
    prepare(url).await;
    start(dir, Clock::manual(start_time())).await
}

fn config_file(dir: &TempDir) -> PathBuf {
    dir.path().join("ringback.toml")
}

/// Starts ringback as in service: the system clock and its own background workers.
pub async fn spawn_app_in_service(config: impl FnOnce(&Path) -> String) -> TestApp {
    start_with(config_dir(config).await, Clock::System, Workers::Background).await
}

/// Starts ringback from the config file in `dir`, its workers stepped by the test.
async fn start(dir: TempDir, clock: Clock) -> TestApp {
    start_with(dir, clock, Workers::Manual).await
}

async fn start_with(dir: TempDir, clock: Clock, workers: Workers) -> TestApp {
    let path = config_file(&dir);
    let config = config::load_with_env(&path, []).expect("the test config is valid");
    let source = ConfigSource {
        path,
        env: Some(Vec::new()),
    };
    let app = Application::build_with(config, Some(source), clock.clone(), workers)
        .await
        .expect("ringback starts");
    let live = app.live();
    let address = format!("http://{}", app.local_addr());
    let store = app.store().clone();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    TestApp {
        address,
        client: reqwest::Client::new(),
        store,
        clock,
        live,
        dir,
        shutdown: Some(tx),
        server: Some(server),
    }
}

pub fn token(provider: Provider) -> &'static str {
    match provider {
        Provider::Telecmi => TELECMI_TOKEN,
        Provider::Callr => CALLR_TOKEN,
        Provider::Callerdesk => CALLERDESK_TOKEN,
    }
}

/// A response's status, Content-Type and JSON body.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
}

impl Answer {
    async fn from(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("every answer is JSON, got {status} {text:?}"));
        Answer {
            status,
            content_type,
            body,
        }
    }
}

impl TestApp {
    pub fn url(&self, provider: &str, query: &str) -> String {
        format!("{}/webhooks/{provider}?{query}", self.address)
    }

    fn authed(&self, provider: Provider) -> String {
        self.url(provider.as_str(), &format!("token={}", token(provider)))
    }

    pub async fn post_json(&self, provider: Provider, body: &Value) -> Answer {
        self.post_raw(provider, "application/json", body.to_string().into_bytes())
            .await
    }

    pub async fn post_raw(&self, provider: Provider, content_type: &str, body: Vec<u8>) -> Answer {
        let response = self
            .client
            .post(self.authed(provider))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        Answer::from(response).await
    }

    pub async fn post_form(&self, provider: Provider, pairs: &[(String, String)]) -> Answer {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.post_raw(
            provider,
            "application/x-www-form-urlencoded",
            body.into_bytes(),
        )
        .await
    }

    pub async fn get_query(&self, provider: Provider, pairs: &[(String, String)]) -> Answer {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token(provider))
            .extend_pairs(pairs)
            .finish();
        let response = self
            .client
            .get(self.url(provider.as_str(), &query))
            .send()
            .await
            .unwrap();
        Answer::from(response).await
    }

    /// Sends any request; for the tests of refusals.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        Answer::from(request.send().await.unwrap()).await
    }

    pub async fn records(&self, provider: Provider, call_id: &str) -> Vec<StoredRecord> {
        self.store.records_of_call(provider, call_id).await.unwrap()
    }

    /// The single stored record of a call.
    pub async fn record(&self, provider: Provider, call_id: &str) -> StoredRecord {
        let mut records = self.records(provider, call_id).await;
        assert_eq!(records.len(), 1, "one record for {call_id}: {records:#?}");
        records.remove(0)
    }

    pub async fn rejections(&self) -> Vec<Rejection> {
        self.store.rejections(100).await.unwrap()
    }

    /// Stops the server the way SIGTERM does, waiting for requests in flight, and starts it
    /// again on the same config and database.
    pub async fn restart(mut self) -> TestApp {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
        start(self.dir, self.clock.clone()).await
    }

    /// Replaces the config file with `text`.
    pub fn write_config(&self, text: &str) {
        std::fs::write(config_file(&self.dir), text).unwrap();
    }

    pub fn config_text(&self) -> String {
        std::fs::read_to_string(config_file(&self.dir)).unwrap()
    }

    /// A second instance on the same config and database (and clock), as behind a load balancer.
    pub async fn sibling(&self) -> TestApp {
        let dir = tempfile::tempdir().expect("a temporary folder");
        std::fs::write(config_file(&dir), self.config_text()).unwrap();
        start(dir, self.clock.clone()).await
    }

    /// `POST /-/reload` with the right token.
    pub async fn reload(&self) -> Answer {
        self.send(
            self.client
                .post(format!("{}/-/reload", self.address))
                .header("X-Ringback-Token", "reload-secret"),
        )
        .await
    }

    /// Kills the server at once, as a crash or `kill -9` would, and starts it again.
    pub async fn crash_and_restart(mut self) -> TestApp {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
        self.store.close().await;
        start(self.dir, self.clock.clone()).await
    }

    /// Kills the server at once and does not start it again: an instance that died. Its folder
    /// is returned, as it may hold the database the other instances share.
    pub fn die(mut self) -> TempDir {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        self.dir
    }

    /// Runs the alert pipeline until nothing more is due at the test clock's time.
    pub async fn run_pipeline(&self) {
        self.live.current().pipeline.run_until_idle().await.unwrap();
    }

    /// Reads the bot's waiting updates once, as the polling worker does (a poll that returns at
    /// once), then runs what they queued (message edits).
    pub async fn poll_bot(&self) -> ringback::bot::Polled {
        let polled = self.live.poll_bot(0).await.unwrap();
        self.run_pipeline().await;
        polled
    }

    /// Moves the clock forward, then runs what came due.
    pub async fn advance(&self, seconds: i64) {
        self.clock.advance(chrono::Duration::seconds(seconds));
        self.run_pipeline().await;
    }
}

/// A JSON object's fields as query-string or form pairs, the way GET and form senders write them.
pub fn pairs_of(value: &Value) -> Vec<(String, String)> {
    value
        .as_object()
        .expect("an object")
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

/// Config for alert tests: Telegram at the fake Bot API, email at the fake SMTP server, plus
/// `rest` (receivers and routes).
pub fn alerting(telegram_url: &str, smtp_url: &str, rest: &str) -> String {
    format!(
        r#"
[telegram]
token = "123456:TEST-TOKEN"
api_url = "{telegram_url}"

[email]
smtp_url = "{smtp_url}"
from = "ringback <alerts@ringback.test>"

[alerts]
settle_seconds = 3
timezone = "Asia/Kolkata"

{rest}
"#
    )
}
