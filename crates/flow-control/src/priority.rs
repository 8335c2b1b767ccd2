//! The severity-aware budget behind the HTTP limiter: a general pool for everything and a
//! reserved share that only ERROR/FATAL events may use, so they still get through while
//! DEBUG/INFO are being shed.

use std::time::{Duration, Instant};

use crate::token_bucket::TokenBucket;

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Any event.
    Normal,
    /// ERROR and FATAL events: may also use the reserved share.
    Protected,
}

/// Which pool paid for an admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    General,
    Reserved,
}

/// A refused admission.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rejection {
    pub retry_after: Duration,
    /// Permits left (both pools, not negative).
    pub remaining: f64,
}

/// Two token buckets splitting one rate.
#[derive(Debug, Clone)]
pub struct PriorityBudget {
    general: TokenBucket,
    reserved: TokenBucket,
    reserved_share: f64,
    burst_secs: f64,
    rate: f64,
}

impl PriorityBudget {
    /// `rate` events/s, `reserved_share` (0..1) of it kept for protected events, each pool's
    /// burst = its rate × `burst_secs`.
    pub fn new(rate: f64, reserved_share: f64, burst_secs: f64, now: Instant) -> Self {
        let share = reserved_share.clamp(0.0, 1.0);
        let (g, r) = split(rate, share);
        Self {
            general: TokenBucket::new(g, g * burst_secs, now),
            reserved: TokenBucket::new(r, r * burst_secs, now),
            reserved_share: share,
            burst_secs,
            rate,
        }
    }

    /// Changes the total rate, keeping the split and burst length.
    pub fn set_rate(&mut self, rate: f64, now: Instant) {
        let (g, r) = split(rate, self.reserved_share);
        self.general.set_rate(g, g * self.burst_secs, now);
        self.reserved.set_rate(r, r * self.burst_secs, now);
        self.rate = rate;
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Permits available in both pools (debt counts as zero).
    pub fn available(&mut self, now: Instant) -> f64 {
        self.general.available(now).max(0.0) + self.reserved.available(now).max(0.0)
    }

    /// Admits `cost` events of `class`, saying which pool paid.
    pub fn try_take(&mut self, cost: f64, class: Class, now: Instant) -> Result<Pool, Rejection> {
        let general = match self.general.try_take(cost, now) {
            Ok(()) => return Ok(Pool::General),
            Err(deficit) => deficit,
        };
        if class == Class::Normal || self.reserved.burst() <= 0.0 {
            return Err(Rejection {
                retry_after: general.retry_after,
                remaining: self.available(now),
            });
        }
        match self.reserved.try_take(cost, now) {
            Ok(()) => Ok(Pool::Reserved),
            Err(reserved) => Err(Rejection {
                retry_after: general.retry_after.min(reserved.retry_after),
                remaining: self.available(now),
            }),
        }
    }

    /// Refunds an admission that was rejected later.
    pub fn give_back(&mut self, cost: f64, pool: Pool, now: Instant) {
        match pool {
            Pool::General => self.general.give_back(cost, now),
            Pool::Reserved => self.reserved.give_back(cost, now),
        }
    }
}

fn split(rate: f64, share: f64) -> (f64, f64) {
    let reserved = rate * share;
    (rate - reserved, reserved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_traffic_cannot_touch_the_reserve() {
        let t0 = Instant::now();
        let mut b = PriorityBudget::new(100.0, 0.1, 1.0, t0);
        assert!((b.available(t0) - 100.0).abs() < 1e-9);
        for _ in 0..90 {
            assert_eq!(b.try_take(1.0, Class::Normal, t0), Ok(Pool::General));
        }
        let rej = b.try_take(1.0, Class::Normal, t0).unwrap_err();
        assert!((rej.remaining - 10.0).abs() < 1e-9);
        assert!(rej.retry_after > Duration::ZERO);
        for _ in 0..10 {
            assert_eq!(b.try_take(1.0, Class::Protected, t0), Ok(Pool::Reserved));
        }
        assert!(b.try_take(1.0, Class::Protected, t0).is_err());
    }

    #[test]
    fn protected_keep_their_share_under_saturation() {
        let t0 = Instant::now();
        let mut b = PriorityBudget::new(100.0, 0.1, 1.0, t0);
        let (mut normal, mut protected) = (0u32, 0u32);
        // 10 simulated seconds, both classes asking every millisecond.
        for tick in 0..10_000u64 {
            let now = t0 + Duration::from_millis(tick);
            if b.try_take(1.0, Class::Normal, now).is_ok() {
                normal += 1;
            }
            if b.try_take(1.0, Class::Protected, now).is_ok() {
                protected += 1;
            }
        }
        assert!(protected >= 100, "protected got {protected}");
        let total = normal + protected;
        assert!(total <= 100 * 10 + 100 + 1, "admitted {total}");
        assert!(total >= 100 * 10 - 2, "admitted only {total}");
    }

    #[test]
    fn set_rate_keeps_the_split() {
        let t0 = Instant::now();
        let mut b = PriorityBudget::new(1000.0, 0.1, 1.0, t0);
        b.set_rate(100.0, t0);
        assert_eq!(b.rate(), 100.0);
        assert!((b.available(t0) - 100.0).abs() < 1e-9);
        for _ in 0..90 {
            b.try_take(1.0, Class::Normal, t0).unwrap();
        }
        assert!(b.try_take(1.0, Class::Normal, t0).is_err());
        assert_eq!(b.try_take(1.0, Class::Protected, t0), Ok(Pool::Reserved));
    }

    #[test]
    fn refund_goes_back_to_the_pool_that_paid() {
        let t0 = Instant::now();
        let mut b = PriorityBudget::new(10.0, 0.5, 1.0, t0);
        for _ in 0..5 {
            b.try_take(1.0, Class::Normal, t0).unwrap();
        }
        let pool = b.try_take(1.0, Class::Protected, t0).unwrap();
        assert_eq!(pool, Pool::Reserved);
        b.give_back(1.0, pool, t0);
        assert!((b.available(t0) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn zero_share_means_no_reserve() {
        let t0 = Instant::now();
        let mut b = PriorityBudget::new(10.0, 0.0, 1.0, t0);
        for _ in 0..10 {
            b.try_take(1.0, Class::Protected, t0).unwrap();
        }
        assert!(b.try_take(1.0, Class::Protected, t0).is_err());
    }
}
