//! The bytes/s budget beside the events/s one (`RATE_MAX_BYTES`): a request is charged the
//! decoded (decompressed) size of its body, and refused by whichever budget is hit first. Its
//! rate follows the lag like the event rate (the same fraction of its maximum), and it is
//! shared through Redis, else local at rate ÷ replicas, like every [`SharedBudgets`] budget.
//! Off (no Redis trip, no bucket) while `RATE_MAX_BYTES` is 0.

use flow_control::Class;

use super::{Backpressure, Limited, RefusalReason};
use crate::metrics;
use crate::shared_budget::Over;

/// The budget's name in Redis (`{prefix}:bytes:bucket:{pool}`).
const NAME: &str = "bytes";

impl Backpressure {
    /// Bytes/s admitted now, None without a bytes budget: `RATE_MAX_BYTES` scaled by the
    /// event rate's share of `RATE_MAX`, so a lagging consumer slows bytes as much as events.
    pub fn bytes_rate(&self) -> Option<f64> {
        let max = self.cfg.rate_max_bytes;
        if max <= 0.0 {
            return None;
        }
        let (rate, _) = self.rate();
        Some(scaled(max, rate, self.cfg.policy.rate_max))
    }

    /// Charges `bytes` of `class` to the bytes budget (Ok when there is none).
    pub(super) async fn charge_bytes(&self, bytes: usize, class: Class) -> Result<(), Limited> {
        let Some(rate) = self.bytes_rate() else {
            return Ok(());
        };
        let charged = self
            .bytes
            .charge(
                NAME,
                rate,
                bytes as f64,
                class,
                self.use_redis(),
                self.replicas(),
            )
            .await;
        charged.map_err(|over: Over| {
            let (_, status) = self.rate();
            Limited {
                reason: RefusalReason::BytesLimited,
                retry_after: over.retry_after,
                limit: over.limit,
                remaining: over.remaining,
                status,
            }
        })
    }
}

/// `max` scaled like the event rate: `max × rate ÷ rate_max`.
fn scaled(max: f64, rate: f64, rate_max: f64) -> f64 {
    if rate_max <= 0.0 {
        return max;
    }
    max * rate / rate_max
}

/// Publishes the bytes rate beside the events rate.
pub(super) fn publish(rate: Option<f64>) {
    if let Some(rate) = rate {
        metrics::backpressure_bytes_rate(rate);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use flow_control::{Burst, BurstPolicy, RatePolicy};
    use log_event::Severity;

    use super::super::BackpressureConfig;
    use super::*;

    fn backpressure(rate_max_bytes: f64) -> std::sync::Arc<Backpressure> {
        Backpressure::new(
            BackpressureConfig {
                policy: RatePolicy::new(1000.0, 100.0, 10_000, 50_000).unwrap(),
                shed_below: Severity::Warn,
                reserved_share: 0.1,
                burst: BurstPolicy::uniform(Burst::secs(0.2).capped(200.0)),
                rate_max_bytes,
                bytes_burst: Burst::secs(0.2),
                shed_retry: Duration::from_secs(5),
            },
            None,
        )
    }

    #[test]
    fn the_bytes_rate_follows_the_lag_like_the_event_rate() {
        let b = backpressure(1_000_000.0);
        assert_eq!(b.bytes_rate(), Some(1_000_000.0));
        b.set_lag(30_000); // events 550/s of 1 000
        assert!((b.bytes_rate().unwrap() - 550_000.0).abs() < 1e-6);
        b.set_lag(60_000); // events 100/s
        assert!((b.bytes_rate().unwrap() - 100_000.0).abs() < 1e-6);
        assert_eq!(backpressure(0.0).bytes_rate(), None, "off");
    }

    #[tokio::test]
    async fn big_bodies_are_refused_by_bytes_while_events_remain() {
        // 100 000 bytes/s: general 90 000/s, a 200 ms bucket of 18 000 bytes.
        let b = backpressure(100_000.0);
        b.charge_bytes(18_000, Class::Normal).await.unwrap();
        let l = b.charge_bytes(1_000, Class::Normal).await.unwrap_err();
        assert_eq!(l.reason, RefusalReason::BytesLimited);
        assert_eq!(l.reason.budget().as_str(), "bytes");
        assert_eq!(l.limit, 100_000.0);
        assert!(l.retry_after > Duration::ZERO);
        assert!(b.available() > 100.0, "the event budget is untouched");
        // Without a bytes budget nothing is charged.
        let off = backpressure(0.0);
        for _ in 0..100 {
            off.charge_bytes(1 << 20, Class::Normal).await.unwrap();
        }
    }

    #[test]
    fn scaling_with_a_zero_maximum_keeps_the_bytes_rate() {
        assert_eq!(scaled(5.0, 0.0, 0.0), 5.0);
        assert_eq!(scaled(5.0, 50.0, 100.0), 2.5);
    }
}
