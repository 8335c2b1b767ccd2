//! Every metric the gateway exports: names in one place, recorded through small functions.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
pub const LIMITER_AVAILABLE: &str = "rate_limiter_available_permissions";
pub const LIMITER_RATE: &str = "rate_limiter_rate";
pub const LIMITER_REJECTED_TOTAL: &str = "rate_limiter_rejected_total";
pub const BACKPRESSURE_STATUS: &str = "backpressure_status";
pub const REDIS_UP: &str = "redis_up";
pub const GATEWAY_REPLICAS: &str = "gateway_replicas";

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
}

/// Records one request's status and duration, labelled by its route template.
pub async fn track_http(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    histogram!(HTTP_REQUEST_DURATION_SECONDS, "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    counter!(HTTP_REQUESTS_TOTAL, "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}

pub fn events_accepted(n: usize) {
    counter!(EVENTS_ACCEPTED_TOTAL).increment(n as u64);
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

pub fn limiter_rate(rate: f64, status: f64) {
    gauge!(LIMITER_RATE).set(rate);
    gauge!(BACKPRESSURE_STATUS).set(status);
}

pub fn limiter_available(permits: f64) {
    gauge!(LIMITER_AVAILABLE).set(permits);
}

pub fn limiter_rejected(reason: &'static str) {
    counter!(LIMITER_REJECTED_TOTAL, "reason" => reason).increment(1);
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
