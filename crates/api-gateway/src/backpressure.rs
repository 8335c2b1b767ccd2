//! The adaptive budget: consumer lag sets the rate (flow_control::RatePolicy), and each
//! request is charged in events against a cluster-wide budget in Redis, or a local one
//! (rate ÷ replicas) when Redis is disabled or unreachable. Redis trouble never rejects or
//! fails an ingest by itself.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flow_control::{Class, LoadStatus, Pool, PriorityBudget, RatePolicy};
use log_event::{LogEvent, Severity};
use serde_json::Value;

use crate::metrics;
use crate::redis_budget::RedisBudget;

/// A request that must wait.
#[derive(Debug, Clone)]
pub struct Limited {
    /// `rate_limited` (no permits) or `shed_severity` (critical load, low severity).
    pub reason: &'static str,
    pub retry_after: Duration,
    /// Current rate, events/s.
    pub limit: f64,
    pub remaining: f64,
    pub status: LoadStatus,
}

/// The first permit of a request, taken before its body is read.
#[derive(Debug, Clone, Copy)]
pub struct Permit {
    pool: Pool,
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
    /// Local budget: the whole budget without Redis, rate ÷ replicas as a fallback.
    local: PriorityBudget,
    /// Permits leased from Redis, not yet spent.
    leased: [f64; 2],
    /// Cluster-wide permits left at the last Redis trip.
    cluster_remaining: f64,
}

/// Tunables of the budget.
#[derive(Debug, Clone)]
pub struct BudgetConfig {
    pub policy: RatePolicy,
    pub shed_below: Severity,
    pub reserved_share: f64,
    /// Bucket size per pool (see `flow_control::Burst`).
    pub burst: flow_control::Burst,
    /// Retry-After for shed low-severity events (one lag interval).
    pub shed_retry: Duration,
}

/// The gateway's backpressure state, shared by the limiter, the lag monitor and health.
pub struct Backpressure {
    cfg: BudgetConfig,
    state: Mutex<State>,
    redis: Option<RedisBudget>,
    redis_up: AtomicBool,
    replicas: AtomicUsize,
}

fn pool_index(pool: Pool) -> usize {
    match pool {
        Pool::General => 0,
        Pool::Reserved => 1,
    }
}

impl Backpressure {
    pub fn new(cfg: BudgetConfig, redis: Option<RedisBudget>) -> Arc<Self> {
        let now = Instant::now();
        let rate = cfg.policy.rate_max;
        let redis_up = redis.is_some();
        // Every gauge exists from the start; the heartbeat corrects redis_up within seconds.
        metrics::redis_up(redis_up);
        metrics::replicas(1);
        metrics::limiter_rate(rate, LoadStatus::Healthy.as_gauge());
        Arc::new(Self {
            state: Mutex::new(State {
                rate,
                status: LoadStatus::Healthy,
                lag: None,
                lag_failing: false,
                local: PriorityBudget::new(rate, cfg.reserved_share, cfg.burst, now),
                leased: [0.0; 2],
                cluster_remaining: rate,
            }),
            cfg,
            redis,
            redis_up: AtomicBool::new(redis_up),
            replicas: AtomicUsize::new(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the numbers inconsistent enough to
        // matter; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn use_redis(&self) -> Option<&RedisBudget> {
        self.redis
            .as_ref()
            .filter(|_| self.redis_up.load(Ordering::Relaxed))
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
        st.local.set_rate(local_rate, now);
        drop(st);
        metrics::limiter_rate(rate, status.as_gauge());
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

    /// Seconds since the last successful lag reading (None before the first).
    pub fn lag_age(&self) -> Option<f64> {
        self.lock().lag.map(|r| r.at.elapsed().as_secs_f64())
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

    /// Takes the first permit before the body is read. The request's severity is not known
    /// yet, so a request that only fits the reserved share is let in conditionally and
    /// charged back in [`Backpressure::charge_rest`] unless it is ERROR/FATAL.
    pub async fn admit_first(&self) -> Result<Permit, Limited> {
        self.take(1.0, Class::Protected)
            .await
            .map(|pool| Permit { pool })
            .map_err(|l| self.count_rejection(l))
    }

    /// Charges the rest of a parsed request: one permit was taken already.
    pub async fn charge_rest(&self, permit: Permit, events: &[LogEvent]) -> Result<(), Limited> {
        let all_protected = events.iter().all(|e| e.severity.is_protected());
        let (rate, status) = self.rate();
        if status == LoadStatus::Critical && events.iter().any(|e| e.severity < self.cfg.shed_below)
        {
            self.give_back(1.0, permit.pool);
            return Err(self.count_rejection(Limited {
                reason: "shed_severity",
                retry_after: self.cfg.shed_retry,
                limit: rate,
                remaining: self.available(),
                status,
            }));
        }
        let class = if all_protected {
            Class::Protected
        } else {
            Class::Normal
        };
        if permit.pool == Pool::Reserved && class == Class::Normal {
            self.give_back(1.0, permit.pool);
            // Only the reserve had room: for this request that is a plain rate limit.
            return Err(self.count_rejection(Limited {
                reason: "rate_limited",
                retry_after: Duration::from_secs(1),
                limit: rate,
                remaining: self.available(),
                status,
            }));
        }
        if events.len() <= 1 {
            return Ok(());
        }
        // Charge the whole request at once, the first permit given back first: a bucket
        // admits a cost above its size only when full, and a bucket that has just given
        // one permit to this very request would never be, so a batch larger than the burst
        // could never get in.
        self.give_back(1.0, permit.pool);
        match self.take(events.len() as f64, class).await {
            Ok(_) => Ok(()),
            Err(l) => Err(self.count_rejection(l)),
        }
    }

    fn count_rejection(&self, l: Limited) -> Limited {
        metrics::limiter_rejected(l.reason);
        l
    }

    fn give_back(&self, cost: f64, pool: Pool) {
        let mut st = self.lock();
        if self.use_redis().is_some() {
            st.leased[pool_index(pool)] += cost;
        } else {
            st.local.give_back(cost, pool, Instant::now());
        }
    }

    async fn take(&self, cost: f64, class: Class) -> Result<Pool, Limited> {
        let Some(redis) = self.use_redis() else {
            return self.take_local(cost, class);
        };
        let pools: &[Pool] = match class {
            Class::Normal => &[Pool::General],
            Class::Protected => &[Pool::General, Pool::Reserved],
        };
        let mut retry_after = Duration::MAX;
        for &pool in pools {
            match self.take_leased(redis, cost, pool).await {
                Ok(true) => return Ok(pool),
                Ok(false) => {}
                // Redis failed mid-request: this request and the next use the local budget.
                Err(()) => return self.take_local(cost, class),
            }
            retry_after = retry_after.min(self.lease_wait(cost, pool));
        }
        let (rate, status) = self.rate();
        Err(Limited {
            reason: "rate_limited",
            retry_after,
            limit: rate,
            remaining: self.available(),
            status,
        })
    }

    fn take_local(&self, cost: f64, class: Class) -> Result<Pool, Limited> {
        let now = Instant::now();
        let mut st = self.lock();
        let (rate, status) = (st.rate, st.status);
        st.local.try_take(cost, class, now).map_err(|r| Limited {
            reason: "rate_limited",
            retry_after: r.retry_after,
            limit: rate,
            remaining: r.remaining,
            status,
        })
    }

    fn pool_rate(&self, rate: f64, pool: Pool) -> f64 {
        match pool {
            Pool::General => rate * (1.0 - self.cfg.reserved_share),
            Pool::Reserved => rate * self.cfg.reserved_share,
        }
    }

    /// Spends leased permits, leasing more from Redis when short. Ok(false) = no permits.
    async fn take_leased(&self, redis: &RedisBudget, cost: f64, pool: Pool) -> Result<bool, ()> {
        let i = pool_index(pool);
        let (missing, rate) = {
            let mut st = self.lock();
            if st.leased[i] >= cost {
                st.leased[i] -= cost;
                return Ok(true);
            }
            (cost - st.leased[i].max(0.0), st.rate)
        };
        let pool_rate = self.pool_rate(rate, pool);
        if pool_rate <= 0.0 {
            return Ok(false);
        }
        // Lease up to 5% of the rate per trip so most requests cost no round-trip.
        let extra = (pool_rate * 0.05).max(1.0);
        match redis
            .lease(
                pool,
                pool_rate,
                self.cfg.burst.bucket(pool_rate),
                missing,
                extra,
            )
            .await
        {
            Ok(grant) => {
                let mut st = self.lock();
                st.cluster_remaining = grant.remaining;
                if grant.granted <= 0.0 {
                    return Ok(false);
                }
                st.leased[i] += grant.granted;
                st.leased[i] -= cost;
                Ok(true)
            }
            Err(e) => {
                self.redis_failed(&e);
                Err(())
            }
        }
    }

    fn lease_wait(&self, cost: f64, pool: Pool) -> Duration {
        let st = self.lock();
        let rate = self.pool_rate(st.rate, pool);
        if rate <= 0.0 {
            return Duration::from_secs(60);
        }
        let needed = cost.min(rate) - st.cluster_remaining.max(0.0) - st.leased[pool_index(pool)];
        Duration::from_secs_f64((needed / rate).max(0.0))
    }

    fn redis_failed(&self, e: &crate::redis_budget::RedisError) {
        if self.redis_up.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %e, "redis unreachable: using the local budget (rate ÷ replicas)");
            metrics::redis_up(false);
            // Leases already held stay usable by the local bucket's refill; start fresh.
            let now = Instant::now();
            let replicas = self.replicas.load(Ordering::Relaxed).max(1);
            let mut st = self.lock();
            let rate = st.rate / replicas as f64;
            st.local = PriorityBudget::new(rate, self.cfg.reserved_share, self.cfg.burst, now);
        }
    }

    /// Heartbeat outcome: replicas seen, or the error.
    pub fn heartbeat(&self, result: Result<usize, crate::redis_budget::RedisError>) {
        match result {
            Ok(replicas) => {
                self.replicas.store(replicas.max(1), Ordering::Relaxed);
                metrics::replicas(replicas);
                if !self.redis_up.swap(true, Ordering::Relaxed) {
                    tracing::info!(replicas, "redis reachable again: using the cluster budget");
                    metrics::redis_up(true);
                    let mut st = self.lock();
                    st.leased = [0.0; 2];
                }
                // Keep the fallback sized for the replica count seen last.
                let now = Instant::now();
                let mut st = self.lock();
                let rate = st.rate / replicas.max(1) as f64;
                st.local.set_rate(rate, now);
            }
            Err(e) => self.redis_failed(&e),
        }
    }

    /// `disabled`, `up` or `down`.
    pub fn redis_state(&self) -> &'static str {
        match (&self.redis, self.redis_up.load(Ordering::Relaxed)) {
            (None, _) => "disabled",
            (Some(_), true) => "up",
            (Some(_), false) => "down",
        }
    }

    /// The Redis client, for the heartbeat task.
    pub fn redis(&self) -> Option<&RedisBudget> {
        self.redis.as_ref()
    }

    /// Adds the backpressure fields to the health document.
    pub fn fill_health(&self, doc: &mut Value) {
        let (rate, status) = self.rate();
        let lag = self.lock().lag.map(|r| r.lag);
        doc["status"] = status.as_str().into();
        doc["consumerLag"] = lag.into();
        doc["lagAgeSeconds"] = self.lag_age().map(|a| (a * 10.0).round() / 10.0).into();
        doc["currentRate"] = ((rate * 10.0).round() / 10.0).into();
        doc["availablePermissions"] = self.available().floor().max(0.0).into();
        doc["redis"] = self.redis_state().into();
        doc["replicas"] = self.replicas.load(Ordering::Relaxed).into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(rate: f64) -> Arc<Backpressure> {
        Backpressure::new(
            BudgetConfig {
                policy: RatePolicy::new(rate, rate / 10.0, 10_000, 50_000).unwrap(),
                shed_below: Severity::Warn,
                reserved_share: 0.1,
                burst: flow_control::Burst::secs(0.2).capped(200.0),
                shed_retry: Duration::from_secs(5),
            },
            None,
        )
    }

    fn events(severities: &[Severity]) -> Vec<LogEvent> {
        severities
            .iter()
            .map(|s| LogEvent {
                event_id: uuid::Uuid::now_v7(),
                correlation_id: "c".into(),
                severity: *s,
                message: "m".into(),
                source: "s".into(),
                timestamp: 1_763_800_000_000,
                attributes: None,
                received_at: 1_763_800_000_000,
            })
            .collect()
    }

    #[tokio::test]
    async fn lag_sets_rate_and_status() {
        let b = budget(1000.0);
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
        assert!((budget(1000.0).available() - 230.0).abs() < 1.0);
        // 6 000/s: 200 ms would be 1 080 + 120; the general pool is capped at 200.
        let b = budget(6000.0);
        assert!((b.available() - 320.0).abs() < 1.0, "{}", b.available());
        // Critical lag, 600/s: 200 ms of 540/s (108) and the reserve's floor (50).
        b.set_lag(60_000);
        assert!((b.available() - 158.0).abs() < 1.0, "{}", b.available());
    }

    #[tokio::test]
    async fn critical_load_sheds_low_severity_and_refunds_the_permit() {
        let b = budget(1000.0);
        b.set_lag(60_000);
        let before = b.available();
        let permit = b.admit_first().await.unwrap();
        let err = b
            .charge_rest(permit, &events(&[Severity::Info]))
            .await
            .unwrap_err();
        assert_eq!(err.reason, "shed_severity");
        assert_eq!(err.retry_after, Duration::from_secs(5));
        assert!((b.available() - before).abs() < 0.5, "permit refunded");
        let permit = b.admit_first().await.unwrap();
        assert!(b
            .charge_rest(permit, &events(&[Severity::Warn]))
            .await
            .is_ok());
        let permit = b.admit_first().await.unwrap();
        let mixed = events(&[Severity::Error, Severity::Debug]);
        assert_eq!(
            b.charge_rest(permit, &mixed).await.unwrap_err().reason,
            "shed_severity"
        );
    }

    #[tokio::test]
    async fn batches_cost_their_events_and_error_keeps_the_reserve() {
        let b = budget(100.0); // general 90/s, reserved 10/s
        let permit = b.admit_first().await.unwrap();
        assert!(b
            .charge_rest(permit, &events(&[Severity::Info; 90]))
            .await
            .is_ok());
        // General is spent: an INFO request only fits the reserve, so it is refused after parsing.
        let permit = b.admit_first().await.unwrap();
        let err = b
            .charge_rest(permit, &events(&[Severity::Info]))
            .await
            .unwrap_err();
        assert_eq!(err.reason, "rate_limited");
        // ERROR still gets through from the reserve.
        for _ in 0..5 {
            let permit = b.admit_first().await.unwrap();
            assert!(b
                .charge_rest(permit, &events(&[Severity::Error]))
                .await
                .is_ok());
        }
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_burst_gets_in_from_a_full_bucket() {
        // 1000/s: general 900/s with a 180-event bucket. A 500-event batch is admitted from
        // the full bucket (into debt), then nothing until the debt is repaid.
        let b = budget(1000.0);
        let permit = b.admit_first().await.unwrap();
        b.charge_rest(permit, &events(&[Severity::Info; 500]))
            .await
            .expect("a full bucket admits a batch above its size");
        let permit = b.admit_first().await.unwrap();
        let err = b
            .charge_rest(permit, &events(&[Severity::Info; 2]))
            .await
            .unwrap_err();
        assert_eq!(err.reason, "rate_limited");
        assert!(
            err.retry_after >= Duration::from_millis(300),
            "{:?}",
            err.retry_after
        );
        // The same at critical load: 100/s, general 90/s, bucket 50.
        let b = budget(1000.0);
        b.set_lag(60_000);
        let permit = b.admit_first().await.unwrap();
        assert!(b
            .charge_rest(permit, &events(&[Severity::Warn; 200]))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn empty_budget_rejects_before_the_body_with_retry_after() {
        let b = budget(10.0); // general 9, reserved 1
        let permit = b.admit_first().await.unwrap();
        b.charge_rest(permit, &events(&[Severity::Info; 9]))
            .await
            .unwrap();
        let permit = b.admit_first().await.unwrap();
        b.charge_rest(permit, &events(&[Severity::Fatal]))
            .await
            .unwrap();
        let err = b.admit_first().await.unwrap_err();
        assert_eq!(err.reason, "rate_limited");
        assert!(err.retry_after > Duration::ZERO);
        assert_eq!(err.limit, 10.0);
    }
}
