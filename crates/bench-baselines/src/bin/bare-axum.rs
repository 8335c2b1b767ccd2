//! Bare axum baseline: POST /api/logs → serde into a struct with the gateway's wire fields
//! (no validation) → 202. Listens on ADDR; `GET /health/ready` answers 200, as the services do.

use axum::{body::Bytes, http::StatusCode, routing::get, routing::post, Router};
use std::collections::BTreeMap;

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // parsed, never read
struct WireEvent {
    correlation_id: String,
    severity: String,
    message: String,
    source: String,
    timestamp: i64,
    #[serde(default)]
    event_id: Option<uuid::Uuid>,
    #[serde(default)]
    attributes: Option<BTreeMap<String, serde_json::Value>>,
}

async fn ingest(body: Bytes) -> StatusCode {
    match std::hint::black_box(serde_json::from_slice::<WireEvent>(&body)) {
        Ok(_) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:18090".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let app = Router::new()
        .route("/api/logs", post(ingest))
        .route("/health/ready", get(|| async {}));
    axum::serve(listener, app).await
}
