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
    /// The `1 - reserved_share` part of the rate, open to every class.
    General,
    /// The `reserved_share` part of the rate, open to [`Class::Protected`] only.
    Reserved,
}

/// A refused admission.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rejection {
    /// Time until the pool that would admit this class soonest has enough tokens.
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
    burst: Burst,
    rate: f64,
}

impl PriorityBudget {
    /// `rate` events/s, `reserved_share` (0..=1, clamped; NaN counts as 0) of it kept for
    /// protected events, each pool's bucket = [`Burst::bucket`] of its rate. Both pools start
    /// full.
    pub fn new(rate: f64, reserved_share: f64, burst: Burst, now: Instant) -> Self {
        // clamp() passes NaN through.
        let share = if reserved_share.is_nan() {
            0.0
        } else {
            reserved_share.clamp(0.0, 1.0)
        };
        let (g, r) = split(rate, share);
        Self {
            general: TokenBucket::new(g, burst.bucket(g), now),
            reserved: TokenBucket::new(r, burst.bucket(r), now),
            reserved_share: share,
            burst,
            rate,
        }
    }

    /// Changes the total rate, keeping the split and burst length.
    pub fn set_rate(&mut self, rate: f64, now: Instant) {
        self.reconfigure(rate, self.burst, now);
    }

    /// Changes the total rate and the burst rule (the load status changed), keeping the
    /// split. A smaller bucket drops the tokens above its new size at once.
    pub fn reconfigure(&mut self, rate: f64, burst: Burst, now: Instant) {
        let (g, r) = split(rate, self.reserved_share);
        self.general.set_rate(g, burst.bucket(g), now);
        self.reserved.set_rate(r, burst.bucket(r), now);
        self.rate = rate;
        self.burst = burst;
    }

    /// The total rate (both pools).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Permits available in both pools (debt counts as zero).
    pub fn available(&mut self, now: Instant) -> f64 {
        self.general.available(now).max(0.0) + self.reserved.available(now).max(0.0)
    }

    /// Admits `cost` events of `class`, saying which pool paid: the general pool first, then
    /// (protected only) the reserved one. On refusal nothing is taken.
    pub fn try_take(&mut self, cost: f64, class: Class, now: Instant) -> Result<Pool, Rejection> {
        let general = match self.general.try_take(cost, now) {
            Ok(()) => return Ok(Pool::General),
            Err(deficit) => deficit,
        };
        if class == Class::Normal {
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

    /// Refunds an admission that was rejected later, to the pool that paid for it.
    pub fn give_back(&mut self, cost: f64, pool: Pool, now: Instant) {
        match pool {
            Pool::General => self.general.give_back(cost, now),
            Pool::Reserved => self.reserved.give_back(cost, now),
        }
    }
}

/// Fewest events a bucket holds when `secs` of its rate would be less: a low rate (say the
/// reserved 10 % of 100/s) still admits a handful of events at once.
pub const MIN_BURST_EVENTS: f64 = 50.0;

/// How large a pool's bucket is: `secs` of its rate, at most `max_events`.
///
/// A bucket that is full when an overload starts admits its whole size on top of the rate.
/// When the pipeline runs close to the rate, that excess queues and drains only as fast as
/// the headroom allows, so the time-based part keeps the admitted rate near the rate at every
/// time scale and the cap keeps high rates from carrying a large absolute burst (at 6 000/s,
/// 200 ms is 1 200 events).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burst {
    /// Seconds of the rate.
    secs: f64,
    /// Most events a bucket holds, whatever the rate (`f64::INFINITY`: no cap).
    max_events: f64,
}

impl Burst {
    /// `secs` of the rate, no cap.
    pub fn secs(secs: f64) -> Self {
        Self {
            secs,
            max_events: f64::INFINITY,
        }
    }

    /// The same, capped at `max_events` (0, negative or NaN: no cap).
    pub fn capped(self, max_events: f64) -> Self {
        let max_events = if max_events.is_nan() || max_events <= 0.0 {
            f64::INFINITY
        } else {
            max_events
        };
        Self { max_events, ..self }
    }

    /// The bucket size for `rate` events/s: `rate × secs`, but at least
    /// `min(rate × 1 s, MIN_BURST_EVENTS)` (the floor keeps low rates usable), and never
    /// above `max_events` (an operator's explicit cap wins over the floor). Negative or NaN
    /// inputs count as 0.
    pub fn bucket(&self, rate: f64) -> f64 {
        let rate = if rate.is_nan() { 0.0 } else { rate.max(0.0) };
        let secs = if self.secs.is_nan() {
            0.0
        } else {
            self.secs.max(0.0)
        };
        (rate * secs)
            .max(rate.min(MIN_BURST_EVENTS))
            .min(self.max_events)
    }
}

fn split(rate: f64, share: f64) -> (f64, f64) {
    let reserved = rate * share;
    (rate - reserved, reserved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn take_n(b: &mut PriorityBudget, n: usize, class: Class, now: Instant) -> Vec<Pool> {
        (0..n)
            .map(|_| b.try_take(1.0, class, now).expect("admitted"))
            .collect()
    }

    /// Normal events admitted in the first second of 15 000/s offered (15 per millisecond).
    fn first_second_at_15_000_per_s(b: &mut PriorityBudget, t0: Instant) -> u32 {
        let mut admitted = 0;
        for ms in 0..1000u64 {
            let now = t0 + Duration::from_millis(ms);
            for _ in 0..15 {
                if b.try_take(1.0, Class::Normal, now).is_ok() {
                    admitted += 1;
                }
            }
        }
        admitted
    }

    #[test]
    fn splits_rate_and_burst() {
        let t0 = Instant::now();
        let mut b = PriorityBudget::new(100.0, 0.1, Burst::secs(2.0), t0);
        assert_eq!(b.rate(), 100.0);
        assert!(close(b.available(t0), 200.0), "two seconds of burst");
        assert_eq!(
            take_n(&mut b, 180, Class::Normal, t0),
            vec![Pool::General; 180]
        );
        assert!(b.try_take(1.0, Class::Normal, t0).is_err());
        assert!(close(b.available(t0), 20.0));
        // The general pool refills at 90/s, the reserved one is still full.
        assert!(close(b.available(t0 + Duration::from_secs(1)), 110.0));
    }

    #[test]
    fn burst_is_a_share_of_the_rate_with_a_floor_for_low_rates() {
        let burst_for = |rate, secs| Burst::secs(secs).bucket(rate);
        assert!(close(burst_for(5000.0, 0.2), 1000.0));
        assert!(close(burst_for(1000.0, 1.0), 1000.0));
        // 0.2 s of 100/s would be 20 events: the floor gives 50.
        assert!(close(burst_for(100.0, 0.2), MIN_BURST_EVENTS));
        // Below the floor's rate, one second of the rate.
        assert!(close(burst_for(10.0, 0.2), 10.0));
        assert!(close(burst_for(0.0, 0.2), 0.0));
        for (rate, secs) in [
            (-1.0, 0.2),
            (f64::NAN, 0.2),
            (100.0, -1.0),
            (100.0, f64::NAN),
        ] {
            let b = burst_for(rate, secs);
            assert!((0.0..=50.0).contains(&b), "({rate}, {secs}) -> {b}");
        }
    }

    #[test]
    fn the_cap_bounds_high_rates_only() {
        let burst = Burst::secs(0.2).capped(200.0);
        // The gateway's defaults (1 000/s, 10 % reserved): both pools below the cap.
        assert!(close(burst.bucket(900.0), 180.0));
        assert!(close(burst.bucket(100.0), MIN_BURST_EVENTS));
        // 5 580/s: 1 116 events of 200 ms, capped at 200 (36 ms of the rate).
        assert!(close(burst.bucket(5580.0), 200.0));
        assert!(close(burst.bucket(1e9), 200.0));
        // An explicit cap below the floor wins.
        assert!(close(Burst::secs(0.2).capped(10.0).bucket(100.0), 10.0));
        // 0, negative and NaN caps mean no cap.
        for cap in [0.0, -5.0, f64::NAN] {
            assert!(close(Burst::secs(0.2).capped(cap).bucket(5580.0), 1116.0));
        }
    }

    #[test]
    fn a_capped_burst_admits_the_rate_plus_the_cap_in_an_overloads_first_second() {
        // 6 000/s, 10 % reserved, 200 ms capped at 200 events: 15 000/s of normal events
        // get the general pool's rate (5 400) plus its 200 events, not plus 1 080.
        let t0 = Instant::now();
        let mut b = PriorityBudget::new(6000.0, 0.1, Burst::secs(0.2).capped(200.0), t0);
        let admitted = first_second_at_15_000_per_s(&mut b, t0);
        assert!((5_590..=5_600).contains(&admitted), "admitted {admitted}");
    }

    #[test]
    fn a_short_burst_admits_close_to_the_rate_from_the_first_moment() {
        // 5000/s, 10 % reserved: the general pool is 4500/s with 0.2 s (900) of burst, so a
        // full bucket plus one second of refill admits ~5400 normal events in an overload's
        // first second, where a one-second burst would admit 9000.
        let t0 = Instant::now();
        let mut b = PriorityBudget::new(5000.0, 0.1, Burst::secs(0.2), t0);
        let admitted = first_second_at_15_000_per_s(&mut b, t0);
        assert!((5_390..=5_400).contains(&admitted), "admitted {admitted}");
        // The reserve keeps its own short burst: 0.2 s of 500/s = 100.
        let now = t0 + Duration::from_millis(999);
        assert_eq!(take_n(&mut b, 100, Class::Protected, now).len(), 100);
        assert!(b.try_take(1.0, Class::Protected, now).is_err());
    }

    #[test]
    fn normal_traffic_cannot_touch_the_reserve() {
        let t0 = Instant::now();
        let mut b = PriorityBudget::new(100.0, 0.1, Burst::secs(1.0), t0);
        assert!(close(b.available(t0), 100.0));
        take_n(&mut b, 90, Class::Normal, t0);
        let rej = b.try_take(1.0, Class::Normal, t0).unwrap_err();
        assert!(close(rej.remaining, 10.0));
        // One general token at 90/s.
        assert_eq!(rej.retry_after, Duration::from_micros(11_112));
        assert!(close(b.available(t0), 10.0), "the refusal took nothing");
    }

    #[test]
    fn protected_use_general_first_then_the_reserve() {
        let t0 = Instant::now();
        let mut b = PriorityBudget::new(100.0, 0.1, Burst::secs(1.0), t0);
        take_n(&mut b, 89, Class::Normal, t0);
        assert_eq!(b.try_take(1.0, Class::Protected, t0), Ok(Pool::General));
        assert!(b.try_take(1.0, Class::Normal, t0).is_err());
        assert_eq!(
            take_n(&mut b, 10, Class::Protected, t0),
            vec![Pool::Reserved; 10]
        );
        let rej = b.try_take(1.0, Class::Protected, t0).unwrap_err();
        assert_eq!(rej.remaining, 0.0);
        // General: 1 token at 90/s (11.2 ms) beats reserved: 1 token at 10/s (100 ms).
        assert_eq!(rej.retry_after, Duration::from_micros(11_112));
    }

    #[test]
    fn protected_retry_after_comes_from_the_sooner_pool() {
        let t0 = Instant::now();
        let mut b = PriorityBudget::new(100.0, 0.1, Burst::secs(1.0), t0);
        // Put the general pool deep into debt: it needs 10 s to be usable again.
        b.try_take(989.0, Class::Normal, t0).unwrap();
        take_n(&mut b, 10, Class::Protected, t0);
        let normal = b.try_take(1.0, Class::Normal, t0).unwrap_err();
        assert_eq!(normal.retry_after, Duration::from_secs(10));
        let protected = b.try_take(1.0, Class::Protected, t0).unwrap_err();
        assert_eq!(protected.retry_after, Duration::from_millis(100));
        assert_eq!(protected.remaining, 0.0, "debt counts as zero");
        let later = t0 + protected.retry_after;
        assert_eq!(b.try_take(1.0, Class::Protected, later), Ok(Pool::Reserved));
    }

    #[test]
    fn protected_keep_their_share_under_saturation() {
        let t0 = Instant::now();
        let mut b = PriorityBudget::new(100.0, 0.1, Burst::secs(1.0), t0);
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
        // At most 10 s of rate plus both (full) bursts.
        assert!(total <= 100 * 10 + 100, "admitted {total}");
        assert!(total >= 100 * 10 - 2, "admitted only {total}");
    }

    #[test]
    fn set_rate_keeps_the_split_and_burst_length() {
        let t0 = Instant::now();
        let mut b = PriorityBudget::new(1000.0, 0.1, Burst::secs(2.0), t0);
        b.set_rate(100.0, t0);
        assert_eq!(b.rate(), 100.0);
        assert!(close(b.available(t0), 200.0));
        take_n(&mut b, 180, Class::Normal, t0);
        assert!(b.try_take(1.0, Class::Normal, t0).is_err());
        assert_eq!(
            take_n(&mut b, 20, Class::Protected, t0),
            vec![Pool::Reserved; 20]
        );
        assert!(b.try_take(1.0, Class::Protected, t0).is_err());
        let t1 = t0 + Duration::from_secs(1);
        assert!(close(b.available(t1), 100.0), "90 + 10 per second");
    }

    #[test]
    fn refund_goes_back_to_the_pool_that_paid() {
        let t0 = Instant::now();
        let mut b = PriorityBudget::new(10.0, 0.5, Burst::secs(1.0), t0);
        take_n(&mut b, 5, Class::Normal, t0);
        let pool = b.try_take(1.0, Class::Protected, t0).unwrap();
        assert_eq!(pool, Pool::Reserved);
        b.give_back(1.0, pool, t0);
        assert!(close(b.available(t0), 5.0));
        assert!(
            b.try_take(1.0, Class::Normal, t0).is_err(),
            "not refunded to general"
        );
        b.give_back(1.0, Pool::General, t0);
        assert_eq!(b.try_take(1.0, Class::Normal, t0), Ok(Pool::General));
    }

    #[test]
    fn share_edges() {
        let t0 = Instant::now();
        // (share, normal admitted, protected admitted after that)
        let cases = [
            (0.0, 10, 0),
            (-1.0, 10, 0),
            (f64::NAN, 10, 0),
            (0.5, 5, 5),
            (1.0, 0, 10),
            (2.0, 0, 10),
        ];
        for (share, normal, protected) in cases {
            let mut b = PriorityBudget::new(10.0, share, Burst::secs(1.0), t0);
            let n = (0..20)
                .filter(|_| b.try_take(1.0, Class::Normal, t0).is_ok())
                .count();
            let p = (0..20)
                .filter(|_| b.try_take(1.0, Class::Protected, t0).is_ok())
                .count();
            assert_eq!((n, p), (normal, protected), "share {share}");
        }
    }
}
