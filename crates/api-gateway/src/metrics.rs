//! Every metric the gateway exports: names in one place, recorded through small functions.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{counter, gauge, histogram, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::backpressure::RefusalReason;
use crate::serve::phase::Expiry;
use crate::serve::Listener;

pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";
pub const EVENTS_ACCEPTED_TOTAL: &str = "ingest_events_accepted_total";
pub const EVENTS_REJECTED_TOTAL: &str = "ingest_events_rejected_total";
pub const PRODUCE_DURATION_SECONDS: &str = "kafka_produce_duration_seconds";
pub const PRODUCE_FAILURES_TOTAL: &str = "kafka_produce_failures_total";
pub const PRODUCER_QUEUE_MESSAGES: &str = "kafka_producer_queue_messages";
pub const KAFKA_UP: &str = "kafka_up";
pub const CONSUMER_LAG: &str = "kafka_consumer_lag";
pub const CONSUMER_LAG_AGE_SECONDS: &str = "kafka_consumer_lag_age_seconds";
// Backpressure metrics keep their `rate_limiter_*` names: dashboards and alerts use them.
pub const LIMITER_AVAILABLE: &str = "rate_limiter_available_permissions";
pub const LIMITER_RATE: &str = "rate_limiter_rate";
/// The bytes/s budget's current rate (`RATE_MAX_BYTES` scaled by lag); absent while it is off.
pub const LIMITER_BYTES_RATE: &str = "rate_limiter_bytes_rate";
pub const LIMITER_REJECTED_TOTAL: &str = "rate_limiter_rejected_total";
pub const BACKPRESSURE_STATUS: &str = "backpressure_status";
pub const REDIS_UP: &str = "redis_up";
pub const GATEWAY_REPLICAS: &str = "gateway_replicas";
pub const OTLP_LOG_RECORDS_TOTAL: &str = "otlp_log_records_total";
pub const HTTP_CONNECTIONS_OPEN: &str = "http_connections_open";
pub const HTTP_CONNECTIONS_LIMIT: &str = "http_connections_limit";
pub const HTTP_CONNECTIONS_REFUSED_TOTAL: &str = "http_connections_refused_total";
pub const HTTP_CONNECTIONS_TIMED_OUT_TOTAL: &str = "http_connections_timed_out_total";
pub const API_KEY_EVENTS_TOTAL: &str = "api_key_events_total";
pub const API_KEYS_LOADED: &str = "api_keys_loaded";
pub const API_KEYS_RELOAD_FAILURES_TOTAL: &str = "api_keys_reload_failures_total";
pub const READ_REQUESTS_TOTAL: &str = "read_requests_total";
pub const READ_QUERY_DURATION_SECONDS: &str = "read_query_duration_seconds";
pub const READ_POOL_CONNECTIONS: &str = "read_pool_connections";
pub const READ_POOL_MAX_CONNECTIONS: &str = "read_pool_max_connections";

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("buckets are non-empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests by route, method and status"
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "HTTP request duration"
    );
    describe_counter!(
        EVENTS_ACCEPTED_TOTAL,
        "Events acknowledged by Kafka and answered 202"
    );
    describe_counter!(EVENTS_REJECTED_TOTAL, "Requests refused, by reason");
    describe_histogram!(
        PRODUCE_DURATION_SECONDS,
        Unit::Seconds,
        "Enqueue to delivery report"
    );
    describe_counter!(PRODUCE_FAILURES_TOTAL, "Records Kafka did not acknowledge");
    describe_gauge!(
        PRODUCER_QUEUE_MESSAGES,
        "Records queued or in flight in the producer"
    );
    describe_gauge!(
        KAFKA_UP,
        "1 when the last metadata request to Kafka succeeded"
    );
    describe_gauge!(
        LIMITER_RATE,
        "Events/s backpressure admits, set by consumer lag"
    );
    describe_gauge!(
        LIMITER_AVAILABLE,
        "Permits backpressure has available to this gateway now"
    );
    describe_counter!(
        LIMITER_REJECTED_TOTAL,
        "Requests refused by backpressure, by reason"
    );
    describe_gauge!(
        BACKPRESSURE_STATUS,
        "Backpressure status: 0 healthy, 1 degraded, 2 critical"
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Consumer group lag in records (total; per partition with `partition`)"
    );
    describe_gauge!(
        CONSUMER_LAG_AGE_SECONDS,
        "Seconds since the lag was last measured (-1 before the first measurement)"
    );
    describe_gauge!(REDIS_UP, "1 while the Redis-shared budget is in use");
    describe_gauge!(
        GATEWAY_REPLICAS,
        "Gateways sharing the budget, seen through the Redis heartbeat"
    );
    describe_counter!(
        OTLP_LOG_RECORDS_TOTAL,
        "OTLP log records received on /v1/logs, by outcome"
    );
    describe_counter!(
        API_KEY_EVENTS_TOTAL,
        "Events per API key (its name from API_KEYS_FILE), by outcome"
    );
    describe_gauge!(
        API_KEYS_LOADED,
        "API keys in force (absent without API_KEYS_FILE)"
    );
    describe_counter!(
        API_KEYS_RELOAD_FAILURES_TOTAL,
        "Reloads of API_KEYS_FILE refused (the previous keys stayed in force)"
    );
    describe_counter!(
        READ_REQUESTS_TOTAL,
        "Reads of GET /api/logs by outcome (ok, bad_request, read_busy, read_timeout, unavailable, read_disabled)"
    );
    describe_histogram!(
        READ_QUERY_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of the read query of a successful GET /api/logs"
    );
    describe_gauge!(
        READ_POOL_CONNECTIONS,
        "Connections the read pool holds open (at most read_pool_max_connections)"
    );
    describe_gauge!(
        READ_POOL_MAX_CONNECTIONS,
        "READ_POOL_SIZE: the most connections reads may use"
    );
    // The OTLP series exist from the start, so dashboards show 0 rather than no data.
    for outcome in ["accepted", "rejected", "throttled", "failed", "invalid"] {
        otlp_records(outcome, 0);
    }
    describe_gauge!(
        HTTP_CONNECTIONS_OPEN,
        "Open client connections, by listener"
    );
    describe_gauge!(
        HTTP_CONNECTIONS_LIMIT,
        "Most concurrent connections a listener serves"
    );
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED_TOTAL,
        "Connections closed at accept because the listener was at its cap"
    );
    describe_counter!(
        HTTP_CONNECTIONS_TIMED_OUT_TOTAL,
        "Connections the server closed, by reason (header_timeout, idle_timeout)"
    );
}

/// Records one request's status and duration, labelled by its route template. Every label
/// the gateway's own routes produce is a `&'static str`, so recording allocates nothing: this
/// runs for every 429 of an overload too.
pub async fn track_http(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_label(
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let method = method_label(request.method());
    let response = next.run(request).await;
    let status = status_label(response.status());
    histogram!(HTTP_REQUEST_DURATION_SECONDS, "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    counter!(HTTP_REQUESTS_TOTAL, "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}

fn route_label(path: Option<&str>) -> SharedString {
    let Some(path) = path else {
        return SharedString::const_str("unmatched");
    };
    match crate::ROUTES.iter().find(|(_, route)| *route == path) {
        Some((_, route)) => SharedString::const_str(route),
        None => SharedString::from_owned(path.to_owned()),
    }
}

/// The nine standard methods by name; any other (a client may send any token) is "other",
/// so a client cannot create unbounded series.
fn method_label(method: &Method) -> SharedString {
    SharedString::const_str(match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    })
}

fn status_label(status: StatusCode) -> SharedString {
    const COMMON: &[(StatusCode, &str)] = &[
        (StatusCode::OK, "200"),
        (StatusCode::ACCEPTED, "202"),
        (StatusCode::BAD_REQUEST, "400"),
        (StatusCode::NOT_FOUND, "404"),
        (StatusCode::METHOD_NOT_ALLOWED, "405"),
        (StatusCode::REQUEST_TIMEOUT, "408"),
        (StatusCode::PAYLOAD_TOO_LARGE, "413"),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "415"),
        (StatusCode::TOO_MANY_REQUESTS, "429"),
        (StatusCode::SERVICE_UNAVAILABLE, "503"),
    ];
    match COMMON.iter().find(|(code, _)| *code == status) {
        Some((_, label)) => SharedString::const_str(label),
        None => SharedString::from_owned(status.as_str().to_owned()),
    }
}

pub fn events_accepted(n: usize) {
    counter!(EVENTS_ACCEPTED_TOTAL).increment(n as u64);
}

/// Events of one API key by outcome (`accepted`, `forbidden`, `rate_limited` by its
/// eventsPerSecond, `bytes_rate_limited` by its bytesPerSecond). Labelled with
/// the key's name from the key file (bounded by it), never the key.
pub fn api_key_events(key: &str, outcome: &'static str, n: usize) {
    counter!(API_KEY_EVENTS_TOTAL, "key" => key.to_owned(), "outcome" => outcome)
        .increment(n as u64);
}

/// Keys in force after a (re)load; each key's accepted series exists from then on.
pub fn api_keys_loaded(keys: &crate::auth::KeySet) {
    gauge!(API_KEYS_LOADED).set(keys.len() as f64);
    for name in keys.names() {
        api_key_events(name, "accepted", 0);
    }
}

pub fn api_keys_reload_failed() {
    counter!(API_KEYS_RELOAD_FAILURES_TOTAL).increment(1);
}

pub fn event_rejected(reason: &'static str) {
    counter!(EVENTS_REJECTED_TOTAL, "reason" => reason).increment(1);
}

pub fn produce_finished(elapsed: Duration, ok: bool) {
    histogram!(PRODUCE_DURATION_SECONDS).record(elapsed.as_secs_f64());
    if !ok {
        counter!(PRODUCE_FAILURES_TOTAL).increment(1);
    }
}

pub fn producer_queue(depth: i32) {
    gauge!(PRODUCER_QUEUE_MESSAGES).set(depth as f64);
}

pub fn kafka_up(up: bool) {
    gauge!(KAFKA_UP).set(if up { 1.0 } else { 0.0 });
}

pub fn backpressure_rate(rate: f64, status: f64) {
    gauge!(LIMITER_RATE).set(rate);
    gauge!(BACKPRESSURE_STATUS).set(status);
}

pub fn backpressure_bytes_rate(rate: f64) {
    gauge!(LIMITER_BYTES_RATE).set(rate);
}

pub fn backpressure_available(permits: f64) {
    gauge!(LIMITER_AVAILABLE).set(permits);
}

pub fn backpressure_refused(reason: RefusalReason) {
    counter!(LIMITER_REJECTED_TOTAL, "reason" => reason.as_str()).increment(1);
}

pub fn total_lag(lag: u64) {
    gauge!(CONSUMER_LAG).set(lag as f64);
}

pub fn partition_lag(partition: i32, lag: u64) {
    gauge!(CONSUMER_LAG, "partition" => partition.to_string()).set(lag as f64);
}

pub fn lag_age(age: Option<f64>) {
    gauge!(CONSUMER_LAG_AGE_SECONDS).set(age.unwrap_or(-1.0));
}

pub fn redis_up(up: bool) {
    gauge!(REDIS_UP).set(if up { 1.0 } else { 0.0 });
}

pub fn replicas(n: usize) {
    gauge!(GATEWAY_REPLICAS).set(n as f64);
}

/// OTLP log records by outcome: `accepted`, `rejected` (partial success), `throttled` (429),
/// `failed` (503), `invalid` (the export could not be read; counts the requests' records
/// when known, else nothing, so the series still appears).
pub fn otlp_records(outcome: &'static str, n: usize) {
    counter!(OTLP_LOG_RECORDS_TOTAL, "outcome" => outcome).increment(n as u64);
}

/// One read answered: its outcome (the error code, or `ok` with the query's duration).
pub fn read_finished(outcome: &'static str, query: Option<Duration>) {
    counter!(READ_REQUESTS_TOTAL, "outcome" => outcome).increment(1);
    if let Some(elapsed) = query {
        histogram!(READ_QUERY_DURATION_SECONDS).record(elapsed.as_secs_f64());
    }
}

pub fn read_pool(open: u32, max: u32) {
    gauge!(READ_POOL_CONNECTIONS).set(f64::from(open));
    gauge!(READ_POOL_MAX_CONNECTIONS).set(f64::from(max));
}

/// Counts one open connection in the gauge for as long as it lives.
pub struct ConnectionOpen(Listener);

impl ConnectionOpen {
    pub fn new(listener: Listener) -> Self {
        gauge!(HTTP_CONNECTIONS_OPEN, "listener" => listener.as_str()).increment(1.0);
        ConnectionOpen(listener)
    }
}

impl Drop for ConnectionOpen {
    fn drop(&mut self) {
        gauge!(HTTP_CONNECTIONS_OPEN, "listener" => self.0.as_str()).decrement(1.0);
    }
}

pub fn connection_limit(listener: Listener, max: usize) {
    gauge!(HTTP_CONNECTIONS_LIMIT, "listener" => listener.as_str()).set(max as f64);
}

pub fn connection_refused(listener: Listener) {
    counter!(HTTP_CONNECTIONS_REFUSED_TOTAL, "listener" => listener.as_str()).increment(1);
}

pub fn connection_expired(listener: Listener, reason: Expiry) {
    counter!(HTTP_CONNECTIONS_TIMED_OUT_TOTAL, "listener" => listener.as_str(), "reason" => reason.as_str())
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_route_template_method_and_status_code() {
        for (method, route) in crate::ROUTES {
            assert_eq!(&*route_label(Some(route)), *route);
            let method: Method = method.to_uppercase().parse().unwrap();
            assert_eq!(&*method_label(&method), method.as_str());
        }
        assert_eq!(&*route_label(None), "unmatched");
        assert_eq!(&*route_label(Some("/not/listed")), "/not/listed");
        assert_eq!(&*method_label(&Method::DELETE), "DELETE");
        // Hole 8 of the reliability issue: any method token used to become a label value.
        for token in ["FOOBAR", "X-1", "PROPFIND"] {
            let method = Method::from_bytes(token.as_bytes()).unwrap();
            assert_eq!(&*method_label(&method), "other", "{token}");
        }
        for code in [
            200u16, 201, 202, 400, 404, 405, 408, 413, 415, 429, 500, 503, 504,
        ] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(*status_label(status), code.to_string());
        }
    }
}
