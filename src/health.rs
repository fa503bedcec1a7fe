//! Liveness and readiness for load balancers and orchestrators: `/healthz` says the process is up,
//! `/readyz` that the database answers too.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use std::sync::Arc;

use crate::reload::Live;

type Health = Arc<Live>;

pub fn router(live: Arc<Live>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .with_state(live)
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn readyz(State(health): State<Health>) -> Response {
    match health.store.ping().await {
        Ok(()) => {
            let mut body = json!({ "status": "ready", "checks": { "database": "ok" } });
            // Ready, but set up wrongly: said in the details, not as a failure that would take
            // the instance out of a load balancer.
            let mut warnings = Vec::new();
            if let Ok(Some(warning)) = health.current().pipeline.missing_call_records().await {
                body["checks"]["telecmi_call_records"] = json!("missing");
                warnings.push(warning);
            }
            if let Ok(problems) = health.store.chat_problems().await {
                body["checks"]["telegram_chats"] = json!(if problems.is_empty() {
                    "ok"
                } else {
                    "problems"
                });
                for p in problems {
                    warnings.push(format!(
                        "Telegram chat {}: {}; to fix: {}",
                        p.chat_id, p.problem, p.fix
                    ));
                }
            }
            if !warnings.is_empty() {
                body["warnings"] = json!(warnings);
            }
            Json(body).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "unavailable",
                    "checks": { "database": "unreachable" },
                    "detail": "the database does not answer; check storage.url and the database server"
                })),
            )
                .into_response()
        }
    }
}

/// Prometheus text format; the outbox gauges are read from the database at each scrape.
async fn metrics_page(State(health): State<Health>) -> Response {
    if let Ok((depth, oldest)) = health.store.outbox_backlog().await {
        metrics::gauge!("ringback_outbox_depth").set(depth as f64);
        let age = oldest.map_or(0.0, |t| {
            (health.current().pipeline.now() - t)
                .num_milliseconds()
                .max(0) as f64
                / 1000.0
        });
        metrics::gauge!("ringback_outbox_oldest_pending_seconds").set(age);
    }
    if let Ok(problems) = health.store.chat_problems().await {
        metrics::gauge!("ringback_telegram_chats_with_problems").set(problems.len() as f64);
    }
    if let Ok(holder) = health
        .store
        .lease_holder(crate::bot::POLLING_LEASE, health.current().pipeline.now())
        .await
    {
        let leading = holder.as_deref() == Some(health.instance());
        metrics::gauge!("ringback_telegram_polling_leader").set(f64::from(u8::from(leading)));
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::telemetry::prometheus().render(),
    )
        .into_response()
}

pub async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "error": "not_found",
            "detail": "no such endpoint; webhooks go to /webhooks/{provider}, health to /healthz and /readyz"
        })),
    )
        .into_response()
}
