//! Every metric the consumer exports: names in one place.

use std::sync::OnceLock;

use flow_control::BreakerState;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const EVENTS_PROCESSED_TOTAL: &str = "consumer_events_processed_total";
pub const BATCH_SIZE: &str = "consumer_batch_size";
pub const BATCH_DURATION_SECONDS: &str = "consumer_batch_duration_seconds";
pub const IN_FLIGHT: &str = "consumer_in_flight";
pub const IN_FLIGHT_LIMIT: &str = "consumer_in_flight_limit";
pub const COMMIT_LAG: &str = "consumer_commit_lag";
pub const COMMITTED_OFFSET: &str = "consumer_committed_offset";
pub const PARTITIONS_ASSIGNED: &str = "consumer_partitions_assigned";
pub const PAUSED: &str = "consumer_paused";
pub const DB_POOL_CONNECTIONS: &str = "db_pool_connections";
pub const DB_POOL_IDLE: &str = "db_pool_idle";
pub const DB_POOL_WAITING: &str = "db_pool_waiting";
pub const DB_POOL_MAX: &str = "db_pool_max";
pub const BREAKER_STATE: &str = "resilience4j_circuitbreaker_state";
pub const DEAD_LETTERS_TOTAL: &str = "consumer_dead_letters_total";
pub const DB_ERRORS_TOTAL: &str = "consumer_db_errors_total";
/// `log_events` partitions attached, DEFAULT included.
pub const PARTITIONS: &str = "consumer_partitions";
/// Expired partitions dropped by retention.
pub const PARTITIONS_DROPPED_TOTAL: &str = "consumer_partitions_dropped_total";

const BUCKETS_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BUCKETS_ROWS: &[f64] = &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

/// Installs the process-wide Prometheus recorder once.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS_SECONDS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BUCKETS_ROWS)
                })
                .expect("buckets are non-empty")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

pub fn processed(outcome: &'static str, n: u64) {
    if n > 0 {
        counter!(EVENTS_PROCESSED_TOTAL, "outcome" => outcome).increment(n);
    }
}

pub fn batch(rows: usize, seconds: f64) {
    histogram!(BATCH_SIZE).record(rows as f64);
    histogram!(BATCH_DURATION_SECONDS).record(seconds);
}

pub fn in_flight(n: usize, limit: usize) {
    gauge!(IN_FLIGHT).set(n as f64);
    gauge!(IN_FLIGHT_LIMIT).set(limit as f64);
}

pub fn committed_offset(partition: i32, offset: i64) {
    gauge!(COMMITTED_OFFSET, "partition" => partition.to_string()).set(offset as f64);
}

/// Received but not yet committable (in flight, or behind an unfinished record).
pub fn commit_lag(partition: i32, lag: i64) {
    gauge!(COMMIT_LAG, "partition" => partition.to_string()).set(lag as f64);
}

pub fn assigned(n: usize) {
    gauge!(PARTITIONS_ASSIGNED).set(n as f64);
}

pub fn paused(p: bool) {
    gauge!(PAUSED).set(if p { 1.0 } else { 0.0 });
}

pub fn pool(size: u32, idle: usize, waiting: usize, max: u32) {
    gauge!(DB_POOL_CONNECTIONS).set(size as f64);
    gauge!(DB_POOL_IDLE).set(idle as f64);
    gauge!(DB_POOL_WAITING).set(waiting as f64);
    gauge!(DB_POOL_MAX).set(max as f64);
}

/// Resilience4j's export: 1 for the current state, 0 for the others.
pub fn breaker(state: BreakerState) {
    for s in BreakerState::ALL {
        let v = if s == state { 1.0 } else { 0.0 };
        gauge!(BREAKER_STATE, "name" => "database", "state" => s.as_str()).set(v);
    }
}

pub fn dead_letter(kind: &'static str) {
    counter!(DEAD_LETTERS_TOTAL, "kind" => kind).increment(1);
}

pub fn db_error(kind: &'static str) {
    counter!(DB_ERRORS_TOTAL, "kind" => kind).increment(1);
}

pub fn partitions(n: usize) {
    gauge!(PARTITIONS).set(n as f64);
}

pub fn partition_dropped() {
    counter!(PARTITIONS_DROPPED_TOTAL).increment(1);
}
