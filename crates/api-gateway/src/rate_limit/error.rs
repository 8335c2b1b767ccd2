//! The one place a rate-limit rejection becomes an HTTP answer: 429 with `Retry-After`
//! (whole seconds, at least 1), `RateLimit-Limit` / `RateLimit-Remaining`, and a JSON body
//! with the current state, the budget that was hit (events or bytes) and its rate.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flow_control::retry_after_secs;
use serde::Serialize;

use crate::backpressure::{Limited, RefusalReason};

/// A request refused by backpressure.
#[derive(Debug, Clone)]
pub struct RateLimited(pub Limited);

impl IntoResponse for RateLimited {
    fn into_response(self) -> Response {
        let l = self.0;
        let retry_after = retry_after_secs(l.retry_after);
        let what = match l.reason {
            RefusalReason::ShedSeverity => {
                "system under critical load: only WARN and above are accepted (rate"
            }
            RefusalReason::KeyQuota => "rate limit exceeded for this API key (its quota:",
            RefusalReason::RateLimited => "rate limit exceeded - system under load (rate",
            RefusalReason::KeyBytesQuota => "byte rate limit exceeded for this API key (its quota:",
            RefusalReason::BytesLimited => "byte rate limit exceeded - system under load (rate",
        };
        let unit = l.reason.budget().as_str();
        // The rate as an integer: `{:.0}` of an f64 takes the slow exact float formatter.
        let message = format!("{what} {} {unit}/s)", l.limit.round().max(0.0) as u64);
        // A typed body: under overload this is the most frequent answer, and serializing a
        // borrowed struct costs a fraction of building a `serde_json::Value` tree.
        let body = Body {
            error: l.reason.as_str(),
            budget: l.reason.budget().as_str(),
            message: &message,
            details: [Details {
                status: l.status.as_str(),
                current_rate: (l.limit * 10.0).round() / 10.0,
                available_permissions: l.remaining.floor().max(0.0),
                retry_after_seconds: retry_after,
            }],
        };
        let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        headers.insert(
            "ratelimit-limit",
            HeaderValue::from(l.limit.round().max(0.0) as u64),
        );
        headers.insert(
            "ratelimit-remaining",
            HeaderValue::from(l.remaining.floor().max(0.0) as u64),
        );
        response
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'static str,
    /// The budget that was hit: `events` or `bytes` (`currentRate` is in its unit per second).
    budget: &'static str,
    message: &'a str,
    details: [Details; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Details {
    status: &'static str,
    current_rate: f64,
    available_permissions: f64,
    retry_after_seconds: u64,
}
