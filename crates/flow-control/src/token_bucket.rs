//! A token bucket whose rate changes at run time and which may go into debt, so a request
//! costing more than the burst (a big batch at a low rate) is still admissible, and paid for
//! by a longer wait afterwards.

use std::time::{Duration, Instant};

/// Retry-After used when the bucket never refills (rate 0).
pub const NO_REFILL_RETRY: Duration = Duration::from_secs(60);

/// Token bucket: `rate` tokens/s up to `burst`; `tokens` may be negative (debt).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

/// Not enough tokens: when the request could be admitted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deficit {
    pub retry_after: Duration,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate: rate.max(0.0),
            burst: burst.max(0.0),
            tokens: burst.max(0.0),
            last: now,
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn burst(&self) -> f64 {
        self.burst
    }

    fn refill(&mut self, now: Instant) {
        // A clock that goes backwards adds nothing.
        let Some(elapsed) = now.checked_duration_since(self.last) else {
            return;
        };
        self.tokens = (self.tokens + self.rate * elapsed.as_secs_f64()).min(self.burst);
        self.last = now;
    }

    /// Tokens available now (negative while in debt).
    pub fn available(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }

    /// Changes rate and burst; tokens accrued so far were earned at the old rate.
    pub fn set_rate(&mut self, rate: f64, burst: f64, now: Instant) {
        self.refill(now);
        self.rate = rate.max(0.0);
        self.burst = burst.max(0.0);
        self.tokens = self.tokens.min(self.burst);
    }

    /// Takes `cost` tokens if at least `min(cost, burst)` are there (the rest becomes debt).
    pub fn try_take(&mut self, cost: f64, now: Instant) -> Result<(), Deficit> {
        self.refill(now);
        let needed = cost.min(self.burst);
        if self.tokens >= needed {
            self.tokens -= cost;
            return Ok(());
        }
        Err(Deficit {
            retry_after: self.time_to(needed),
        })
    }

    /// How long until `needed` tokens are there.
    pub fn time_to(&self, needed: f64) -> Duration {
        let missing = needed - self.tokens;
        if missing <= 0.0 {
            return Duration::ZERO;
        }
        if self.rate <= 0.0 {
            return NO_REFILL_RETRY;
        }
        Duration::from_secs_f64(missing / self.rate)
    }

    /// Refunds tokens taken for a request that was rejected later.
    pub fn give_back(&mut self, cost: f64, now: Instant) {
        self.add(cost, now);
    }

    /// Adds tokens granted from elsewhere (a lease), capped at the burst.
    pub fn add(&mut self, tokens: f64, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + tokens).min(self.burst);
    }
}

/// Retry-After header value: whole seconds rounded up, at least 1.
pub fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs_f64().ceil() as u64;
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn starts_full_and_refills_at_rate_up_to_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 10.0, t0);
        assert_eq!(b.available(t0), 10.0);
        for _ in 0..10 {
            b.try_take(1.0, t0).unwrap();
        }
        assert!(b.try_take(1.0, t0).is_err());
        assert!((b.available(ms(t0, 500)) - 5.0).abs() < 1e-9);
        assert_eq!(b.available(ms(t0, 60_000)), 10.0, "capped at burst");
    }

    #[test]
    fn rate_change_keeps_tokens_earned_at_old_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 100.0, t0);
        b.try_take(100.0, t0).unwrap();
        b.set_rate(10.0, 10.0, ms(t0, 50)); // earned 5 at 100/s
        assert!((b.available(ms(t0, 50)) - 5.0).abs() < 1e-9);
        assert!(
            (b.available(ms(t0, 550)) - 10.0).abs() < 1e-9,
            "5 + 0.5 s × 10/s, capped"
        );
        // Lowering the burst clamps what is there.
        let mut c = TokenBucket::new(1000.0, 1000.0, t0);
        c.set_rate(100.0, 100.0, t0);
        assert_eq!(c.available(t0), 100.0);
    }

    #[test]
    fn cost_above_one_and_above_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 100.0, t0);
        b.try_take(30.0, t0).unwrap();
        assert!((b.available(t0) - 70.0).abs() < 1e-9);
        // 1000 > burst: admitted when the bucket is full, leaving 900 of debt.
        let mut big = TokenBucket::new(100.0, 100.0, t0);
        big.try_take(1000.0, t0).unwrap();
        assert!((big.available(t0) + 900.0).abs() < 1e-9);
        let d = big.try_take(1.0, t0).unwrap_err();
        assert!((d.retry_after.as_secs_f64() - 9.01).abs() < 1e-6);
        assert!(big.try_take(1.0, ms(t0, 9_010)).is_ok());
    }

    #[test]
    fn retry_after_is_time_to_enough_tokens() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 10.0, t0);
        b.try_take(10.0, t0).unwrap();
        let d = b.try_take(5.0, t0).unwrap_err();
        assert!((d.retry_after.as_secs_f64() - 0.5).abs() < 1e-9);
        assert!(b.try_take(5.0, ms(t0, 499)).is_err());
        assert!(b.try_take(5.0, ms(t0, 500)).is_ok());
    }

    #[test]
    fn retry_after_secs_rounds_up_to_at_least_one() {
        let cases = [(0, 1), (100, 1), (1000, 1), (1010, 2), (2000, 2), (2001, 3)];
        for (millis, secs) in cases {
            assert_eq!(
                retry_after_secs(Duration::from_millis(millis)),
                secs,
                "{millis} ms"
            );
        }
    }

    #[test]
    fn refund_and_lease_are_capped_at_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 10.0, t0);
        b.try_take(4.0, t0).unwrap();
        b.give_back(4.0, t0);
        assert_eq!(b.available(t0), 10.0);
        b.give_back(4.0, t0);
        assert_eq!(b.available(t0), 10.0);
    }

    #[test]
    fn zero_rate_never_refills_and_says_so() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.0, 5.0, t0);
        b.try_take(5.0, t0).unwrap();
        assert_eq!(b.available(ms(t0, 100_000)), 0.0);
        let d = b.try_take(1.0, ms(t0, 100_000)).unwrap_err();
        assert_eq!(d.retry_after, NO_REFILL_RETRY);
        b.add(3.0, ms(t0, 100_000));
        assert!(b.try_take(3.0, ms(t0, 100_000)).is_ok());
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let t0 = Instant::now();
        let later = ms(t0, 1000);
        let mut b = TokenBucket::new(10.0, 10.0, later);
        b.try_take(10.0, later).unwrap();
        assert_eq!(b.available(t0), 0.0);
        assert_eq!(b.available(later), 0.0);
    }
}
