//! The HTTP boundary's error type, mapped to status codes and JSON bodies in one place.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use log_event::{BatchError, EventError, FieldError, GzipError, ItemError};
use serde_json::{json, Value};

use crate::backpressure::Limited;
use crate::metrics;
use crate::producer::ProduceError;
use crate::rate_limit::RateLimited;

/// Everything an ingest request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed JSON at line {line}, column {column}: {reason}")]
    MalformedJson {
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("the event is invalid")]
    InvalidEvent(Vec<FieldError>),
    #[error("the batch is invalid")]
    InvalidBatch(Vec<ItemError>),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the body did not arrive within {0} ms")]
    BodyTimeout(u128),
    #[error("could not hand the event to Kafka: {0}")]
    Unavailable(#[from] ProduceError),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("the API key {key:?} may not write events with source {event_source:?}")]
    Forbidden { key: String, event_source: String },
    #[error("rate limited ({})", .0.reason.as_str())]
    RateLimited(Limited),
    #[error("{failed} of {total} events were not acknowledged by Kafka")]
    PartialDelivery {
        failed: usize,
        total: usize,
        failed_ids: Vec<String>,
        retry_after: u64,
    },
}

impl ApiError {
    /// The stable machine-readable code in the body's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson { .. } => "malformed_json",
            ApiError::InvalidEvent(_) => "invalid_event",
            ApiError::InvalidBatch(_) => "invalid_batch",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::BodyTimeout(_) => "request_timeout",
            ApiError::Unavailable(_) | ApiError::PartialDelivery { .. } => "unavailable",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::RateLimited(l) => l.reason.as_str(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson { .. }
            | ApiError::InvalidEvent(_)
            | ApiError::InvalidBatch(_)
            | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable(_) | ApiError::PartialDelivery { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::MalformedJson { line, column, .. } => {
                json!([{"line": line, "column": column}])
            }
            ApiError::InvalidEvent(errors) => json!(errors),
            ApiError::InvalidBatch(errors) => json!(errors),
            ApiError::PartialDelivery { failed_ids, .. } => {
                json!([{"failedEventIds": failed_ids}])
            }
            ApiError::Forbidden { event_source, .. } => {
                json!([{"field": "source", "reason": format!("{event_source:?} is not among this key's sources")}])
            }
            _ => json!([]),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Unavailable(e) => Some(e.retry_after_secs()),
            ApiError::PartialDelivery { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// The one place a body that is not JSON (single event or batch) becomes an error.
fn malformed(line: usize, column: usize, reason: String) -> ApiError {
    ApiError::MalformedJson {
        line,
        column,
        reason,
    }
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        match e {
            EventError::Malformed {
                line,
                column,
                reason,
            } => malformed(line, column, reason),
            EventError::Invalid(fields) => ApiError::InvalidEvent(fields),
        }
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Malformed { line, column, reason } => malformed(line, column, reason),
            BatchError::NotAnArray => ApiError::BadRequest(
                "a batch must be a JSON array of events (or NDJSON with Content-Type: application/x-ndjson)".into(),
            ),
            BatchError::Empty => ApiError::BadRequest("the batch holds no events".into()),
            // A count over the limit breaks the documented schema (`maxItems`), like an empty
            // batch (`minItems`): 400. 413 is kept for bytes (body, decompressed body).
            BatchError::TooMany { count, max } => ApiError::BadRequest(format!(
                "the batch holds {count} events; at most {max} are allowed"
            )),
            BatchError::Invalid(items) => ApiError::InvalidBatch(items),
        }
    }
}

impl From<GzipError> for ApiError {
    fn from(e: GzipError) -> Self {
        match e {
            GzipError::TooLarge { .. } => ApiError::PayloadTooLarge(e.to_string()),
            GzipError::Invalid(_) => ApiError::BadRequest(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::event_rejected(self.code());
        if let ApiError::RateLimited(limited) = self {
            return RateLimited(limited).into_response();
        }
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, code = self.code(), "ingest unavailable");
        }
        let body = json!({
            "error": self.code(),
            "message": self.to_string(),
            "details": self.details(),
        });
        let mut response = (status, Json(body)).into_response();
        if let ApiError::BodyTimeout(_) = self {
            // The rest of the body may still be on its way: the connection cannot be reused.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let ApiError::Unauthorized(_) = self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's `minItems: 1` / `maxItems` on batches: both sides of the count are 400s
    /// (bad_request), as schema violations are; 413 is for bytes only.
    #[test]
    fn batch_count_violations_are_400_and_bytes_are_413() {
        let empty = ApiError::from(BatchError::Empty);
        assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
        let over = ApiError::from(BatchError::TooMany {
            count: 1001,
            max: 1000,
        });
        assert_eq!(over.status(), StatusCode::BAD_REQUEST);
        assert_eq!(over.code(), "bad_request");
        assert_eq!(
            over.to_string(),
            "the batch holds 1001 events; at most 1000 are allowed"
        );
        let bomb = ApiError::from(GzipError::TooLarge { limit: 10 });
        assert_eq!(bomb.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(bomb.to_string().contains("decompressed"));
        let corrupt = ApiError::from(GzipError::Invalid("bad header".into()));
        assert_eq!(corrupt.status(), StatusCode::BAD_REQUEST);
    }
}
