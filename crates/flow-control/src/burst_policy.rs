//! Which burst applies at which load: a healthy pipeline admits a whole second of the rate at
//! once (the Day 62 contract: at low lag every request of a spike is accepted), while an
//! overloaded one keeps a small bucket, so an overload's first moment stays near the rate and
//! the tail latency of what is admitted stays low (P5; `bench/optimisations.md`).

use crate::priority::Burst;
use crate::rate_policy::LoadStatus;

/// The bucket size rule for each load status.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstPolicy {
    /// While [`LoadStatus::Healthy`] (lag below `lag_normal`).
    healthy: Burst,
    /// While degraded or critical.
    loaded: Burst,
}

impl BurstPolicy {
    /// `healthy` below `lag_normal`, `loaded` from there on.
    pub fn new(healthy: Burst, loaded: Burst) -> Self {
        Self { healthy, loaded }
    }

    /// The same burst whatever the load.
    pub fn uniform(burst: Burst) -> Self {
        Self::new(burst, burst)
    }

    /// The burst in force at `status`.
    pub fn for_status(&self, status: LoadStatus) -> Burst {
        match status {
            LoadStatus::Healthy => self.healthy,
            LoadStatus::Degraded | LoadStatus::Critical => self.loaded,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::{Class, PriorityBudget, RatePolicy};

    /// The gateway's defaults: 1 s of the rate while healthy, 200 ms capped at 200 events
    /// under load.
    fn policy() -> BurstPolicy {
        BurstPolicy::new(Burst::secs(1.0), Burst::secs(0.2).capped(200.0))
    }

    /// Single events admitted out of `n` offered at the same instant.
    fn admitted_at_once(b: &mut PriorityBudget, n: usize, now: Instant) -> usize {
        (0..n)
            .filter(|_| b.try_take(1.0, Class::Normal, now).is_ok())
            .count()
    }

    #[test]
    fn a_healthy_pipeline_admits_a_second_of_the_rate_at_once() {
        // The Java original's test: 500 concurrent requests to an idle gateway at 1 000/s.
        let t0 = Instant::now();
        let burst = policy().for_status(LoadStatus::Healthy);
        let mut b = PriorityBudget::new(1000.0, 0.1, burst, t0);
        assert_eq!(admitted_at_once(&mut b, 500, t0), 500);
        // The general pool holds 900 (1 s of 900/s): 400 more, then nothing.
        assert_eq!(admitted_at_once(&mut b, 1000, t0), 400);
        // With the loaded burst the same spike got 180 (200 ms of 900/s), not 500.
        let small = policy().for_status(LoadStatus::Degraded);
        let mut b = PriorityBudget::new(1000.0, 0.1, small, t0);
        assert_eq!(admitted_at_once(&mut b, 500, t0), 180);
    }

    #[test]
    fn the_bucket_shrinks_when_lag_turns_critical_and_grows_back_when_healthy() {
        let rates = RatePolicy::default();
        let bursts = policy();
        let t0 = Instant::now();
        let status = rates.status_for(0);
        let mut b = PriorityBudget::new(rates.rate_for(0), 0.1, bursts.for_status(status), t0);
        assert!((b.available(t0) - 1000.0).abs() < 1e-9, "900 + 100");
        // Critical: 100/s, general 90/s (bucket max(18, 50) = 50), reserve 10/s (bucket 10).
        let lag = 60_000;
        let status = rates.status_for(lag);
        assert_eq!(status, LoadStatus::Critical);
        b.reconfigure(rates.rate_for(lag), bursts.for_status(status), t0);
        assert!((b.available(t0) - 60.0).abs() < 1e-9, "{}", b.available(t0));
        assert_eq!(admitted_at_once(&mut b, 500, t0), 50);
        // Healthy again: the bucket may hold a second of the rate, refilled at the rate.
        let t1 = t0 + Duration::from_secs(5);
        b.reconfigure(
            rates.rate_for(0),
            bursts.for_status(rates.status_for(0)),
            t1,
        );
        let t2 = t1 + Duration::from_secs(2);
        assert_eq!(admitted_at_once(&mut b, 2000, t2), 900);
    }

    #[test]
    fn uniform_is_the_same_burst_at_every_status() {
        let burst = Burst::secs(0.2).capped(200.0);
        let p = BurstPolicy::uniform(burst);
        for s in [
            LoadStatus::Healthy,
            LoadStatus::Degraded,
            LoadStatus::Critical,
        ] {
            assert_eq!(p.for_status(s), burst);
        }
    }
}
