//! Capped exponential backoff for retrying failed database batches.

use std::time::Duration;

/// `initial × factor^attempt`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Longest delay, however many attempts failed.
    pub max: Duration,
    /// Growth per attempt; below 1 (or NaN) counts as 1, since a backoff must not shrink.
    pub factor: f64,
}

/// 100 ms, doubling, at most 10 s.
impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            factor: 2.0,
        }
    }
}

impl Backoff {
    /// Delay before retry number `attempt` (0 = first retry); never panics, whatever the
    /// attempt number.
    pub fn delay(&self, attempt: u32) -> Duration {
        // f64::max returns 1.0 for a NaN factor.
        let factor = self.factor.max(1.0);
        // Past 2^1024 every factor >= 2 is infinite anyway; the cap keeps powi's exponent
        // in i32.
        let exponent = attempt.min(1024) as i32;
        let scaled = self.initial.as_secs_f64() * factor.powi(exponent);
        // Catches the infinite (and 0 × ∞ = NaN) values that from_secs_f64 would panic on.
        if scaled.is_nan() || scaled >= self.max.as_secs_f64() {
            return self.max;
        }
        Duration::from_secs_f64(scaled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_without_overflow() {
        let b = Backoff::default();
        let cases = [
            (0, Duration::from_millis(100)),
            (1, Duration::from_millis(200)),
            (2, Duration::from_millis(400)),
            (3, Duration::from_millis(800)),
            (6, Duration::from_millis(6_400)),
            (7, Duration::from_secs(10)),
            (8, Duration::from_secs(10)),
            (1_024, Duration::from_secs(10)),
            (1_025, Duration::from_secs(10)),
            (u32::MAX, Duration::from_secs(10)),
        ];
        for (attempt, want) in cases {
            assert_eq!(b.delay(attempt), want, "attempt {attempt}");
        }
    }

    #[test]
    fn never_decreases() {
        let b = Backoff {
            factor: 1.5,
            ..Backoff::default()
        };
        let mut prev = Duration::ZERO;
        for attempt in 0..100 {
            let d = b.delay(attempt);
            assert!(d >= prev && d <= b.max, "attempt {attempt}: {d:?}");
            prev = d;
        }
    }

    #[test]
    fn odd_settings() {
        let (ms100, s10) = (Duration::from_millis(100), Duration::from_secs(10));
        let (zero, inf) = (Duration::ZERO, f64::INFINITY);
        // (initial, max, factor, attempt, delay)
        let cases = [
            (ms100, s10, 1.0, 50, ms100),
            (ms100, s10, 0.5, 3, ms100),
            (ms100, s10, -2.0, 3, ms100),
            (ms100, s10, f64::NAN, 3, ms100),
            (ms100, s10, inf, 0, ms100),
            (ms100, s10, inf, 1, s10),
            (Duration::from_secs(60), s10, 2.0, 0, s10),
            (zero, s10, 2.0, 9, zero),
            (zero, s10, inf, 9, s10),
            (ms100, zero, 2.0, 0, zero),
            (Duration::MAX, Duration::MAX, 2.0, 5, Duration::MAX),
        ];
        for (initial, max, factor, attempt, want) in cases {
            let b = Backoff {
                initial,
                max,
                factor,
            };
            assert_eq!(b.delay(attempt), want, "{b:?} attempt {attempt}");
        }
    }
}
