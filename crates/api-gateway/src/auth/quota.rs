//! Per-key quotas: a key's `eventsPerSecond` and `bytesPerSecond`, whichever is hit first.
//! Each is a budget of its own ([`SharedBudgets`]: a general pool and the ERROR/FATAL reserve,
//! so a key tagging everything ERROR spends only its own reserve and never another key's),
//! shared by the replicas through Redis, else local at quota ÷ replicas, like the global
//! budget. Checked once the request is parsed (its severities and size known), before the
//! global budget is charged the rest.

use std::time::Duration;

use flow_control::{Burst, Class};

use super::ApiKey;
use crate::redis_budget::RedisBudget;
use crate::shared_budget::{Over, SharedBudgets, Unit};

/// A request over one of its key's quotas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverQuota {
    /// Which quota: events/s or bytes/s.
    pub unit: Unit,
    pub retry_after: Duration,
    /// The key's quota, in `unit` per second.
    pub limit: f64,
    pub remaining: f64,
}

impl OverQuota {
    fn new(unit: Unit, over: Over) -> Self {
        Self {
            unit,
            retry_after: over.retry_after,
            limit: over.limit,
            remaining: over.remaining,
        }
    }
}

/// What a request costs: its events and the bytes of its decoded body.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    pub events: f64,
    pub bytes: f64,
    pub class: Class,
}

/// Every key's budgets, created at a key's first request.
pub struct KeyQuotas {
    events: SharedBudgets,
    bytes: SharedBudgets,
}

impl KeyQuotas {
    /// `events_burst` sizes the events/s buckets, `bytes_burst` the bytes/s ones (no cap in
    /// events, which would be a cap of a few hundred bytes).
    pub fn new(reserved_share: f64, events_burst: Burst, bytes_burst: Burst) -> Self {
        Self {
            events: SharedBudgets::new(reserved_share, events_burst),
            bytes: SharedBudgets::new(reserved_share, bytes_burst),
        }
    }

    /// Charges `cost` to `key`'s quotas, events first: through `redis` when given (up), else
    /// locally at quota ÷ `replicas`. A key without quotas is always admitted. An admitted
    /// events charge is not refunded when the bytes quota then refuses (like a request the
    /// global budget refuses after its key's quota admitted it).
    pub async fn charge(
        &self,
        key: &ApiKey,
        cost: Cost,
        redis: Option<&RedisBudget>,
        replicas: usize,
    ) -> Result<(), OverQuota> {
        if let Some(quota) = key.events_per_second {
            let name = format!("key:{}", key.name);
            self.events
                .charge(&name, quota, cost.events, cost.class, redis, replicas)
                .await
                .map_err(|o| OverQuota::new(Unit::Events, o))?;
        }
        if let Some(quota) = key.bytes_per_second {
            let name = format!("key:{}:bytes", key.name);
            self.bytes
                .charge(&name, quota, cost.bytes, cost.class, redis, replicas)
                .await
                .map_err(|o| OverQuota::new(Unit::Bytes, o))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(events: Option<f64>, bytes: Option<f64>) -> std::sync::Arc<ApiKey> {
        let entry = super::super::keys::Entry {
            name: "a".into(),
            sha256: super::super::keys::hex(&super::super::keys::digest("k")),
            events_per_second: events,
            bytes_per_second: bytes,
            sources: None,
        };
        let file = serde_json::json!({ "keys": [entry] }).to_string();
        super::super::KeySet::parse(&file)
            .unwrap()
            .find("k")
            .unwrap()
    }

    fn quotas() -> KeyQuotas {
        KeyQuotas::new(0.1, Burst::secs(0.2).capped(200.0), Burst::secs(0.2))
    }

    fn cost(events: f64, bytes: f64) -> Cost {
        Cost {
            events,
            bytes,
            class: Class::Normal,
        }
    }

    #[tokio::test]
    async fn whichever_quota_is_hit_first_refuses_and_says_which() {
        let q = quotas();
        // 1 000 events/s, 10 000 bytes/s: ten 1 000-byte events spend the bytes first.
        let k = key(Some(1000.0), Some(10_000.0));
        q.charge(&k, cost(10.0, 10_000.0), None, 1).await.unwrap();
        let over = q.charge(&k, cost(1.0, 100.0), None, 1).await.unwrap_err();
        assert_eq!(over.unit, Unit::Bytes);
        assert_eq!(over.limit, 10_000.0);
        assert!(over.retry_after > Duration::ZERO);
        // Small events spend the events quota first.
        let k = key(Some(10.0), Some(1e9));
        let q = quotas();
        q.charge(&k, cost(10.0, 10.0), None, 1).await.unwrap();
        let over = q.charge(&k, cost(1.0, 1.0), None, 1).await.unwrap_err();
        assert_eq!(over.unit, Unit::Events);
    }

    #[tokio::test]
    async fn without_redis_a_quota_is_divided_by_the_replicas() {
        let q = quotas();
        let k = key(None, Some(10_000.0));
        // 2 replicas: 5 000 bytes/s here, general 4 500/s, bucket 900: a body of 900 fits
        // once, not twice.
        q.charge(&k, cost(1.0, 900.0), None, 2).await.unwrap();
        let over = q.charge(&k, cost(1.0, 900.0), None, 2).await.unwrap_err();
        assert_eq!(over.limit, 5_000.0);
    }

    #[tokio::test]
    async fn a_key_without_quotas_is_always_admitted() {
        let q = quotas();
        let k = key(None, None);
        for _ in 0..100 {
            q.charge(&k, cost(1000.0, 1e7), None, 1).await.unwrap();
        }
    }
}
