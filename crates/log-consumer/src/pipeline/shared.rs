//! State the consume loop shares with the writers, the rebalance callbacks and the health
//! endpoint, and the rebalance context that keeps it right across assignments.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flow_control::{BreakerConfig, BreakerState, CircuitBreaker, OffsetTracker};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::writer::Done;
use crate::config::Config;
use crate::metrics;

/// State shared with the health endpoint and the rebalance callbacks.
pub struct Shared {
    pub(crate) in_flight: AtomicUsize,
    /// The most events ever in flight at once (health shows it: the bound, proven).
    pub(crate) in_flight_peak: AtomicUsize,
    pub(crate) max_in_flight: usize,
    pub(crate) paused: AtomicBool,
    pub(crate) subscribed: AtomicBool,
    pub(crate) assigned: Mutex<Vec<i32>>,
    pub(crate) breaker: Mutex<CircuitBreaker>,
    pub(crate) last_commit: Mutex<Option<Instant>>,
    pub(crate) tracker: Mutex<OffsetTracker>,
    pub(crate) rebalances: AtomicUsize,
}

impl Shared {
    pub fn new(cfg: &Config) -> Arc<Shared> {
        Arc::new(Shared {
            in_flight: AtomicUsize::new(0),
            in_flight_peak: AtomicUsize::new(0),
            max_in_flight: cfg.max_in_flight.max(1),
            paused: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            assigned: Mutex::new(Vec::new()),
            breaker: Mutex::new(CircuitBreaker::new(BreakerConfig {
                wait_in_open: Duration::from_secs(cfg.breaker_open_secs),
                ..BreakerConfig::default()
            })),
            last_commit: Mutex::new(None),
            tracker: Mutex::new(OffsetTracker::new()),
            rebalances: AtomicUsize::new(0),
        })
    }

    pub fn breaker_state(&self) -> BreakerState {
        lock(&self.breaker).state(Instant::now())
    }

    /// Marks offsets durable in the tracker and releases their in-flight slots.
    pub(crate) fn apply_done(&self, done: &Done) {
        let mut tracker = lock(&self.tracker);
        for (p, o) in done {
            tracker.completed(*p, *o);
        }
        drop(tracker);
        self.in_flight.fetch_sub(done.len(), Ordering::Relaxed);
    }

    /// What `/health` shows, read in one place.
    pub fn health(&self) -> Health {
        Health {
            breaker: self.breaker_state(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            in_flight_peak: self.in_flight_peak.load(Ordering::Relaxed),
            max_in_flight: self.max_in_flight,
            paused: self.paused.load(Ordering::Relaxed),
            subscribed: self.subscribed.load(Ordering::Relaxed),
            assigned: lock(&self.assigned).clone(),
            rebalances: self.rebalances.load(Ordering::Relaxed),
            last_commit_age: lock(&self.last_commit).map(|t| t.elapsed()),
        }
    }
}

/// A snapshot of the consumer's state for the health endpoint.
#[derive(Debug, Clone)]
pub struct Health {
    pub breaker: BreakerState,
    pub in_flight: usize,
    pub in_flight_peak: usize,
    pub max_in_flight: usize,
    pub paused: bool,
    pub subscribed: bool,
    pub assigned: Vec<i32>,
    pub rebalances: usize,
    pub last_commit_age: Option<Duration>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Rebalance-aware context: commits what is durable for revoked partitions, drops their
/// pending state, and re-pauses newly assigned partitions while paused.
pub struct Context {
    pub(crate) shared: Arc<Shared>,
    pub(crate) topic: String,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        service_runtime::kafka_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        service_runtime::kafka_error(error, reason);
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let mut commit = TopicPartitionList::new();
        {
            let mut tracker = lock(&self.shared.tracker);
            for elem in tpl.elements() {
                if let Some(offset) = tracker.revoke(elem.partition()) {
                    let _ = commit.add_partition_offset(
                        &self.topic,
                        elem.partition(),
                        Offset::Offset(offset),
                    );
                }
            }
        }
        if commit.count() > 0 {
            match consumer.commit(&commit, CommitMode::Sync) {
                Ok(()) => tracing::info!(
                    partitions = commit.count(),
                    "committed durable offsets of revoked partitions"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "commit on revoke failed (rows are idempotent; the new owner re-reads)")
                }
            }
        }
        lock(&self.shared.assigned).clear();
        metrics::assigned(0);
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        self.shared.rebalances.fetch_add(1, Ordering::Relaxed);
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        // Only assigned partitions are tracked: a late record of another is never committed.
        lock(&self.shared.tracker).assign(&partitions);
        tracing::info!(?partitions, "partitions assigned");
        metrics::assigned(partitions.len());
        *lock(&self.shared.assigned) = partitions;
        // Pausing is per assigned partition: a paused consumer must pause new ones too.
        if self.shared.paused.load(Ordering::Relaxed) {
            if let Err(e) = consumer.pause(tpl) {
                tracing::warn!(error = %e, "could not pause newly assigned partitions");
            }
        }
    }
}
