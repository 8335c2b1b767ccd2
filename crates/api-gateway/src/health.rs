//! Liveness, readiness and the operator-facing health document, plus the background task
//! that keeps Kafka connectivity current so health answers never wait on the broker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rdkafka::producer::Producer;
use serde_json::{json, Value};

use crate::backpressure::Backpressure;
use crate::producer::EventProducer;
use crate::{metrics, AppState};

/// What the gateway last learned about Kafka.
#[derive(Debug, Default)]
pub struct KafkaStatus {
    up: AtomicBool,
    ready: AtomicBool,
}

impl KafkaStatus {
    /// The last metadata request succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The producer has metadata for the topic (it exists and has partitions).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Polls topic metadata every `every` until the returned handle is aborted.
pub fn spawn_kafka_monitor(
    producer: EventProducer,
    status: Arc<KafkaStatus>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut was_up = None;
        loop {
            let p = producer.clone();
            let probe = tokio::task::spawn_blocking(move || {
                p.inner()
                    .client()
                    .fetch_metadata(Some(p.topic()), Duration::from_secs(2))
                    .map(|md| {
                        md.topics()
                            .iter()
                            .any(|t| t.error().is_none() && !t.partitions().is_empty())
                    })
            })
            .await;
            let (up, ready) = match probe {
                Ok(Ok(has_topic)) => (true, has_topic),
                _ => (false, false),
            };
            status.up.store(up, Ordering::Relaxed);
            status.ready.store(ready, Ordering::Relaxed);
            metrics::kafka_up(up);
            metrics::producer_queue(producer.queue_depth());
            if was_up != Some(up) {
                if up {
                    tracing::info!(topic = producer.topic(), ready, "kafka reachable");
                } else {
                    tracing::warn!(topic = producer.topic(), "kafka unreachable");
                }
                was_up = Some(up);
            }
            tokio::time::sleep(every).await;
        }
    })
}

pub async fn live() -> Response {
    Json(json!({"status": "up"})).into_response()
}

pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.kafka.is_ready() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        let body = json!({"status": "not_ready", "reason": "no Kafka metadata for the topic yet"});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

pub async fn logs_health(State(state): State<Arc<AppState>>) -> Response {
    let kafka = if state.kafka.is_up() { "up" } else { "down" };
    let mut body = json!({
        "status": "healthy",
        "kafka": kafka,
        "producerQueue": state.producer.queue_depth(),
    });
    fill_health(&state.backpressure, &mut body);
    Json(body).into_response()
}

/// Adds the backpressure fields to the health document.
fn fill_health(backpressure: &Backpressure, doc: &mut Value) {
    let (rate, status) = backpressure.rate();
    doc["status"] = status.as_str().into();
    doc["consumerLag"] = backpressure.consumer_lag().into();
    doc["lagAgeSeconds"] = backpressure
        .lag_age()
        .map(|a| (a * 10.0).round() / 10.0)
        .into();
    doc["currentRate"] = ((rate * 10.0).round() / 10.0).into();
    doc["availablePermissions"] = backpressure.available().floor().max(0.0).into();
    doc["redis"] = backpressure.redis_state().into();
    doc["replicas"] = backpressure.replicas().into();
}
