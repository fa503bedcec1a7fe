//! Builds the service from a config: storage, the HTTP router and its listener.
//! `main` and the integration tests start ringback the same way, through [`Application::build`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::any;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::domain::Provider;
use crate::health;
use crate::ingest::{self, IngestState};
use crate::store::Store;

pub struct Application {
    listener: TcpListener,
    router: Router,
    store: Store,
}

impl Application {
    /// Opens the database (migrating it) and binds the listener; nothing is served until `run`.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let store = Store::open(&config.storage.url).await?;
        let ingest = Arc::new(IngestState::new(&config, store.clone()));
        for provider in config.providers_without_token() {
            tracing::warn!(
                %provider,
                "providers.{provider}.token is empty: /webhooks/{provider} answers 404 until it is set"
            );
        }
        for provider in Provider::ALL.into_iter().filter(|p| ingest.enabled(*p)) {
            tracing::info!(%provider, "accepting webhooks at /webhooks/{provider}");
        }
        let listener = TcpListener::bind(config.server.listen).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} (server.listen): {e}",
                config.server.listen
            )
        })?;
        Ok(Application {
            listener,
            router: app(ingest, store.clone()),
            store,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(address = %self.local_addr(), "ringback is listening");
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await?;
        self.store.close().await;
        Ok(())
    }
}

pub fn app(ingest: Arc<IngestState>, store: Store) -> Router {
    Router::new()
        .route("/webhooks/{provider}", any(ingest::webhook))
        .with_state(ingest)
        .merge(health::router(store))
        .fallback(health::not_found)
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
