//! Health and metrics over HTTP.

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
    let h = s.shared.health();
    Json(json!({
        "status": "up",
        "breaker": h.breaker.as_str(),
        "inFlight": h.in_flight,
        "inFlightPeak": h.in_flight_peak,
        "maxInFlight": h.max_in_flight,
        "paused": h.paused,
        "assignedPartitions": h.assigned,
        "rebalances": h.rebalances,
        "lastCommitAgeSeconds": h.last_commit_age.map(|d| (d.as_secs_f64() * 10.0).round() / 10.0),
        "pool": {"size": size, "idle": idle, "waiting": waiting, "max": max},
    }))
    .into_response()
}

async fn ready(State(s): State<HttpState>) -> Response {
    // Ready once subscribed, in the group (a broker answered: at least one assignment, even
    // an empty one) and the database answers.
    let h = s.shared.health();
    let joined = h.rebalances > 0;
    if h.subscribed && joined && s.db.ping().await {
        Json(json!({"status": "ready"})).into_response()
    } else {
        let body = json!({"status": "not_ready", "subscribed": h.subscribed, "joined": joined});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}
