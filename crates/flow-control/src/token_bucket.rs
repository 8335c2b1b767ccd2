//! A token bucket whose rate changes at run time and which may go into debt, so a request
//! costing more than the burst (a big batch at a low rate) is still admissible, and paid for
//! by a longer wait afterwards.

use std::time::{Duration, Instant};

/// Retry-After used when the bucket cannot refill by itself (rate 0, or burst 0): only an
/// external grant ([`TokenBucket::add`]) can help, so a caller should come back later rather
/// than be told "never".
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
    /// Time until the refused request would be admitted, if nothing else takes tokens first
    /// ([`NO_REFILL_RETRY`] when the bucket does not refill).
    pub retry_after: Duration,
}

impl TokenBucket {
    /// A full bucket (`tokens = burst`). Negative or NaN rate and burst count as 0.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        let burst = non_negative(burst);
        Self {
            rate: non_negative(rate),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Refill rate in tokens per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Capacity: the most tokens the bucket holds.
    pub fn burst(&self) -> f64 {
        self.burst
    }

    fn refill(&mut self, now: Instant) {
        // A clock that goes backwards adds nothing, and `last` stays put so that the time
        // is not credited twice once the clock catches up.
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

    /// Changes rate and burst; tokens accrued up to `now` were earned at the old rate, and
    /// what exceeds the new burst is dropped.
    pub fn set_rate(&mut self, rate: f64, burst: f64, now: Instant) {
        self.refill(now);
        self.rate = non_negative(rate);
        self.burst = non_negative(burst);
        self.tokens = self.tokens.min(self.burst);
    }

    /// Takes `cost` tokens if at least `min(cost, burst)` are there; the part of the cost
    /// beyond the tokens present becomes debt. On refusal nothing is taken.
    pub fn try_take(&mut self, cost: f64, now: Instant) -> Result<(), Deficit> {
        debug_assert!(
            cost >= 0.0,
            "cost must be a non-negative number, got {cost}"
        );
        self.refill(now);
        // An empty-capacity bucket would otherwise admit anything at 0 >= min(cost, 0).
        if self.burst <= 0.0 && cost > 0.0 {
            return Err(Deficit {
                retry_after: NO_REFILL_RETRY,
            });
        }
        let needed = cost.min(self.burst);
        if self.tokens >= needed {
            self.tokens -= cost;
            return Ok(());
        }
        Err(Deficit {
            retry_after: self.time_to(needed),
        })
    }

    /// How long until `needed` tokens are there (as of the last refill), rounded up to the
    /// microsecond so that retrying after exactly this long succeeds; [`NO_REFILL_RETRY`] if
    /// the bucket does not refill or the wait is not representable.
    pub fn time_to(&self, needed: f64) -> Duration {
        let missing = needed - self.tokens;
        if missing <= 0.0 {
            return Duration::ZERO;
        }
        if self.rate <= 0.0 {
            return NO_REFILL_RETRY;
        }
        // Scaling before dividing keeps round numbers exact, so `ceil` adds no spurious µs.
        let micros = (missing * 1e6 / self.rate).ceil();
        if micros.is_nan() || micros >= u64::MAX as f64 {
            return NO_REFILL_RETRY;
        }
        Duration::from_micros(micros as u64)
    }

    /// Refunds tokens taken for a request that was rejected later (capped at the burst).
    pub fn give_back(&mut self, cost: f64, now: Instant) {
        self.add(cost, now);
    }

    /// Adds tokens granted from elsewhere (a lease), capped at the burst.
    pub fn add(&mut self, tokens: f64, now: Instant) {
        debug_assert!(tokens >= 0.0, "cannot add {tokens} tokens");
        self.refill(now);
        self.tokens = (self.tokens + tokens).min(self.burst);
    }
}

/// Retry-After header value: whole seconds, rounded up, at least 1 (0 would invite an
/// immediate retry that is refused again).
pub fn retry_after_secs(d: Duration) -> u64 {
    let partial = u64::from(d.subsec_nanos() > 0);
    d.as_secs().saturating_add(partial).max(1)
}

/// `x`, or 0 if it is negative or NaN.
fn non_negative(x: f64) -> f64 {
    // f64::max returns the other operand when one is NaN.
    x.max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn starts_full() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 7.0, t0);
        assert_eq!((b.rate(), b.burst()), (10.0, 7.0));
        assert_eq!(b.available(t0), 7.0);
    }

    #[test]
    fn refills_at_rate_up_to_burst() {
        let t0 = Instant::now();
        // (elapsed ms after emptying, tokens expected)
        let cases = [
            (0, 0.0),
            (1, 0.01),
            (100, 1.0),
            (500, 5.0),
            (999, 9.99),
            (1000, 10.0),
            (1001, 10.0),
            (60_000, 10.0),
        ];
        for (elapsed, want) in cases {
            let mut b = TokenBucket::new(10.0, 10.0, t0);
            b.try_take(10.0, t0).unwrap();
            let got = b.available(ms(t0, elapsed));
            assert!(close(got, want), "{elapsed} ms: {got} != {want}");
        }
    }

    #[test]
    fn admits_up_to_the_tokens_present() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 10.0, t0);
        for _ in 0..10 {
            b.try_take(1.0, t0).unwrap();
        }
        assert!(b.try_take(1.0, t0).is_err());
        assert!(b.try_take(1.0, ms(t0, 99)).is_err());
        assert!(b.try_take(1.0, ms(t0, 100)).is_ok());
    }

    #[test]
    fn refusal_takes_nothing() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 10.0, t0);
        b.try_take(8.0, t0).unwrap();
        assert!(b.try_take(3.0, t0).is_err());
        assert!(close(b.available(t0), 2.0));
    }

    #[test]
    fn rate_change_keeps_tokens_earned_at_old_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 100.0, t0);
        b.try_take(100.0, t0).unwrap();
        b.set_rate(10.0, 10.0, ms(t0, 50)); // earned 5 at 100/s
        assert_eq!((b.rate(), b.burst()), (10.0, 10.0));
        assert!(close(b.available(ms(t0, 50)), 5.0));
        assert!(close(b.available(ms(t0, 300)), 7.5), "5 + 0.25 s × 10/s");
        assert!(close(b.available(ms(t0, 550)), 10.0), "capped at new burst");
    }

    #[test]
    fn rate_increase_applies_from_the_change_on() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 1000.0, t0);
        b.try_take(1000.0, t0).unwrap();
        b.set_rate(1000.0, 1000.0, ms(t0, 1000)); // earned 10 at 10/s
        assert!(close(b.available(ms(t0, 1000)), 10.0));
        assert!(close(b.available(ms(t0, 1100)), 110.0));
    }

    #[test]
    fn lowering_the_burst_clamps_tokens_but_keeps_debt() {
        let t0 = Instant::now();
        let mut full = TokenBucket::new(1000.0, 1000.0, t0);
        full.set_rate(100.0, 100.0, t0);
        assert_eq!(full.available(t0), 100.0);

        let mut indebted = TokenBucket::new(100.0, 100.0, t0);
        indebted.try_take(300.0, t0).unwrap();
        indebted.set_rate(10.0, 10.0, t0);
        assert!(close(indebted.available(t0), -200.0));
    }

    #[test]
    fn cost_above_one() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 100.0, t0);
        b.try_take(30.0, t0).unwrap();
        assert!(close(b.available(t0), 70.0));
        assert!(b.try_take(70.0, t0).is_ok());
        assert!(b.try_take(0.5, t0).is_err());
    }

    #[test]
    fn cost_above_burst_goes_into_debt_then_recovers() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 100.0, t0);
        // 1000 > burst: admitted when the bucket is full, leaving 900 of debt.
        b.try_take(1000.0, t0).unwrap();
        assert!(close(b.available(t0), -900.0));
        let d = b.try_take(1.0, t0).unwrap_err();
        assert_eq!(d.retry_after, Duration::from_millis(9_010));
        assert!(b.try_take(1.0, ms(t0, 9_009)).is_err());
        assert!(b.try_take(1.0, ms(t0, 9_010)).is_ok());
    }

    #[test]
    fn cost_above_burst_needs_a_full_bucket_only() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 100.0, t0);
        b.try_take(50.0, t0).unwrap();
        let d = b.try_take(1000.0, t0).unwrap_err();
        assert_eq!(
            d.retry_after,
            Duration::from_millis(500),
            "until full, not 9.5 s"
        );
        assert!(b.try_take(1000.0, ms(t0, 499)).is_err());
        assert!(b.try_take(1000.0, ms(t0, 500)).is_ok());
    }

    #[test]
    fn retry_after_is_time_to_enough_tokens() {
        let t0 = Instant::now();
        // (rate, tokens taken first, cost, retry_after µs)
        let cases = [
            (10.0, 10.0, 5.0, 500_000),
            (10.0, 10.0, 1.0, 100_000),
            (10.0, 9.5, 1.0, 50_000),
            (3.0, 3.0, 1.0, 333_334), // rounded up
            (1000.0, 1000.0, 1.0, 1_000),
        ];
        for (rate, taken, cost, micros) in cases {
            let mut b = TokenBucket::new(rate, rate, t0);
            b.try_take(taken, t0).unwrap();
            let d = b.try_take(cost, t0).unwrap_err();
            assert_eq!(d.retry_after, Duration::from_micros(micros), "rate {rate}");
            let just_before = t0 + d.retry_after - Duration::from_micros(1);
            assert!(b.clone().try_take(cost, just_before).is_err());
            assert!(b.try_take(cost, t0 + d.retry_after).is_ok());
        }
    }

    #[test]
    fn retrying_after_retry_after_always_succeeds() {
        // Tiny LCG so the case set is fixed without a rand dependency.
        let mut seed: u64 = 42;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let t0 = Instant::now();
        for _ in 0..2_000 {
            let rate = (1 + next(5_000)) as f64 / 7.0;
            let burst = (1 + next(1_000)) as f64 / 3.0;
            let mut b = TokenBucket::new(rate, burst, t0);
            let first = (1 + next(3_000)) as f64 / 11.0;
            let at = ms(t0, next(500));
            let _ = b.try_take(first, at);
            let cost = (1 + next(300)) as f64 / 13.0;
            if let Err(d) = b.try_take(cost, at) {
                assert!(d.retry_after > Duration::ZERO);
                assert!(
                    b.try_take(cost, at + d.retry_after).is_ok(),
                    "rate {rate} burst {burst} first {first} cost {cost}"
                );
            }
        }
    }

    #[test]
    fn retry_after_secs_rounds_up_to_at_least_one() {
        let cases = [
            (Duration::ZERO, 1),
            (Duration::from_nanos(1), 1),
            (Duration::from_millis(100), 1),
            (Duration::from_millis(999), 1),
            (Duration::from_secs(1), 1),
            (Duration::from_millis(1010), 2),
            (Duration::from_nanos(1_000_000_001), 2),
            (Duration::from_secs(2), 2),
            (Duration::from_millis(2001), 3),
            (Duration::from_secs(60), 60),
            (Duration::MAX, u64::MAX),
        ];
        for (d, secs) in cases {
            assert_eq!(retry_after_secs(d), secs, "{d:?}");
        }
    }

    #[test]
    fn refund_is_capped_at_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 10.0, t0);
        b.try_take(4.0, t0).unwrap();
        b.give_back(4.0, t0);
        assert_eq!(b.available(t0), 10.0);
        b.give_back(4.0, t0);
        assert_eq!(b.available(t0), 10.0);
    }

    #[test]
    fn refund_pays_off_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 10.0, t0);
        b.try_take(30.0, t0).unwrap();
        b.give_back(30.0, t0);
        assert!(close(b.available(t0), 10.0));
    }

    #[test]
    fn zero_rate_never_refills_and_says_so() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.0, 5.0, t0);
        b.try_take(5.0, t0).unwrap();
        let later = ms(t0, 100_000);
        assert_eq!(b.available(later), 0.0);
        let d = b.try_take(1.0, later).unwrap_err();
        assert_eq!(d.retry_after, NO_REFILL_RETRY);
    }

    #[test]
    fn zero_rate_pool_lives_on_leases() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.0, 5.0, t0);
        b.try_take(5.0, t0).unwrap();
        b.add(3.0, t0);
        assert!(b.try_take(3.0, t0).is_ok());
        assert!(b.try_take(1.0, t0).is_err());
        b.add(50.0, t0);
        assert_eq!(b.available(t0), 5.0, "lease capped at burst");
    }

    #[test]
    fn zero_burst_admits_nothing() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 0.0, t0);
        let d = b.try_take(1.0, ms(t0, 10_000)).unwrap_err();
        assert_eq!(d.retry_after, NO_REFILL_RETRY);
        assert_eq!(b.available(ms(t0, 10_000)), 0.0);
    }

    #[test]
    fn nonsense_rate_and_burst_count_as_zero() {
        let t0 = Instant::now();
        for (rate, burst) in [(-1.0, 5.0), (f64::NAN, 5.0), (5.0, -1.0), (5.0, f64::NAN)] {
            let b = TokenBucket::new(rate, burst, t0);
            assert!(b.rate() >= 0.0 && b.burst() >= 0.0, "({rate}, {burst})");
        }
        let mut b = TokenBucket::new(10.0, 10.0, t0);
        b.set_rate(f64::NAN, -3.0, t0);
        assert_eq!((b.rate(), b.burst()), (0.0, 0.0));
    }

    #[test]
    fn unrepresentable_wait_is_capped() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1e-300, 1e300, t0);
        b.try_take(1e300, t0).unwrap();
        let d = b.try_take(1e300, t0).unwrap_err();
        assert_eq!(d.retry_after, NO_REFILL_RETRY);
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let t0 = Instant::now();
        let later = ms(t0, 1000);
        let mut b = TokenBucket::new(10.0, 10.0, later);
        b.try_take(10.0, later).unwrap();
        assert_eq!(b.available(t0), 0.0);
        assert!(b.try_take(1.0, t0).is_err());
        assert_eq!(b.available(later), 0.0);
        assert!(
            close(b.available(ms(t0, 1100)), 1.0),
            "counted from `later`"
        );
    }
}
