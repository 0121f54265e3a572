//! The admin server: `/` (status page, see `status_page`), `/healthz`, `/readyz`, `/metrics` (Prometheus text), `/status` (JSON).

use crate::topology::StatusInfo;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use sluice_core::Metrics;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared admin state.
#[derive(Clone)]
pub struct Admin {
    /// Self-metrics.
    pub metrics: Metrics,
    /// Graph description and queues.
    pub status: Arc<StatusInfo>,
    /// False before start-up completes and once shutdown begins.
    pub ready: Arc<AtomicBool>,
}

/// The admin routes.
pub fn app(state: Admin) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
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
    Json(a.status.to_json(state))
}
