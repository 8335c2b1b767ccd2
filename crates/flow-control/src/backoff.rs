//! Capped exponential backoff for retrying failed database batches.

use std::time::Duration;

/// `initial × factor^attempt`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub factor: f64,
}

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
    /// Delay before retry number `attempt` (0 = first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let scaled = self.initial.as_secs_f64() * self.factor.powi(attempt.min(1024) as i32);
        if !scaled.is_finite() || scaled >= self.max.as_secs_f64() {
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
        assert_eq!(b.delay(0), Duration::from_millis(100));
        assert_eq!(b.delay(1), Duration::from_millis(200));
        assert_eq!(b.delay(3), Duration::from_millis(800));
        assert_eq!(b.delay(7), Duration::from_secs(10));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(10));
    }
}
