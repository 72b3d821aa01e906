//! `/healthz` (the process is alive), `/readyz` (started: connected to the
//! API server and, with leader election, taking part in it; while leading,
//! also the controllers' caches synced, so the reconcile loop runs on a
//! complete picture) and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::context::Context;

pub async fn serve(
    address: SocketAddr,
    ctx: Arc<Context>,
    ready: Arc<AtomicBool>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get({
                let ctx = ctx.clone();
                move || {
                    let started = ready.load(Ordering::Relaxed);
                    let leading = ctx.metrics.leader.get() == 1;
                    let synced = ctx.synced.load(Ordering::Relaxed);
                    async move {
                        match (started, leading, synced) {
                            (false, _, _) => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
                            (true, true, false) => {
                                (StatusCode::SERVICE_UNAVAILABLE, "leading; caches syncing")
                            }
                            _ => (StatusCode::OK, "ready"),
                        }
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = ctx.metrics.encode();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response()
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("listening on {address}: {e}"))?;
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    }))
}
