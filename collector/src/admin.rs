//! The admin server: `/` (status page, see `status_page`), `/healthz`, `/readyz`, `/metrics`
//! (Prometheus text), `/status` (JSON) and `POST /reload`.

use crate::reload::ReloadOutcome;
use crate::topology::StatusInfo;
use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use sluice_core::Metrics;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// A reload asked for over HTTP; the main loop answers on `reply`.
pub struct ReloadRequest {
    /// Where the outcome goes.
    pub reply: oneshot::Sender<ReloadOutcome>,
}

/// Shared admin state.
#[derive(Clone)]
pub struct Admin {
    /// Self-metrics.
    pub metrics: Metrics,
    /// Graph description and queues, replaced by every reload.
    pub status: Arc<ArcSwap<StatusInfo>>,
    /// False before start-up completes and once shutdown begins.
    pub ready: Arc<AtomicBool>,
    /// Reload requests to the main loop (which owns the topology).
    pub reload: mpsc::Sender<ReloadRequest>,
}

/// The admin routes.
pub fn app(state: Admin) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/reload", post(reload))
        .merge(crate::status_page::routes())
        .with_state(state)
}

async fn readyz(State(a): State<Admin>) -> impl IntoResponse {
    if a.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(a): State<Admin>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        a.metrics.render(),
    )
}

async fn status(State(a): State<Admin>) -> impl IntoResponse {
    let state = if a.ready.load(Ordering::Acquire) {
        "running"
    } else {
        "stopping"
    };
    Json(a.status.load().to_json(state))
}

/// 200 with the outcome when the new configuration runs; 422 with every error when it was
/// rejected (the old one keeps running); 503 while shutting down.
async fn reload(State(a): State<Admin>) -> axum::response::Response {
    let (reply, outcome) = oneshot::channel();
    if a.reload.send(ReloadRequest { reply }).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match outcome.await {
        Ok(o) if o.result == "success" => (StatusCode::OK, Json(o)).into_response(),
        Ok(o) => (StatusCode::UNPROCESSABLE_ENTITY, Json(o)).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}
