//! Per-key quotas: a key's `eventsPerSecond` is its own [`PriorityBudget`] (a general pool and
//! the ERROR/FATAL reserve), so a key tagging everything ERROR spends only its own reserve and
//! never another key's. Shared by the replicas through Redis (one Lua bucket per key and pool,
//! `redis_budget.rs`), else local at quota ÷ replicas, like the global budget. Checked once the
//! request is parsed (its severities known), before the global budget is charged the rest.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flow_control::{Burst, Class, Pool, PriorityBudget};

use super::ApiKey;
use crate::redis_budget::RedisBudget;

/// A request over its key's quota.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverQuota {
    pub retry_after: Duration,
    /// The key's quota, events/s.
    pub limit: f64,
    pub remaining: f64,
}

/// Every key's budget, created at a key's first request.
pub struct KeyQuotas {
    reserved_share: f64,
    burst: Burst,
    local: Mutex<HashMap<String, PriorityBudget>>,
}

impl KeyQuotas {
    pub fn new(reserved_share: f64, burst: Burst) -> Self {
        Self {
            reserved_share,
            burst,
            local: Mutex::new(HashMap::new()),
        }
    }

    /// Charges `cost` events of `class` to `key`'s quota: through `redis` when given (up),
    /// else locally at quota ÷ `replicas`. A key without a quota is always admitted.
    pub async fn charge(
        &self,
        key: &ApiKey,
        cost: f64,
        class: Class,
        redis: Option<&RedisBudget>,
        replicas: usize,
    ) -> Result<(), OverQuota> {
        let Some(quota) = key.events_per_second else {
            return Ok(());
        };
        if let Some(redis) = redis {
            match self
                .charge_shared(redis, &key.name, quota, cost, class)
                .await
            {
                Ok(result) => return result,
                Err(e) => {
                    tracing::warn!(key = %key.name, error = %e, "redis unreachable: the key's quota is local (quota ÷ replicas)");
                }
            }
        }
        let rate = quota / replicas.max(1) as f64;
        self.charge_local(&key.name, rate, cost, class, Instant::now())
    }

    /// The local budget of `name` at `rate`: pure but for the map, clock injected.
    pub fn charge_local(
        &self,
        name: &str,
        rate: f64,
        cost: f64,
        class: Class,
        now: Instant,
    ) -> Result<(), OverQuota> {
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        let budget = local
            .entry(name.to_owned())
            .or_insert_with(|| PriorityBudget::new(rate, self.reserved_share, self.burst, now));
        // A reload or a new replica count changes the rate; the bucket keeps its tokens.
        if budget.rate() != rate {
            budget.set_rate(rate, now);
        }
        budget
            .try_take(cost, class, now)
            .map(|_| ())
            .map_err(|r| OverQuota {
                retry_after: r.retry_after,
                limit: rate,
                remaining: r.remaining,
            })
    }

    async fn charge_shared(
        &self,
        redis: &RedisBudget,
        name: &str,
        quota: f64,
        cost: f64,
        class: Class,
    ) -> Result<Result<(), OverQuota>, crate::redis_budget::RedisError> {
        let pools: &[Pool] = match class {
            Class::Normal => &[Pool::General],
            Class::Protected => &[Pool::General, Pool::Reserved],
        };
        let mut retry_after = Duration::MAX;
        let mut remaining = 0.0;
        for &pool in pools {
            let rate = match pool {
                Pool::General => quota * (1.0 - self.reserved_share),
                Pool::Reserved => quota * self.reserved_share,
            };
            if rate <= 0.0 {
                continue;
            }
            let burst = self.burst.bucket(rate);
            let grant = redis.lease_for_key(name, pool, rate, burst, cost).await?;
            if grant.granted > 0.0 {
                return Ok(Ok(()));
            }
            remaining += grant.remaining.max(0.0);
            let wait = (cost.min(burst) - grant.remaining) / rate;
            retry_after = retry_after.min(Duration::from_secs_f64(wait.max(0.0)));
        }
        Ok(Err(OverQuota {
            retry_after: if retry_after == Duration::MAX {
                Duration::from_secs(1)
            } else {
                retry_after
            },
            limit: quota,
            remaining,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas() -> KeyQuotas {
        KeyQuotas::new(0.1, Burst::secs(0.2).capped(200.0))
    }

    #[test]
    fn a_key_over_its_quota_is_refused_and_another_key_is_not() {
        let q = quotas();
        let t0 = Instant::now();
        // 100/s: general 90/s (bucket 50), reserve 10/s (bucket 10).
        let mut admitted = 0;
        for _ in 0..1000 {
            if q.charge_local("a", 100.0, 1.0, Class::Protected, t0)
                .is_ok()
            {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 60, "both of a's buckets, then nothing");
        let err = q
            .charge_local("a", 100.0, 1.0, Class::Normal, t0)
            .unwrap_err();
        assert!(err.retry_after > Duration::ZERO && err.retry_after <= Duration::from_millis(20));
        assert_eq!(err.limit, 100.0);
        // b's ERROR events have b's whole budget, reserve included.
        for _ in 0..60 {
            q.charge_local("b", 100.0, 1.0, Class::Protected, t0)
                .unwrap();
        }
        // One second later a has a second's worth again, no more.
        let t1 = t0 + Duration::from_secs(1);
        let mut admitted = 0;
        for _ in 0..1000 {
            if q.charge_local("a", 100.0, 1.0, Class::Protected, t1)
                .is_ok()
            {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 60);
    }

    #[test]
    fn a_keys_reserve_is_kept_from_its_own_normal_events() {
        let q = quotas();
        let t0 = Instant::now();
        q.charge_local("a", 100.0, 50.0, Class::Normal, t0).unwrap();
        assert!(q.charge_local("a", 100.0, 1.0, Class::Normal, t0).is_err());
        for _ in 0..10 {
            q.charge_local("a", 100.0, 1.0, Class::Protected, t0)
                .unwrap();
        }
    }

    #[test]
    fn a_new_rate_applies_to_the_existing_bucket() {
        let q = quotas();
        let t0 = Instant::now();
        q.charge_local("a", 100.0, 50.0, Class::Normal, t0).unwrap();
        // Halved (a second replica appeared): the general bucket now holds 45, not 50.
        let t1 = t0 + Duration::from_secs(1);
        q.charge_local("a", 50.0, 45.0, Class::Normal, t1).unwrap();
        let err = q
            .charge_local("a", 50.0, 1.0, Class::Normal, t1)
            .unwrap_err();
        assert_eq!(err.limit, 50.0);
    }
}
