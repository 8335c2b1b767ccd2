//! Backpressure: consumer lag sets the rate (flow_control::RatePolicy), and each request is
//! charged in events against a budget: cluster-wide in Redis, or local (rate ÷ replicas) when
//! Redis is disabled or unreachable. Redis trouble never rejects or fails an ingest by itself.
//! (Words: *backpressure* is the whole mechanism; a *budget* is one of its token buckets.)
//!
//! This file holds the shared state and the lag readings; `admission.rs` decides which requests
//! get in (first permit, rest of a batch, shedding); `cluster.rs` draws permits from Redis or the
//! local budget, fails over between them and runs the replica heartbeat; `bytes.rs` holds the
//! optional bytes/s budget beside the events/s one (`RATE_MAX_BYTES`).

mod admission;
mod bytes;
mod cluster;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flow_control::{Burst, BurstPolicy, LoadStatus, Pool, PriorityBudget, RatePolicy};
use log_event::Severity;

use crate::metrics;
use crate::redis_budget::RedisBudget;
use crate::shared_budget::{SharedBudgets, Unit};
pub use admission::Permit;
pub use cluster::spawn_redis_heartbeat;

/// Why a request must wait: a closed set, printed with [`RefusalReason::as_str`] in the 429
/// body and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// No permits left.
    RateLimited,
    /// Critical load and a severity below `SHED_BELOW`.
    ShedSeverity,
    /// The API key's own quota (`eventsPerSecond`) is spent; other keys are unaffected.
    KeyQuota,
    /// The global bytes/s budget (`RATE_MAX_BYTES`) is spent.
    BytesLimited,
    /// The API key's own `bytesPerSecond` is spent; other keys are unaffected.
    KeyBytesQuota,
}

impl RefusalReason {
    /// The stable code clients, dashboards and alerts see.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::RateLimited => "rate_limited",
            RefusalReason::ShedSeverity => "shed_severity",
            RefusalReason::KeyQuota => "key_rate_limited",
            RefusalReason::BytesLimited => "bytes_rate_limited",
            RefusalReason::KeyBytesQuota => "key_bytes_rate_limited",
        }
    }

    /// The budget that was hit: `events` or `bytes` (the 429 body's `budget`).
    pub fn budget(self) -> Unit {
        match self {
            RefusalReason::BytesLimited | RefusalReason::KeyBytesQuota => Unit::Bytes,
            RefusalReason::RateLimited | RefusalReason::ShedSeverity | RefusalReason::KeyQuota => {
                Unit::Events
            }
        }
    }
}

/// A request that must wait.
#[derive(Debug, Clone)]
pub struct Limited {
    pub reason: RefusalReason,
    pub retry_after: Duration,
    /// Current rate of the budget that was hit, in its unit (`reason.budget()`) per second.
    pub limit: f64,
    pub remaining: f64,
    pub status: LoadStatus,
}

/// What the lag monitor last saw.
#[derive(Debug, Clone, Copy)]
struct LagReading {
    lag: u64,
    at: Instant,
}

struct State {
    rate: f64,
    status: LoadStatus,
    lag: Option<LagReading>,
    /// Whether the last lag query failed (the reading is stale).
    lag_failing: bool,
    /// Local budget: the only one without Redis, rate ÷ replicas as a fallback.
    local: PriorityBudget,
    /// Permits leased from Redis, not yet spent.
    leased: [f64; 2],
    /// Cluster-wide permits left at the last Redis trip.
    cluster_remaining: f64,
}

/// Tunables of backpressure.
#[derive(Debug, Clone)]
pub struct BackpressureConfig {
    pub policy: RatePolicy,
    pub shed_below: Severity,
    pub reserved_share: f64,
    /// Bucket size per pool (see `flow_control::Burst`) at each load status.
    pub burst: BurstPolicy,
    /// Bytes/s at `policy.rate_max`, scaled down with the event rate as lag grows (0: no
    /// bytes budget).
    pub rate_max_bytes: f64,
    /// Bucket size of the bytes budget's pools.
    pub bytes_burst: Burst,
    /// Retry-After for shed low-severity events (one lag interval).
    pub shed_retry: Duration,
}

/// The gateway's backpressure state, shared by the rate-limit layer, the lag monitor and health.
pub struct Backpressure {
    cfg: BackpressureConfig,
    state: Mutex<State>,
    redis: Option<RedisBudget>,
    redis_up: AtomicBool,
    replicas: AtomicUsize,
    /// One lease trip per pool at a time (`cluster.rs`): requests short of permits together
    /// wait for the trip in flight instead of each draining the shared bucket.
    leasing: [tokio::sync::Mutex<()>; 2],
    /// The bytes/s budget (unused while `rate_max_bytes` is 0).
    bytes: SharedBudgets,
}

fn pool_index(pool: Pool) -> usize {
    match pool {
        Pool::General => 0,
        Pool::Reserved => 1,
    }
}

impl Backpressure {
    pub fn new(cfg: BackpressureConfig, redis: Option<RedisBudget>) -> Arc<Self> {
        let now = Instant::now();
        let rate = cfg.policy.rate_max;
        let redis_up = redis.is_some();
        // Every gauge exists from the start; the heartbeat corrects redis_up within seconds.
        metrics::redis_up(redis_up);
        metrics::replicas(1);
        metrics::backpressure_rate(rate, LoadStatus::Healthy.as_gauge());
        bytes::publish((cfg.rate_max_bytes > 0.0).then_some(cfg.rate_max_bytes));
        Arc::new(Self {
            state: Mutex::new(State {
                rate,
                status: LoadStatus::Healthy,
                lag: None,
                lag_failing: false,
                local: PriorityBudget::new(
                    rate,
                    cfg.reserved_share,
                    cfg.burst.for_status(LoadStatus::Healthy),
                    now,
                ),
                leased: [0.0; 2],
                cluster_remaining: rate,
            }),
            bytes: SharedBudgets::new(cfg.reserved_share, cfg.bytes_burst),
            cfg,
            redis,
            redis_up: AtomicBool::new(redis_up),
            replicas: AtomicUsize::new(1),
            leasing: Default::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the numbers inconsistent enough to
        // matter; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a fresh lag reading and re-derives the rate.
    pub fn set_lag(&self, lag: u64) {
        let now = Instant::now();
        let rate = self.cfg.policy.rate_for(lag);
        let status = self.cfg.policy.status_for(lag);
        let replicas = self.replicas.load(Ordering::Relaxed).max(1);
        let mut st = self.lock();
        st.lag = Some(LagReading { lag, at: now });
        st.lag_failing = false;
        st.rate = rate;
        st.status = status;
        let local_rate = if self.redis.is_some() {
            rate / replicas as f64
        } else {
            rate
        };
        st.local
            .reconfigure(local_rate, self.cfg.burst.for_status(status), now);
        drop(st);
        metrics::backpressure_rate(rate, status.as_gauge());
        bytes::publish(self.bytes_rate());
    }

    /// The lag could not be read: keep the last rate, mark it stale. Returns true on the
    /// first failure after a success (log once per state change).
    pub fn lag_failed(&self) -> bool {
        let mut st = self.lock();
        let first = !st.lag_failing;
        st.lag_failing = true;
        first
    }

    /// True when the previous lag query had failed (so recovery is logged once).
    pub fn lag_failed_recovered(&self) -> bool {
        self.lock().lag_failing
    }

    /// Current rate (events/s) and status.
    pub fn rate(&self) -> (f64, LoadStatus) {
        let st = self.lock();
        (st.rate, st.status)
    }

    /// The last lag read (None before the first).
    pub fn consumer_lag(&self) -> Option<u64> {
        self.lock().lag.map(|r| r.lag)
    }

    /// Seconds since the last successful lag reading (None before the first).
    pub fn lag_age(&self) -> Option<f64> {
        self.lock().lag.map(|r| r.at.elapsed().as_secs_f64())
    }

    /// Gateways sharing the Redis budget, as the last heartbeat saw them (1 without Redis).
    pub fn replicas(&self) -> usize {
        self.replicas.load(Ordering::Relaxed)
    }

    /// Permits available to this gateway right now.
    pub fn available(&self) -> f64 {
        let now = Instant::now();
        let mut st = self.lock();
        if self.use_redis().is_some() {
            st.leased[0] + st.leased[1] + st.cluster_remaining.max(0.0)
        } else {
            st.local.available(now)
        }
    }
}

/// Publishes the permits available every second, until the returned handle is aborted: the
/// gauge is read from the buckets, which change without any event to record.
pub fn spawn_permits_gauge(backpressure: Arc<Backpressure>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            metrics::backpressure_available(backpressure.available());
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn backpressure(rate: f64) -> Arc<Backpressure> {
        Backpressure::new(
            BackpressureConfig {
                policy: RatePolicy::new(rate, rate / 10.0, 10_000, 50_000).unwrap(),
                shed_below: Severity::Warn,
                reserved_share: 0.1,
                burst: BurstPolicy::uniform(Burst::secs(0.2).capped(200.0)),
                rate_max_bytes: 0.0,
                bytes_burst: Burst::secs(0.2),
                shed_retry: Duration::from_secs(5),
            },
            None,
        )
    }

    #[tokio::test]
    async fn lag_sets_rate_and_status() {
        let b = backpressure(1000.0);
        assert_eq!(b.rate(), (1000.0, LoadStatus::Healthy));
        b.set_lag(30_000);
        assert_eq!(b.rate(), (550.0, LoadStatus::Degraded));
        b.set_lag(60_000);
        assert_eq!(b.rate(), (100.0, LoadStatus::Critical));
        assert!(b.lag_failed(), "first failure is reported");
        assert!(!b.lag_failed(), "then not again");
        assert_eq!(
            b.rate(),
            (100.0, LoadStatus::Critical),
            "a failed read keeps the rate"
        );
        assert_eq!(b.redis_state(), "disabled");
    }

    #[tokio::test]
    async fn the_bucket_is_capped_in_events_at_high_rates() {
        // 1 000/s: 180 + 50 (the reserve's floor), below the 200-event cap.
        assert!((backpressure(1000.0).available() - 230.0).abs() < 1.0);
        // 6 000/s: 200 ms would be 1 080 + 120; the general pool is capped at 200.
        let b = backpressure(6000.0);
        assert!((b.available() - 320.0).abs() < 1.0, "{}", b.available());
        // Critical lag, 600/s: 200 ms of 540/s (108) and the reserve's floor (50).
        b.set_lag(60_000);
        assert!((b.available() - 158.0).abs() < 1.0, "{}", b.available());
    }
}
