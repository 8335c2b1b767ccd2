//! A Resilience4j-style, count-based circuit breaker around the database: open when too many
//! of the last calls failed or were slow, probe with a few trial calls after a wait.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Thresholds (defaults are the Java original's Resilience4j settings).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    pub window_size: usize,
    pub minimum_calls: usize,
    /// Percent of failed calls that opens the breaker.
    pub failure_rate_threshold: f64,
    /// Percent of slow calls that opens the breaker.
    pub slow_call_rate_threshold: f64,
    /// A call longer than this is slow.
    pub slow_call_duration: Duration,
    pub wait_in_open: Duration,
    pub half_open_calls: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window_size: 100,
            minimum_calls: 10,
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 50.0,
            slow_call_duration: Duration::from_secs(2),
            wait_in_open: Duration::from_secs(30),
            half_open_calls: 10,
        }
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub const ALL: [BreakerState; 3] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
    ];

    /// Resilience4j's label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// How a protected call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

/// A state change, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
}

/// The call may not run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotPermitted {
    /// Until the breaker lets a trial call through (zero in half-open: wait for trials).
    pub retry_in: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Call {
    failed: bool,
    slow: bool,
}

#[derive(Debug, Clone)]
enum Inner {
    Closed,
    Open { since: Instant },
    HalfOpen { permitted: usize },
}

/// The breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    cfg: BreakerConfig,
    inner: Inner,
    window: VecDeque<Call>,
}

impl CircuitBreaker {
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            inner: Inner::Closed,
            window: VecDeque::with_capacity(cfg.window_size),
        }
    }

    /// The state as seen at `now` (an open breaker whose wait is over reports half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.inner {
            Inner::Closed => BreakerState::Closed,
            Inner::Open { since }
                if now.saturating_duration_since(since) >= self.cfg.wait_in_open =>
            {
                BreakerState::HalfOpen
            }
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to run one call.
    pub fn try_acquire(&mut self, now: Instant) -> Result<Option<Transition>, NotPermitted> {
        match self.inner {
            Inner::Closed => Ok(None),
            Inner::Open { since } => {
                let waited = now.saturating_duration_since(since);
                if waited < self.cfg.wait_in_open {
                    return Err(NotPermitted {
                        retry_in: self.cfg.wait_in_open - waited,
                    });
                }
                self.inner = Inner::HalfOpen { permitted: 1 };
                self.window.clear();
                Ok(Some(Transition {
                    from: BreakerState::Open,
                    to: BreakerState::HalfOpen,
                }))
            }
            Inner::HalfOpen { ref mut permitted } => {
                if *permitted >= self.cfg.half_open_calls {
                    return Err(NotPermitted {
                        retry_in: Duration::ZERO,
                    });
                }
                *permitted += 1;
                Ok(None)
            }
        }
    }

    /// Records how a permitted call ended.
    pub fn on_result(
        &mut self,
        outcome: Outcome,
        duration: Duration,
        now: Instant,
    ) -> Option<Transition> {
        let call = Call {
            failed: outcome == Outcome::Failure,
            slow: duration > self.cfg.slow_call_duration,
        };
        match self.inner {
            // A late result of a call permitted before the breaker opened.
            Inner::Open { .. } => None,
            Inner::Closed => {
                if self.window.len() == self.cfg.window_size {
                    self.window.pop_front();
                }
                self.window.push_back(call);
                if self.window.len() >= self.cfg.minimum_calls && self.over_threshold() {
                    return Some(self.open(BreakerState::Closed, now));
                }
                None
            }
            Inner::HalfOpen { .. } => {
                self.window.push_back(call);
                if self.window.len() < self.cfg.half_open_calls {
                    return None;
                }
                if self.over_threshold() {
                    return Some(self.open(BreakerState::HalfOpen, now));
                }
                self.inner = Inner::Closed;
                self.window.clear();
                Some(Transition {
                    from: BreakerState::HalfOpen,
                    to: BreakerState::Closed,
                })
            }
        }
    }

    fn open(&mut self, from: BreakerState, now: Instant) -> Transition {
        self.inner = Inner::Open { since: now };
        self.window.clear();
        Transition {
            from,
            to: BreakerState::Open,
        }
    }

    fn rate(&self, pick: impl Fn(&Call) -> bool) -> f64 {
        let n = self.window.iter().filter(|c| pick(c)).count();
        100.0 * n as f64 / self.window.len() as f64
    }

    fn over_threshold(&self) -> bool {
        self.rate(|c| c.failed) >= self.cfg.failure_rate_threshold
            || self.rate(|c| c.slow) >= self.cfg.slow_call_rate_threshold
    }

    /// Percent of failed calls in the window (None below the minimum).
    pub fn failure_rate(&self) -> Option<f64> {
        (self.window.len() >= self.cfg.minimum_calls).then(|| self.rate(|c| c.failed))
    }

    /// Percent of slow calls in the window (None below the minimum).
    pub fn slow_call_rate(&self) -> Option<f64> {
        (self.window.len() >= self.cfg.minimum_calls).then(|| self.rate(|c| c.slow))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_millis(10);

    fn run(b: &mut CircuitBreaker, outcomes: &[Outcome], now: Instant) -> Option<Transition> {
        let mut last = None;
        for o in outcomes {
            b.try_acquire(now).expect("permitted");
            if let Some(t) = b.on_result(*o, FAST, now) {
                last = Some(t);
            }
        }
        last
    }

    fn mix(failures: usize, successes: usize) -> Vec<Outcome> {
        let mut v = vec![Outcome::Failure; failures];
        v.extend(vec![Outcome::Success; successes]);
        v
    }

    #[test]
    fn needs_the_minimum_number_of_calls() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        assert_eq!(run(&mut b, &mix(9, 0), t0), None);
        assert_eq!(b.state(t0), BreakerState::Closed);
        assert_eq!(b.failure_rate(), None);
        let t = run(&mut b, &mix(1, 0), t0).unwrap();
        assert_eq!((t.from, t.to), (BreakerState::Closed, BreakerState::Open));
    }

    #[test]
    fn failure_threshold_both_sides() {
        let t0 = Instant::now();
        let mut below = CircuitBreaker::new(BreakerConfig::default());
        assert_eq!(run(&mut below, &mix(4, 6), t0), None);
        assert_eq!(below.failure_rate(), Some(40.0));
        let mut at = CircuitBreaker::new(BreakerConfig::default());
        let mut calls = mix(0, 5);
        calls.extend(mix(5, 0));
        assert!(run(&mut at, &calls, t0).is_some());
        assert_eq!(at.state(t0), BreakerState::Open);
    }

    #[test]
    fn slow_calls_count_strictly_above_the_limit() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        for _ in 0..10 {
            b.try_acquire(t0).unwrap();
            assert_eq!(
                b.on_result(Outcome::Success, Duration::from_secs(2), t0),
                None
            );
        }
        assert_eq!(b.slow_call_rate(), Some(0.0));
        let mut s = CircuitBreaker::new(BreakerConfig::default());
        let mut opened = None;
        for i in 0..10 {
            s.try_acquire(t0).unwrap();
            let d = if i < 5 {
                Duration::from_millis(2001)
            } else {
                FAST
            };
            opened = opened.or(s.on_result(Outcome::Success, d, t0));
        }
        assert_eq!(opened.map(|t| t.to), Some(BreakerState::Open));
    }

    #[test]
    fn window_slides() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        let mut calls = mix(0, 51);
        calls.extend(mix(49, 0));
        assert_eq!(run(&mut b, &calls, t0), None);
        assert_eq!(b.failure_rate(), Some(49.0));
        run(&mut b, &mix(0, 100), t0);
        assert_eq!(b.failure_rate(), Some(0.0), "old failures rolled out");
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn open_waits_exactly_then_half_open_permits_trials() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        run(&mut b, &mix(10, 0), t0);
        let almost = t0 + Duration::from_millis(29_999);
        let err = b.try_acquire(almost).unwrap_err();
        assert_eq!(err.retry_in, Duration::from_millis(1));
        let t30 = t0 + Duration::from_secs(30);
        assert_eq!(b.state(t30), BreakerState::HalfOpen);
        let t = b.try_acquire(t30).unwrap().unwrap();
        assert_eq!((t.from, t.to), (BreakerState::Open, BreakerState::HalfOpen));
        for _ in 1..10 {
            assert_eq!(b.try_acquire(t30), Ok(None));
        }
        assert!(b.try_acquire(t30).is_err(), "only 10 trial calls");
    }

    #[test]
    fn half_open_success_closes_and_failure_reopens() {
        let t0 = Instant::now();
        let t30 = t0 + Duration::from_secs(30);
        let mut ok = CircuitBreaker::new(BreakerConfig::default());
        run(&mut ok, &mix(10, 0), t0);
        let t = run(&mut ok, &mix(4, 6), t30).unwrap();
        assert_eq!(
            (t.from, t.to),
            (BreakerState::HalfOpen, BreakerState::Closed)
        );
        assert_eq!(ok.failure_rate(), None, "fresh window");

        let mut bad = CircuitBreaker::new(BreakerConfig::default());
        run(&mut bad, &mix(10, 0), t0);
        let t = run(&mut bad, &mix(5, 5), t30).unwrap();
        assert_eq!((t.from, t.to), (BreakerState::HalfOpen, BreakerState::Open));
        assert!(
            bad.try_acquire(t30 + Duration::from_secs(29)).is_err(),
            "a new 30 s wait"
        );
        assert!(bad.try_acquire(t30 + Duration::from_secs(30)).is_ok());
    }

    #[test]
    fn results_while_open_are_ignored() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        run(&mut b, &mix(10, 0), t0);
        assert_eq!(b.on_result(Outcome::Success, FAST, t0), None);
        assert_eq!(b.state(t0), BreakerState::Open);
    }
}
