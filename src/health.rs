//! Liveness and readiness for load balancers and orchestrators: `/healthz` says the process is up,
//! `/readyz` that the database answers too.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::store::Store;

pub fn router(store: Store) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(store)
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn readyz(State(store): State<Store>) -> Response {
    match store.ping().await {
        Ok(()) => {
            Json(json!({ "status": "ready", "checks": { "database": "ok" } })).into_response()
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
