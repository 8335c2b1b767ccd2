//! `POST /v1/logs`: OpenTelemetry logs over OTLP/HTTP (binary protobuf or OTLP/JSON,
//! optionally gzip), with the OTLP spec's semantics: 200 + `ExportLogsServiceResponse`,
//! invalid records counted in `partial_success` while the rest are stored, an undecodable
//! body 400, throttling 429 and a broker that did not acknowledge 503, both with
//! `Retry-After`; every error body a `google.rpc.Status` in the request's encoding.
//!
//! An export is charged to backpressure in records, like a batch in events: one permit
//! before the body is read, the rest once the records are mapped ([`map`]).

pub mod map;
pub mod wire;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;

use crate::auth::Caller;
use crate::body;
use crate::error::ApiError;
use crate::ingest::now_ms;
use crate::{metrics, AppState};
use wire::Wire;

/// The handler of `POST /v1/logs`.
pub async fn export_logs(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(wire) = Wire::from_headers(&headers) else {
        metrics::otlp_records("invalid", 0);
        return Wire::Json.error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/x-protobuf or application/json".into(),
            None,
        );
    };
    // No permit at all: refuse before reading the body (the export's size is unknown yet).
    let permit = match state.backpressure.admit_first().await {
        Ok(permit) => permit,
        Err(limited) => return throttled(wire, &limited, None),
    };
    let limits = &state.limits;
    let read = body::read(
        &headers,
        body,
        limits.otlp_max_body_bytes,
        limits.body_read_timeout,
    );
    let bytes = match read.await {
        Ok(bytes) => bytes,
        Err(e) => return rejected(wire, e),
    };
    let request = match wire.decode(&bytes) {
        Ok(request) => request,
        Err(why) => {
            metrics::otlp_records("invalid", 0);
            return wire.error(StatusCode::BAD_REQUEST, why, None);
        }
    };
    let records = map::count(&request);
    if records > limits.otlp_max_records {
        metrics::otlp_records("invalid", records);
        return wire.error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the export holds {records} log records; at most {} are allowed (OTLP_MAX_RECORDS): send smaller batches",
                limits.otlp_max_records
            ),
            None,
        );
    }
    let mapped = map::map_request(
        &request,
        now_ms(),
        &limits.event,
        &limits.otlp_correlation_attribute,
    );
    metrics::otlp_records("rejected", mapped.rejected);
    let caller = caller.map(|Extension(c)| c);
    if !mapped.events.is_empty() {
        let checked = crate::ingest::check_caller(
            &state,
            caller.as_ref(),
            Some(permit),
            &mapped.events,
            bytes.len(),
        );
        match checked.await {
            Ok(()) => {}
            Err(ApiError::RateLimited(limited)) => {
                return throttled(wire, &limited, Some(mapped.events.len()))
            }
            Err(e) => {
                metrics::event_rejected(e.code());
                return wire.error(StatusCode::FORBIDDEN, e.to_string(), None);
            }
        }
    }
    if !mapped.events.is_empty() {
        if let Err(limited) = state
            .backpressure
            .charge_rest(permit, &mapped.events, bytes.len())
            .await
        {
            return throttled(wire, &limited, Some(mapped.events.len()));
        }
        let results = state.producer.send_all(&mapped.events).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        crate::ingest::accepted(caller.as_ref(), mapped.events.len() - failed);
        if failed > 0 {
            // The records that did reach the broker are stored once even though the exporter
            // retries the whole export: their ids derive from their content.
            let retry_after = results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .map(|e| e.retry_after_secs())
                .max()
                .unwrap_or(1);
            metrics::otlp_records("failed", mapped.events.len());
            tracing::warn!(
                failed,
                total = mapped.events.len(),
                "OTLP export not acknowledged by Kafka"
            );
            return wire.error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{failed} of {} log records were not acknowledged by Kafka; retry the export",
                    mapped.events.len()
                ),
                Some(retry_after),
            );
        }
        metrics::otlp_records("accepted", mapped.events.len());
    }
    let message = if mapped.rejected > 0 {
        mapped.error_message()
    } else {
        String::new()
    };
    wire.success(mapped.rejected, message)
}

fn throttled(
    wire: Wire,
    limited: &crate::backpressure::Limited,
    records: Option<usize>,
) -> Response {
    metrics::otlp_records("throttled", records.unwrap_or(0));
    metrics::event_rejected(limited.reason.as_str());
    let secs = limited.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    wire.error(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "{} ({:?} load, rate {:.0} records/s): retry after {secs} s",
            limited.reason.as_str(),
            limited.status,
            limited.limit
        ),
        Some(secs),
    )
}

/// A body that could not be read (too large, bad gzip, bad encoding) as an OTLP error.
fn rejected(wire: Wire, e: ApiError) -> Response {
    metrics::otlp_records("invalid", 0);
    let status = match e {
        ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        _ => StatusCode::BAD_REQUEST,
    };
    wire.error(status, e.to_string(), None)
}
