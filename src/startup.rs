//! Builds the service from a config: storage, the HTTP router and its listener.
//! `main` and the integration tests start ringback the same way, through [`Application::build`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use anyhow::Context;

use crate::clock::Clock;
use crate::config::Config;
use crate::deliver::{Deliverer, email, telegram};
use crate::digest::Digester;
use crate::dispatch::Dispatcher;
use crate::domain::Provider;
use crate::health;
use crate::ingest;
use crate::pipeline::{Pipeline, Upkeep};
use crate::reload::{ConfigSource, Live};
use crate::render::Templates;
use crate::store::Store;

/// How long shutdown waits for a delivery pass under way (a Telegram or SMTP call times out sooner).
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(40);

pub struct Application {
    listener: TcpListener,
    router: Router,
    live: Arc<Live>,
    workers: Workers,
    /// Watches the config and templates from the moment the service is built, so no edit made
    /// while it starts is missed.
    watcher: Option<notify::RecommendedWatcher>,
}

/// Whether `run_until` starts the background workers and the file watch; tests step the workers
/// through [`Application::live`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    Background,
    Manual,
}

impl Application {
    /// Opens the database (migrating it), loads the templates and binds the listener; nothing is
    /// served until `run_until`. `source` is where reloads read the config from.
    pub async fn build(
        config: Config,
        source: Option<ConfigSource>,
    ) -> anyhow::Result<Application> {
        Self::build_with(config, source, Clock::System, Workers::Background).await
    }

    pub async fn build_with(
        config: Config,
        source: Option<ConfigSource>,
        clock: Clock,
        workers: Workers,
    ) -> anyhow::Result<Application> {
        crate::telemetry::prometheus();
        let store = Store::open(&config.storage.url).await?;
        let listen = config.server.listen;
        for provider in config.providers_without_token() {
            tracing::warn!(
                %provider,
                "providers.{provider}.token is empty: /webhooks/{provider} answers 404 until it is set"
            );
        }
        let live = Arc::new(Live::new(config, source, store, clock)?);
        for provider in Provider::ALL
            .into_iter()
            .filter(|p| live.current().ingest.enabled(*p))
        {
            tracing::info!(%provider, "accepting webhooks at /webhooks/{provider}");
        }
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen} (server.listen): {e}"))?;
        let watcher = (workers == Workers::Background)
            .then(|| live.watch_files())
            .flatten();
        Ok(Application {
            listener,
            router: app(live.clone()),
            live,
            workers,
            watcher,
        })
    }

    pub fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn store(&self) -> &Store {
        &self.live.store
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(address = %self.local_addr(), "ringback is listening");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let background = self.workers == Workers::Background;
        let bot = background.then(|| tokio::spawn(self.live.clone().run_bot(stopped.clone())));
        let workers = background.then(|| tokio::spawn(self.live.clone().run_workers(stopped)));
        // Kept alive while serving; dropping it stops the watch.
        let _watcher = self.watcher;
        let hangups = background.then(|| tokio::spawn(reload_on_sighup(self.live.clone())));
        let served = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        if let Some(hangups) = hangups {
            hangups.abort();
        }
        // Requests in flight are answered; now the workers finish the pass they are in. One that
        // takes too long is stopped: its claimed messages are sent again after their claim lapses.
        let _ = stop.send(true);
        if let Some(bot) = bot {
            // Gives the polling lease up; a poll under way is cut short, which loses nothing:
            // updates are confirmed to Telegram only by the next poll's offset.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), bot).await;
        }
        if let Some(mut workers) = workers
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut workers)
                .await
                .is_err()
        {
            tracing::warn!(
                "the alert workers did not finish within {SHUTDOWN_GRACE:?}; stopping them"
            );
            workers.abort();
        }
        self.live.store.close().await;
        Ok(served?)
    }
}

/// Reloads the config on each SIGHUP.
async fn reload_on_sighup(live: Arc<Live>) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hangups.recv().await.is_some() {
            let _ = live.reload("SIGHUP").await;
        }
    }
    #[cfg(not(unix))]
    let _ = live;
}

/// Builds the alert pipeline (templates, channels, workers) from a checked config; the service
/// and the `digest` commands share it.
pub fn build_pipeline(config: Arc<Config>, store: Store, clock: Clock) -> anyhow::Result<Pipeline> {
    let templates = Arc::new(Templates::load(&config.templates.dir)?);
    for route in &config.routes {
        templates.check_route(&route.templates).with_context(|| {
            format!(
                "route `{}` names a template that does not work",
                route.name()
            )
        })?;
    }
    if !config.digests.is_empty() {
        templates.digest(&crate::digest::report::sample())?;
    }
    let telegram = telegram::Telegram::from_config(&config.telegram);
    if telegram.is_none() {
        tracing::warn!(
            "telegram.token is not set: Telegram alerts are written to the log instead of sent"
        );
    }
    let mailer = match (&config.email.smtp_url, &config.email.from) {
        (Some(url), Some(from)) if !url.expose().is_empty() => {
            let settings = email::SmtpSettings::parse(url.expose(), config.email.allow_plain_auth)?;
            tracing::info!(smtp = %settings, "emailing through SMTP");
            Some(
                email::Mailer::new(
                    &settings,
                    from.0.clone(),
                    std::time::Duration::from_secs(config.email.timeout_seconds),
                )
                .map_err(anyhow::Error::msg)?,
            )
        }
        _ => {
            tracing::warn!(
                "email.smtp_url is not set: emails are written to the log instead of sent"
            );
            None
        }
    };
    for (name, receiver) in &config.receivers {
        if receiver.telegram.0.is_empty() && receiver.email.0.is_empty() {
            tracing::warn!(receiver = %name, "receiver has no Telegram chat or email address");
        }
    }
    Ok(Pipeline::new(
        store.clone(),
        Dispatcher::new(store.clone(), config.clone()),
        Digester::new(store.clone(), config.clone(), templates.clone()),
        Deliverer::new(store.clone(), templates, telegram, mailer),
        clock,
        Upkeep {
            call_records_missing_after: chrono::Duration::minutes(
                i64::try_from(config.alerts.call_records_missing_after_minutes).unwrap_or(30),
            ),
            retention: (config.retention.days > 0).then(|| {
                chrono::Duration::days(i64::try_from(config.retention.days).unwrap_or(36_500))
            }),
        },
    ))
}

pub fn app(live: Arc<Live>) -> Router {
    Router::new()
        .route("/webhooks/{provider}", any(webhook))
        .route("/-/reload", axum::routing::post(reload))
        .route("/telegram/updates", axum::routing::post(telegram_update))
        .with_state(live.clone())
        .merge(health::router(live))
        .fallback(health::not_found)
}

/// Each request is handled by the config generation current when it arrives.
async fn webhook(
    State(live): State<Arc<Live>>,
    Path(provider): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let ingest = live.current().ingest.clone();
    ingest::webhook(&ingest, provider, request).await
}

/// A refusal, as JSON naming the problem.
fn refuse(status: StatusCode, error: &str, detail: &str) -> Response {
    (status, Json(json!({ "error": error, "detail": detail }))).into_response()
}

/// Telegram's webhook (when `telegram.webhook_url` is set): checks the secret Telegram sends,
/// then handles the update before answering, so an update that fails is delivered again.
async fn telegram_update(
    State(live): State<Arc<Live>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(bot) = live.current().bot.clone() else {
        return refuse(
            StatusCode::NOT_FOUND,
            "bot_disabled",
            "telegram.token is not set, so there is no bot to receive updates",
        );
    };
    let Some(secret) = bot.webhook_secret() else {
        return refuse(
            StatusCode::NOT_FOUND,
            "webhook_disabled",
            "the bot reads its updates by long polling; set telegram.webhook_url to use a webhook",
        );
    };
    let sent = headers
        .get("x-telegram-bot-api-secret-token")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(sent, secret.as_bytes())) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "X-Telegram-Bot-Api-Secret-Token does not match the webhook's secret",
        );
    }
    let update: teloxide::types::Update = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_update",
                &format!("the body is not a Telegram Update: {e}"),
            );
        }
    };
    match bot.handle(update).await {
        Ok(()) => Json(json!({})).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot handle a Telegram update; Telegram will send it again");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the database does not answer",
            )
        }
    }
}

/// `POST /-/reload`, with `server.reload_token` as `?token=` or an `X-Ringback-Token` header.
async fn reload(
    State(live): State<Arc<Live>>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let token = live.current().config.server.reload_token.clone();
    let Some(token) = token.filter(|t| !t.expose().is_empty()) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "reload_disabled",
            "set server.reload_token to reload over HTTP (SIGHUP and file changes reload too)",
        );
    };
    if crate::ingest::auth::check_token(&token, query.get("token").map(String::as_str), &headers)
        != crate::ingest::auth::TokenCheck::Valid
    {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the token must equal server.reload_token",
        );
    }
    match live.reload("POST /-/reload").await {
        Ok(()) => Json(json!({ "status": "reloaded" })).into_response(),
        Err(problem) => refuse(StatusCode::UNPROCESSABLE_ENTITY, "invalid_config", &problem),
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
