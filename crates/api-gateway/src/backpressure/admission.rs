//! Which requests get in: the first permit before the body is read, the rest of a batch once
//! it is parsed, and shedding of low severities under critical load.

use std::time::Duration;

use flow_control::{Class, LoadStatus, Pool};
use log_event::{LogEvent, Severity};

use super::{Backpressure, Limited, RefusalReason};
use crate::metrics;
use crate::shared_budget::Unit;

/// The first permit of a request, taken before its body is read.
#[derive(Debug, Clone, Copy)]
pub struct Permit {
    pool: Pool,
}

impl Backpressure {
    /// Takes the first permit before the body is read. The request's severity is not known
    /// yet, so a request that only fits the reserved share is let in conditionally and
    /// charged back in [`Backpressure::charge_rest`] unless it is ERROR/FATAL.
    pub async fn admit_first(&self) -> Result<Permit, Limited> {
        self.take(1.0, Class::Protected)
            .await
            .map(|pool| Permit { pool })
            .map_err(|l| self.count_rejection(l))
    }

    /// Charges the rest of a parsed request: one permit was taken already. `body_bytes` (the
    /// decoded body's size) goes to the bytes budget first, so a refusal by bytes spends no
    /// events; a refusal by events after that does not refund the bytes.
    pub async fn charge_rest(
        &self,
        permit: Permit,
        events: &[LogEvent],
        body_bytes: usize,
    ) -> Result<(), Limited> {
        // No event (an empty OTLP export): nothing to shed, charged as protected.
        let lowest = events
            .iter()
            .map(|e| e.severity)
            .min()
            .unwrap_or(Severity::Fatal);
        let all_protected = events.iter().all(|e| e.severity.is_protected());
        let class = self.by_severity(permit, lowest, all_protected)?;
        if let Err(l) = self.charge_bytes(body_bytes, class).await {
            self.give_back(1.0, permit.pool);
            return Err(self.count_rejection(l));
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

    /// For a single event, before its body is parsed: the refusals [`Self::charge_rest`] would
    /// make from its severity alone. `severity` (a cheap read of the body) is called only when
    /// one of them is possible: a permit from the reserved share, or critical load. Under
    /// overload most requests are refused this way, and a refusal then costs no full parse.
    /// The permit is given back on refusal.
    pub fn screen(
        &self,
        permit: Permit,
        severity: impl FnOnce() -> Option<Severity>,
    ) -> Result<(), Limited> {
        if permit.pool != Pool::Reserved && self.rate().1 != LoadStatus::Critical {
            return Ok(());
        }
        match severity() {
            Some(severity) => self
                .by_severity(permit, severity, severity.is_protected())
                .map(|_| ()),
            None => Ok(()),
        }
    }

    /// The refusals that depend on the severities only (`lowest` of them; `all_protected`:
    /// every one ERROR or above): shedding below `SHED_BELOW` under critical load, and a
    /// permit from the reserved share for a request that is not all protected. The permit is
    /// given back on refusal; else the class the request is charged as.
    fn by_severity(
        &self,
        permit: Permit,
        lowest: Severity,
        all_protected: bool,
    ) -> Result<Class, Limited> {
        let (rate, status) = self.rate();
        if status == LoadStatus::Critical && lowest < self.cfg.shed_below {
            self.give_back(1.0, permit.pool);
            return Err(self.count_rejection(Limited {
                reason: RefusalReason::ShedSeverity,
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
                reason: RefusalReason::RateLimited,
                retry_after: Duration::from_secs(1),
                limit: rate,
                remaining: self.available(),
                status,
            }));
        }
        Ok(class)
    }

    /// Gives the first permit back: the request was refused before the rest was charged
    /// (its key's quota).
    pub fn refund(&self, permit: Permit) {
        self.give_back(1.0, permit.pool);
    }

    /// A refusal by the caller's key quota (events or bytes), in the terms of every other 429.
    pub fn over_key_quota(&self, over: crate::auth::quota::OverQuota) -> Limited {
        let (_, status) = self.rate();
        let reason = match over.unit {
            Unit::Events => RefusalReason::KeyQuota,
            Unit::Bytes => RefusalReason::KeyBytesQuota,
        };
        self.count_rejection(Limited {
            reason,
            retry_after: over.retry_after,
            limit: over.limit,
            remaining: over.remaining,
            status,
        })
    }

    /// The Redis budget while it is in use (None without Redis or while it is down): key
    /// quotas follow the global budget's fail-over.
    pub fn shared_redis(&self) -> Option<&crate::redis_budget::RedisBudget> {
        self.use_redis()
    }

    fn count_rejection(&self, l: Limited) -> Limited {
        metrics::backpressure_refused(l.reason);
        l
    }
}

#[cfg(test)]
mod tests {
    use log_event::Severity;

    use super::super::tests::backpressure;
    use super::*;

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
    async fn critical_load_sheds_low_severity_and_refunds_the_permit() {
        let b = backpressure(1000.0);
        b.set_lag(60_000);
        let before = b.available();
        let permit = b.admit_first().await.unwrap();
        let err = b
            .charge_rest(permit, &events(&[Severity::Info]), 0)
            .await
            .unwrap_err();
        assert_eq!(err.reason.as_str(), "shed_severity");
        assert_eq!(err.retry_after, Duration::from_secs(5));
        assert!((b.available() - before).abs() < 0.5, "permit refunded");
        let permit = b.admit_first().await.unwrap();
        assert!(b
            .charge_rest(permit, &events(&[Severity::Warn]), 0)
            .await
            .is_ok());
        let permit = b.admit_first().await.unwrap();
        let mixed = events(&[Severity::Error, Severity::Debug]);
        assert_eq!(
            b.charge_rest(permit, &mixed, 0)
                .await
                .unwrap_err()
                .reason
                .as_str(),
            "shed_severity"
        );
    }

    #[tokio::test]
    async fn batches_cost_their_events_and_error_keeps_the_reserve() {
        let b = backpressure(100.0); // general 90/s, reserved 10/s
        let permit = b.admit_first().await.unwrap();
        assert!(b
            .charge_rest(permit, &events(&[Severity::Info; 90]), 0)
            .await
            .is_ok());
        // General is spent: an INFO request only fits the reserve, so it is refused after parsing.
        let permit = b.admit_first().await.unwrap();
        let err = b
            .charge_rest(permit, &events(&[Severity::Info]), 0)
            .await
            .unwrap_err();
        assert_eq!(err.reason.as_str(), "rate_limited");
        // ERROR still gets through from the reserve.
        for _ in 0..5 {
            let permit = b.admit_first().await.unwrap();
            assert!(b
                .charge_rest(permit, &events(&[Severity::Error]), 0)
                .await
                .is_ok());
        }
    }

    #[tokio::test]
    async fn screen_refuses_from_the_severity_alone_and_only_when_it_can() {
        // 100/s: general 90/s, reserved 10/s. A general permit at normal load: the body is
        // not even looked at.
        let b = backpressure(100.0);
        let permit = b.admit_first().await.unwrap();
        b.screen(permit, || panic!("sniffed without need")).unwrap();
        b.charge_rest(permit, &events(&[Severity::Info; 90]), 0)
            .await
            .unwrap();
        // Only the reserve has room: INFO is refused before its parse, the permit given back.
        let before = b.available();
        let permit = b.admit_first().await.unwrap();
        let err = b.screen(permit, || Some(Severity::Info)).unwrap_err();
        assert_eq!(err.reason.as_str(), "rate_limited");
        assert!((b.available() - before).abs() < 0.5, "permit given back");
        // ERROR, or a body whose severity cannot be read, goes on to the full parse.
        let permit = b.admit_first().await.unwrap();
        b.screen(permit, || Some(Severity::Error)).unwrap();
        b.screen(permit, || None).unwrap();
        // Critical load sheds below WARN, whatever the pool.
        let b = backpressure(1000.0);
        b.set_lag(60_000);
        let permit = b.admit_first().await.unwrap();
        let err = b.screen(permit, || Some(Severity::Debug)).unwrap_err();
        assert_eq!(err.reason.as_str(), "shed_severity");
        let permit = b.admit_first().await.unwrap();
        b.screen(permit, || Some(Severity::Warn)).unwrap();
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_burst_gets_in_from_a_full_bucket() {
        // 1000/s: general 900/s with a 180-event bucket. A 500-event batch is admitted from
        // the full bucket (into debt), then nothing until the debt is repaid.
        let b = backpressure(1000.0);
        let permit = b.admit_first().await.unwrap();
        b.charge_rest(permit, &events(&[Severity::Info; 500]), 0)
            .await
            .expect("a full bucket admits a batch above its size");
        let permit = b.admit_first().await.unwrap();
        let err = b
            .charge_rest(permit, &events(&[Severity::Info; 2]), 0)
            .await
            .unwrap_err();
        assert_eq!(err.reason.as_str(), "rate_limited");
        assert!(
            err.retry_after >= Duration::from_millis(300),
            "{:?}",
            err.retry_after
        );
        // The same at critical load: 100/s, general 90/s, bucket 50.
        let b = backpressure(1000.0);
        b.set_lag(60_000);
        let permit = b.admit_first().await.unwrap();
        assert!(b
            .charge_rest(permit, &events(&[Severity::Warn; 200]), 0)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn empty_budget_rejects_before_the_body_with_retry_after() {
        let b = backpressure(10.0); // general 9, reserved 1
        let permit = b.admit_first().await.unwrap();
        b.charge_rest(permit, &events(&[Severity::Info; 9]), 0)
            .await
            .unwrap();
        let permit = b.admit_first().await.unwrap();
        b.charge_rest(permit, &events(&[Severity::Fatal]), 0)
            .await
            .unwrap();
        let err = b.admit_first().await.unwrap_err();
        assert_eq!(err.reason.as_str(), "rate_limited");
        assert!(err.retry_after > Duration::ZERO);
        assert_eq!(err.limit, 10.0);
    }
}
