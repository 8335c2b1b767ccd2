//! Health and metrics over HTTP.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::db::Db;
use crate::pipeline::Shared;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub shared: Arc<Shared>,
    pub db: Db,
    pub metrics: PrometheusHandle,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route(
            "/health/live",
            get(|| async { Json(json!({"status": "up"})) }),
        )
        .route("/health/ready", get(ready))
        .route(
            "/metrics",
            get(|State(s): State<HttpState>| async move { s.metrics.render() }),
        )
        .with_state(state)
}

async fn health(State(s): State<HttpState>) -> Response {
    let (size, idle, waiting, max) = s.db.usage();
    let last_commit_age = s
        .shared
        .last_commit
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .map(|t| (t.elapsed().as_secs_f64() * 10.0).round() / 10.0);
    let assigned = s
        .shared
        .assigned
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Json(json!({
        "status": "up",
        "breaker": s.shared.breaker_state().as_str(),
        "inFlight": s.shared.in_flight.load(Ordering::Relaxed),
        "inFlightPeak": s.shared.in_flight_peak.load(Ordering::Relaxed),
        "maxInFlight": s.shared.max_in_flight,
        "paused": s.shared.paused.load(Ordering::Relaxed),
        "assignedPartitions": assigned,
        "rebalances": s.shared.rebalances.load(Ordering::Relaxed),
        "lastCommitAgeSeconds": last_commit_age,
        "pool": {"size": size, "idle": idle, "waiting": waiting, "max": max},
    }))
    .into_response()
}

async fn ready(State(s): State<HttpState>) -> Response {
    let subscribed = s.shared.subscribed.load(Ordering::Relaxed);
    if subscribed && s.db.ping().await {
        Json(json!({"status": "ready"})).into_response()
    } else {
        let body = json!({"status": "not_ready", "subscribed": subscribed});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}
