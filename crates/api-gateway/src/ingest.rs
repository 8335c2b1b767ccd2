//! `POST /api/logs` and `POST /api/logs/batch`: read, validate, produce, answer only once
//! Kafka has acknowledged (or truthfully say it has not).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use flow_control::Class;
use log_event::{parse_batch, LogEvent};
use serde::Serialize;
use uuid::Uuid;

use crate::auth::quota::Cost;
use crate::auth::Caller;
use crate::backpressure::Permit;
use crate::body::{self, Expect};
use crate::error::ApiError;
use crate::shared_budget::Unit;
use crate::{metrics, AppState};

/// Wall-clock time in epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub async fn ingest_one(
    State(state): State<Arc<AppState>>,
    permit: Option<Extension<Permit>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    body::content_format(&headers, Expect::Single)?;
    let bytes = body::read(
        &headers,
        body,
        state.limits.max_body_bytes,
        state.limits.body_read_timeout,
    )
    .await?;
    // Under overload most single events are refused here, from their severity alone and
    // before the full parse (41 instead of 49 µs of CPU per refusal, bench/optimisations.md).
    if let Some(Extension(permit)) = permit {
        state
            .backpressure
            .screen(permit, || LogEvent::sniff_severity(&bytes))
            .map_err(ApiError::RateLimited)?;
    }
    let event = LogEvent::parse(&bytes, now_ms(), &state.limits.event)?;
    let caller = caller.map(|Extension(c)| c);
    charge(
        &state,
        permit,
        caller.as_ref(),
        std::slice::from_ref(&event),
        bytes.len(),
    )
    .await?;
    // A 503 names the id it concerns: retrying with it (or the same body) is stored once.
    let placement = state
        .producer
        .send(&event)
        .await
        .map_err(|e| ApiError::PartialDelivery {
            failed: 1,
            total: 1,
            failed_ids: vec![event.event_id.to_string()],
            retry_after: e.retry_after_secs(),
        })?;
    accepted(caller.as_ref(), 1);
    let body = Accepted {
        status: "accepted",
        event_id: event.event_id,
        partition: placement.partition,
        offset: placement.offset,
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

pub async fn ingest_batch(
    State(state): State<Arc<AppState>>,
    permit: Option<Extension<Permit>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let format = body::content_format(&headers, Expect::Batch)?;
    let bytes = body::read(
        &headers,
        body,
        state.limits.max_batch_bytes,
        state.limits.body_read_timeout,
    )
    .await?;
    let events = parse_batch(
        &bytes,
        format,
        state.limits.max_batch_events,
        now_ms(),
        &state.limits.event,
    )?;
    let caller = caller.map(|Extension(c)| c);
    charge(&state, permit, caller.as_ref(), &events, bytes.len()).await?;
    let results = state.producer.send_all(&events).await;

    let mut failed_ids = Vec::new();
    let mut retry_after = 1;
    for (event, result) in events.iter().zip(&results) {
        if let Err(e) = result {
            failed_ids.push(event.event_id.to_string());
            retry_after = retry_after.max(e.retry_after_secs());
        }
    }
    accepted(caller.as_ref(), events.len() - failed_ids.len());
    if !failed_ids.is_empty() {
        return Err(ApiError::PartialDelivery {
            failed: failed_ids.len(),
            total: events.len(),
            failed_ids,
            retry_after,
        });
    }
    let body = BatchAccepted {
        accepted: events.len(),
        event_ids: events.iter().map(|e| e.event_id).collect(),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The 202 of `POST /api/logs`. Typed: serializing it costs a fraction of building a
/// `serde_json::Value` map for every accepted event.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    status: &'static str,
    event_id: Uuid,
    partition: i32,
    offset: i64,
}

/// The 202 of `POST /api/logs/batch`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchAccepted {
    accepted: usize,
    event_ids: Vec<Uuid>,
}

/// Counts events acknowledged by Kafka, globally and for the caller's key.
pub(crate) fn accepted(caller: Option<&Caller>, n: usize) {
    metrics::events_accepted(n);
    if let Some(caller) = caller {
        metrics::api_key_events(&caller.0.name, "accepted", n);
    }
}

/// The caller's sources (403), then its key's quotas, events/s and bytes/s of the decoded body
/// (429, the first permit refunded): before the global budget, so a key over its quota spends
/// none of it.
pub(crate) async fn check_caller(
    state: &AppState,
    caller: Option<&Caller>,
    permit: Option<Permit>,
    events: &[LogEvent],
    body_bytes: usize,
) -> Result<(), ApiError> {
    let Some(caller) = caller else {
        return Ok(());
    };
    caller.check_sources(events.iter().map(|e| e.source.as_str()))?;
    let class = if events.iter().all(|e| e.severity.is_protected()) {
        Class::Protected
    } else {
        Class::Normal
    };
    let bp = &state.backpressure;
    let charged = state
        .key_quotas
        .charge(
            &caller.0,
            Cost {
                events: events.len() as f64,
                bytes: body_bytes as f64,
                class,
            },
            bp.shared_redis(),
            bp.replicas(),
        )
        .await;
    if let Err(over) = charged {
        if let Some(permit) = permit {
            bp.refund(permit);
        }
        let outcome = match over.unit {
            Unit::Events => "rate_limited",
            Unit::Bytes => "bytes_rate_limited",
        };
        metrics::api_key_events(&caller.0.name, outcome, events.len());
        return Err(ApiError::RateLimited(bp.over_key_quota(over)));
    }
    Ok(())
}

/// Checks the caller (sources, quota), then charges the parsed events to backpressure (the
/// rate-limit layer took the first permit).
async fn charge(
    state: &AppState,
    permit: Option<Extension<Permit>>,
    caller: Option<&Caller>,
    events: &[LogEvent],
    body_bytes: usize,
) -> Result<(), ApiError> {
    let permit = permit.map(|Extension(p)| p);
    check_caller(state, caller, permit, events, body_bytes).await?;
    let Some(permit) = permit else {
        // Routes mounted without the rate-limit layer (none in production) are not charged.
        return Ok(());
    };
    state
        .backpressure
        .charge_rest(permit, events, body_bytes)
        .await
        .map_err(ApiError::RateLimited)
}

#[cfg(test)]
mod tests {
    /// The size of the future a handler `fn` returns, from its type alone.
    fn future_size<A, B, C, D, E, Fut>(_: impl FnOnce(A, B, C, D, E) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }
    fn future_size4<A, B, C, D, Fut>(_: impl FnOnce(A, B, C, D) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// Every request's handler future is moved into a heap allocation: a Redis call inline
    /// in it made it 14.6 KiB and its copy cost 4-5 % of the gateway's CPU per single event
    /// (bench/optimisations.md). The Redis calls are boxed where they are made.
    #[test]
    fn handler_futures_stay_small() {
        for (name, size) in [
            ("ingest_one", future_size(super::ingest_one)),
            ("ingest_batch", future_size(super::ingest_batch)),
            ("export_logs", future_size4(crate::otlp::export_logs)),
        ] {
            assert!(size <= 2048, "{name}'s future is {size} bytes");
        }
    }
}
