//! Where permits come from: leased from the Redis-shared bucket while Redis is up, from the
//! local budget otherwise; the fail-over between the two and the replica heartbeat.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_control::{Class, Pool, PriorityBudget};

use super::{pool_index, Backpressure, Limited, RefusalReason};
use crate::metrics;
use crate::redis_budget::{RedisBudget, RedisError};

/// A gateway missing from the heartbeat set this long no longer counts as a replica.
const HEARTBEAT_TTL: Duration = Duration::from_secs(10);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

impl Backpressure {
    pub(super) fn use_redis(&self) -> Option<&RedisBudget> {
        self.redis
            .as_ref()
            .filter(|_| self.redis_up.load(Ordering::Relaxed))
    }

    pub(super) fn give_back(&self, cost: f64, pool: Pool) {
        let mut st = self.lock();
        if self.use_redis().is_some() {
            st.leased[pool_index(pool)] += cost;
        } else {
            st.local.give_back(cost, pool, Instant::now());
        }
    }

    pub(super) async fn take(&self, cost: f64, class: Class) -> Result<Pool, Limited> {
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
            reason: RefusalReason::RateLimited,
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
            reason: RefusalReason::RateLimited,
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

    /// Spends `cost` leased permits of pool `i` if there are that many.
    fn spend_leased(&self, i: usize, cost: f64) -> bool {
        let mut st = self.lock();
        let enough = st.leased[i] >= cost;
        if enough {
            st.leased[i] -= cost;
        }
        enough
    }

    /// Spends leased permits, leasing more from Redis when short. Ok(false) = no permits.
    /// One trip per pool at a time: without that, requests arriving together each leased
    /// their need plus a slice, drained the cluster bucket between them and refused one
    /// another well under the rate (9 of 16 simultaneous batches on a fresh gateway).
    async fn take_leased(&self, redis: &RedisBudget, cost: f64, pool: Pool) -> Result<bool, ()> {
        let i = pool_index(pool);
        if self.spend_leased(i, cost) {
            return Ok(true);
        }
        let _trip = self.leasing[i].lock().await;
        // The trip this request waited for may have leased enough for it too; or failed.
        if self.spend_leased(i, cost) {
            return Ok(true);
        }
        if !self.redis_up.load(Ordering::Relaxed) {
            return Err(());
        }
        let (missing, rate, burst) = {
            let st = self.lock();
            let burst = self.cfg.burst.for_status(st.status);
            (cost - st.leased[i].max(0.0), st.rate, burst)
        };
        let pool_rate = self.pool_rate(rate, pool);
        if pool_rate <= 0.0 {
            return Ok(false);
        }
        // Lease up to 5% of the rate per trip so most requests cost no round-trip.
        let extra = (pool_rate * 0.05).max(1.0);
        match redis
            .lease(pool, pool_rate, burst.bucket(pool_rate), missing, extra)
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

    fn redis_failed(&self, e: &RedisError) {
        if self.redis_up.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %e, "redis unreachable: using the local budget (rate ÷ replicas)");
            metrics::redis_up(false);
            // Leases already held stay usable by the local bucket's refill; start fresh.
            let now = Instant::now();
            let replicas = self.replicas.load(Ordering::Relaxed).max(1);
            let mut st = self.lock();
            let rate = st.rate / replicas as f64;
            let burst = self.cfg.burst.for_status(st.status);
            st.local = PriorityBudget::new(rate, self.cfg.reserved_share, burst, now);
        }
    }

    /// Heartbeat outcome: replicas seen, or the error.
    fn heartbeat(&self, result: Result<usize, RedisError>) {
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

    /// The Redis client, for the heartbeat task and leaving the replica set on shutdown.
    pub fn redis(&self) -> Option<&RedisBudget> {
        self.redis.as_ref()
    }
}

/// Announces this gateway in Redis every 2 s, until the returned handle is aborted: the
/// replica count sizes the local fallback, and an answer after a failure brings Redis back.
pub fn spawn_redis_heartbeat(
    redis: RedisBudget,
    backpressure: Arc<Backpressure>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            backpressure.heartbeat(redis.heartbeat(HEARTBEAT_TTL).await);
            tokio::time::sleep(HEARTBEAT_EVERY).await;
        }
    })
}
