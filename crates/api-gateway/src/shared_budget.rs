//! Named budgets shared by the replicas through Redis, each a [`PriorityBudget`] (a general
//! pool and the ERROR/FATAL reserve): one Lua bucket per name and pool (`redis_budget.rs`), and
//! locally at rate ÷ replicas while Redis is down or disabled. A key's events/s and bytes/s
//! quotas (`auth/quota.rs`) and the global bytes/s budget (`backpressure/bytes.rs`) are such
//! budgets; they cost one Redis trip per request (the global event budget leases instead).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flow_control::{Burst, Class, Pool, PriorityBudget};

use crate::redis_budget::{RedisBudget, RedisError};

/// What a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Events,
    Bytes,
}

impl Unit {
    /// `events` or `bytes`: the 429 body's `budget` and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Events => "events",
            Unit::Bytes => "bytes",
        }
    }
}

/// A charge over its budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Over {
    pub retry_after: Duration,
    /// The budget's rate, in its unit per second.
    pub limit: f64,
    pub remaining: f64,
}

/// Budgets by name, created at a name's first charge.
pub struct SharedBudgets {
    reserved_share: f64,
    burst: Burst,
    local: Mutex<HashMap<String, PriorityBudget>>,
}

impl SharedBudgets {
    pub fn new(reserved_share: f64, burst: Burst) -> Self {
        Self {
            reserved_share,
            burst,
            local: Mutex::new(HashMap::new()),
        }
    }

    /// Charges `cost` of `class` to the budget `name` at `rate`/s: through `redis` when given
    /// (up), else locally at rate ÷ `replicas`. `name` is part of a Redis key: never a secret.
    pub async fn charge(
        &self,
        name: &str,
        rate: f64,
        cost: f64,
        class: Class,
        redis: Option<&RedisBudget>,
        replicas: usize,
    ) -> Result<(), Over> {
        if let Some(redis) = redis {
            match self.charge_shared(redis, name, rate, cost, class).await {
                Ok(result) => return result,
                Err(e) => {
                    tracing::warn!(budget = %name, error = %e, "redis unreachable: the budget is local (rate ÷ replicas)");
                }
            }
        }
        let local_rate = rate / replicas.max(1) as f64;
        self.charge_local(name, local_rate, cost, class, Instant::now())
    }

    /// The local budget of `name` at `rate`: pure but for the map, clock injected.
    pub fn charge_local(
        &self,
        name: &str,
        rate: f64,
        cost: f64,
        class: Class,
        now: Instant,
    ) -> Result<(), Over> {
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        let budget = local
            .entry(name.to_owned())
            .or_insert_with(|| PriorityBudget::new(rate, self.reserved_share, self.burst, now));
        // A reload, a new replica count or a new lag changes the rate; the bucket keeps its
        // tokens.
        if budget.rate() != rate {
            budget.set_rate(rate, now);
        }
        budget
            .try_take(cost, class, now)
            .map(|_| ())
            .map_err(|r| Over {
                retry_after: r.retry_after,
                limit: rate,
                remaining: r.remaining,
            })
    }

    async fn charge_shared(
        &self,
        redis: &RedisBudget,
        name: &str,
        rate: f64,
        cost: f64,
        class: Class,
    ) -> Result<Result<(), Over>, RedisError> {
        let pools: &[Pool] = match class {
            Class::Normal => &[Pool::General],
            Class::Protected => &[Pool::General, Pool::Reserved],
        };
        let mut retry_after = Duration::MAX;
        let mut remaining = 0.0;
        for &pool in pools {
            let pool_rate = match pool {
                Pool::General => rate * (1.0 - self.reserved_share),
                Pool::Reserved => rate * self.reserved_share,
            };
            if pool_rate <= 0.0 {
                continue;
            }
            let burst = self.burst.bucket(pool_rate);
            let grant = redis
                .lease_named(name, pool, pool_rate, burst, cost)
                .await?;
            if grant.granted > 0.0 {
                return Ok(Ok(()));
            }
            remaining += grant.remaining.max(0.0);
            let wait = (cost.min(burst) - grant.remaining) / pool_rate;
            retry_after = retry_after.min(Duration::from_secs_f64(wait.max(0.0)));
        }
        Ok(Err(Over {
            retry_after: if retry_after == Duration::MAX {
                Duration::from_secs(1)
            } else {
                retry_after
            },
            limit: rate,
            remaining,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets() -> SharedBudgets {
        SharedBudgets::new(0.1, Burst::secs(0.2).capped(200.0))
    }

    #[test]
    fn a_name_over_its_budget_is_refused_and_another_name_is_not() {
        let q = budgets();
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
    fn the_reserve_is_kept_from_normal_charges() {
        let q = budgets();
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
        let q = budgets();
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

    #[test]
    fn a_byte_budget_admits_a_body_above_its_bucket_once_then_waits_for_the_debt() {
        // 10 000 bytes/s: general 9 000/s, bucket 200 ms = 1 800 bytes (no event cap).
        let q = SharedBudgets::new(0.1, Burst::secs(0.2));
        let t0 = Instant::now();
        q.charge_local("bytes", 10_000.0, 20_000.0, Class::Normal, t0)
            .expect("a full bucket admits a body above its size");
        let err = q
            .charge_local("bytes", 10_000.0, 100.0, Class::Normal, t0)
            .unwrap_err();
        // Debt of 18 200 bytes plus 100 at 9 000/s.
        assert!(
            err.retry_after >= Duration::from_millis(2_000),
            "{:?}",
            err.retry_after
        );
        let later = t0 + err.retry_after;
        assert!(q
            .charge_local("bytes", 10_000.0, 100.0, Class::Normal, later)
            .is_ok());
    }
}
