//! A Resilience4j-style, count-based circuit breaker around the database: open when too many
//! of the last calls failed or were slow, probe with a few trial calls after a wait.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Thresholds (defaults are the Java original's Resilience4j settings).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// How many of the most recent calls the rates are computed over.
    pub window_size: usize,
    /// Calls recorded before the rates count (capped at `window_size`, as Resilience4j does).
    pub minimum_calls: usize,
    /// Percent of failed calls that opens the breaker.
    pub failure_rate_threshold: f64,
    /// Percent of slow calls that opens the breaker.
    pub slow_call_rate_threshold: f64,
    /// A call longer than this is slow.
    pub slow_call_duration: Duration,
    /// How long the breaker stays open before letting trial calls through.
    pub wait_in_open: Duration,
    /// Trial calls permitted in half-open; their results decide between closed and open.
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
    /// Calls run; results are recorded.
    Closed,
    /// Calls are refused until `wait_in_open` has passed.
    Open,
    /// A limited number of trial calls run.
    HalfOpen,
}

impl BreakerState {
    /// Every state, e.g. to zero the gauges of the states the breaker is not in.
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
    /// The call did its job (it may still have been slow).
    Success,
    /// The call failed in a way that says something about the database's health.
    Failure,
}

/// A state change, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: BreakerState,
    /// The state entered.
    pub to: BreakerState,
}

/// The call may not run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotPermitted {
    /// Until the breaker lets a trial call through; zero in half-open, where the wait is
    /// for the trial results rather than for a known instant (callers should pick a poll
    /// interval).
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
    Open {
        since: Instant,
    },
    /// `permitted`: trial permits handed out so far.
    HalfOpen {
        permitted: usize,
    },
}

/// The breaker. `window` holds the last calls while closed and the trial results while
/// half-open; it is empty while open.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    cfg: BreakerConfig,
    inner: Inner,
    window: VecDeque<Call>,
}

impl CircuitBreaker {
    /// A closed breaker. Sizes of 0 are raised to 1 (an empty window has no rate), and
    /// `minimum_calls` is capped at `window_size` (otherwise the breaker could never open).
    pub fn new(mut cfg: BreakerConfig) -> Self {
        cfg.window_size = cfg.window_size.max(1);
        cfg.minimum_calls = cfg.minimum_calls.clamp(1, cfg.window_size);
        cfg.half_open_calls = cfg.half_open_calls.max(1);
        Self {
            cfg,
            inner: Inner::Closed,
            window: VecDeque::with_capacity(cfg.window_size),
        }
    }

    /// The configuration in effect (after the adjustments made by [`CircuitBreaker::new`]).
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
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

    /// Asks to run one call. `Ok(Some(_))` when this request moved the breaker from open to
    /// half-open (the request is the first trial call).
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

    /// Records how a permitted call ended; a call longer than `slow_call_duration` is slow
    /// whether it succeeded or not. Returns the state change it caused, if any.
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
                debug_assert!(self.window.len() <= self.cfg.window_size);
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

    /// An out-of-band health check passed while open (the database answers a ping again):
    /// go half-open now instead of at the end of `wait_in_open`, so that the trial calls
    /// decide at once whether the database is back. No change in any other state. The
    /// caller paces the checks, so an outage that pings fine but fails writes (a full disk)
    /// costs at most `half_open_calls` trial calls per check.
    pub fn probe_passed(&mut self, now: Instant) -> Option<Transition> {
        if !matches!(self.inner, Inner::Open { .. }) || self.state(now) != BreakerState::Open {
            return None;
        }
        self.inner = Inner::HalfOpen { permitted: 0 };
        self.window.clear();
        Some(Transition {
            from: BreakerState::Open,
            to: BreakerState::HalfOpen,
        })
    }

    fn open(&mut self, from: BreakerState, now: Instant) -> Transition {
        self.inner = Inner::Open { since: now };
        self.window.clear();
        Transition {
            from,
            to: BreakerState::Open,
        }
    }

    /// Percent of the recorded calls that `pick` selects.
    fn rate(&self, pick: impl Fn(&Call) -> bool) -> f64 {
        debug_assert!(!self.window.is_empty());
        let n = self.window.iter().filter(|c| pick(c)).count();
        100.0 * n as f64 / self.window.len() as f64
    }

    fn over_threshold(&self) -> bool {
        self.rate(|c| c.failed) >= self.cfg.failure_rate_threshold
            || self.rate(|c| c.slow) >= self.cfg.slow_call_rate_threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window's rates, read by the tests only.
    impl CircuitBreaker {
        /// Whether enough calls are recorded for the rates to mean something: `minimum_calls`
        /// while closed, all trial results while half-open (so None there: a full set of trial
        /// results moves the breaker on at once).
        fn rates_known(&self) -> bool {
            let minimum = match self.inner {
                Inner::Closed => self.cfg.minimum_calls,
                Inner::HalfOpen { .. } => self.cfg.half_open_calls,
                Inner::Open { .. } => return false,
            };
            self.window.len() >= minimum
        }

        /// Percent of failed calls in the window (None below the minimum number of calls).
        pub fn failure_rate(&self) -> Option<f64> {
            self.rates_known().then(|| self.rate(|c| c.failed))
        }

        /// Percent of slow calls in the window (None below the minimum number of calls).
        pub fn slow_call_rate(&self) -> Option<f64> {
            self.rates_known().then(|| self.rate(|c| c.slow))
        }
    }

    const FAST: Duration = Duration::from_millis(10);
    const SLOW: Duration = Duration::from_millis(2001);
    const WAIT: Duration = Duration::from_secs(30);

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig::default())
    }

    /// Runs permitted calls; returns the last transition they caused.
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

    fn transition(from: BreakerState, to: BreakerState) -> Option<Transition> {
        Some(Transition { from, to })
    }

    /// A breaker opened at `t0`.
    fn opened(t0: Instant) -> CircuitBreaker {
        let mut b = breaker();
        run(&mut b, &mix(10, 0), t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        b
    }

    #[test]
    fn defaults() {
        let c = BreakerConfig::default();
        assert_eq!(
            (c.window_size, c.minimum_calls, c.half_open_calls),
            (100, 10, 10)
        );
        assert_eq!(
            (c.failure_rate_threshold, c.slow_call_rate_threshold),
            (50.0, 50.0)
        );
        assert_eq!(
            (c.slow_call_duration, c.wait_in_open),
            (Duration::from_secs(2), WAIT)
        );
    }

    #[test]
    fn state_labels() {
        let names: Vec<_> = BreakerState::ALL.iter().map(BreakerState::as_str).collect();
        assert_eq!(names, ["closed", "open", "half_open"]);
    }

    #[test]
    fn needs_the_minimum_number_of_calls() {
        let t0 = Instant::now();
        let mut b = breaker();
        assert_eq!(run(&mut b, &mix(9, 0), t0), None);
        assert_eq!(b.state(t0), BreakerState::Closed);
        assert_eq!(b.failure_rate(), None);
        assert_eq!(b.slow_call_rate(), None);
        let t = run(&mut b, &mix(0, 1), t0);
        assert_eq!(
            t,
            transition(BreakerState::Closed, BreakerState::Open),
            "9/10"
        );
        assert_eq!(b.state(t0), BreakerState::Open);
    }

    #[test]
    fn failure_threshold_both_sides() {
        let t0 = Instant::now();
        // Successes first so the rate only reaches its final value at the 10th call.
        for failures in 0..=10 {
            let mut b = breaker();
            let mut calls = mix(0, 10 - failures);
            calls.extend(mix(failures, 0));
            let t = run(&mut b, &calls, t0);
            let opens = failures >= 5;
            assert_eq!(t.is_some(), opens, "{failures}/10 failures");
            if !opens {
                assert_eq!(b.failure_rate(), Some(failures as f64 * 10.0));
            }
        }
    }

    #[test]
    fn slow_calls_count_strictly_above_the_limit() {
        let t0 = Instant::now();
        let cases = [
            (Duration::from_millis(1999), false),
            (Duration::from_secs(2), false),
            (Duration::from_nanos(2_000_000_001), true),
            (Duration::from_millis(2001), true),
        ];
        for (d, slow) in cases {
            let mut b = breaker();
            let mut opened = None;
            for _ in 0..10 {
                b.try_acquire(t0).unwrap();
                opened = opened.or(b.on_result(Outcome::Success, d, t0));
            }
            assert_eq!(opened.is_some(), slow, "{d:?}");
            if !slow {
                assert_eq!(b.slow_call_rate(), Some(0.0));
            }
        }
    }

    #[test]
    fn slow_threshold_both_sides() {
        let t0 = Instant::now();
        for slow in 0..=10 {
            let mut b = breaker();
            let mut opened = None;
            for i in 0..10 {
                b.try_acquire(t0).unwrap();
                let d = if i >= 10 - slow { SLOW } else { FAST };
                opened = opened.or(b.on_result(Outcome::Success, d, t0));
            }
            assert_eq!(opened.is_some(), slow >= 5, "{slow}/10 slow");
        }
    }

    #[test]
    fn a_slow_failure_counts_for_both_rates() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..6 {
            b.try_acquire(t0).unwrap();
            b.on_result(Outcome::Success, FAST, t0);
        }
        for _ in 0..4 {
            b.try_acquire(t0).unwrap();
            b.on_result(Outcome::Failure, SLOW, t0);
        }
        assert_eq!(b.failure_rate(), Some(40.0));
        assert_eq!(b.slow_call_rate(), Some(40.0));
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn window_slides() {
        let t0 = Instant::now();
        let mut b = breaker();
        let mut calls = mix(0, 51);
        calls.extend(mix(49, 0));
        assert_eq!(run(&mut b, &calls, t0), None);
        assert_eq!(b.failure_rate(), Some(49.0));
        // New successes first push out the 51 old successes, then the failures.
        run(&mut b, &mix(0, 51), t0);
        assert_eq!(b.failure_rate(), Some(49.0), "the 51 oldest were successes");
        run(&mut b, &mix(0, 48), t0);
        assert_eq!(b.failure_rate(), Some(1.0));
        run(&mut b, &mix(0, 1), t0);
        assert_eq!(
            b.failure_rate(),
            Some(0.0),
            "old failures rolled out after 100"
        );
        // Exactly 100 calls count: 49 new failures stay closed, the 50th opens.
        assert_eq!(run(&mut b, &mix(49, 0), t0), None);
        let t = run(&mut b, &mix(1, 0), t0);
        assert_eq!(t, transition(BreakerState::Closed, BreakerState::Open));
    }

    #[test]
    fn open_waits_exactly_the_configured_time() {
        let t0 = Instant::now();
        let mut b = opened(t0);
        let cases = [
            (Duration::ZERO, WAIT),
            (Duration::from_secs(1), Duration::from_secs(29)),
            (Duration::from_millis(29_999), Duration::from_millis(1)),
        ];
        for (waited, retry_in) in cases {
            let now = t0 + waited;
            assert_eq!(b.state(now), BreakerState::Open);
            assert_eq!(b.try_acquire(now), Err(NotPermitted { retry_in }));
        }
        // A clock going backwards does not panic either.
        let earlier = t0.checked_sub(Duration::from_secs(1)).unwrap_or(t0);
        assert_eq!(b.try_acquire(earlier), Err(NotPermitted { retry_in: WAIT }));

        let t30 = t0 + WAIT;
        assert_eq!(
            b.state(t30),
            BreakerState::HalfOpen,
            "reported before any call"
        );
        let t = b.try_acquire(t30).unwrap();
        assert_eq!(t, transition(BreakerState::Open, BreakerState::HalfOpen));
        assert_eq!(b.state(t30), BreakerState::HalfOpen);
    }

    #[test]
    fn half_open_permits_exactly_the_trial_calls() {
        let t0 = Instant::now();
        let t30 = t0 + WAIT;
        let mut b = opened(t0);
        assert!(
            b.try_acquire(t30).unwrap().is_some(),
            "first trial moves to half-open"
        );
        for _ in 1..10 {
            assert_eq!(b.try_acquire(t30), Ok(None));
        }
        let err = b.try_acquire(t30).unwrap_err();
        assert_eq!(err.retry_in, Duration::ZERO);
        // Results that are in do not hand out more permits.
        b.on_result(Outcome::Success, FAST, t30);
        assert!(b.try_acquire(t30 + Duration::from_secs(60)).is_err());
        assert_eq!(b.failure_rate(), None, "trial results still coming");
    }

    #[test]
    fn half_open_verdict_both_sides() {
        let t0 = Instant::now();
        let t30 = t0 + WAIT;
        for failures in 0..=10 {
            let mut b = opened(t0);
            let mut calls = mix(0, 10 - failures);
            calls.extend(mix(failures, 0));
            let t = run(&mut b, &calls, t30);
            let to = if failures >= 5 {
                BreakerState::Open
            } else {
                BreakerState::Closed
            };
            assert_eq!(
                t,
                transition(BreakerState::HalfOpen, to),
                "{failures}/10 failed"
            );
        }
    }

    #[test]
    fn half_open_waits_for_all_trial_results() {
        let t0 = Instant::now();
        let t30 = t0 + WAIT;
        let mut b = opened(t0);
        for _ in 0..10 {
            b.try_acquire(t30).unwrap();
        }
        for _ in 0..9 {
            assert_eq!(b.on_result(Outcome::Failure, FAST, t30), None);
        }
        assert_eq!(b.state(t30), BreakerState::HalfOpen);
        let t = b.on_result(Outcome::Success, FAST, t30);
        assert_eq!(t, transition(BreakerState::HalfOpen, BreakerState::Open));
    }

    #[test]
    fn half_open_slow_trials_reopen() {
        let t0 = Instant::now();
        let t30 = t0 + WAIT;
        let mut b = opened(t0);
        let mut last = None;
        for i in 0..10 {
            b.try_acquire(t30).unwrap();
            let d = if i < 5 { SLOW } else { FAST };
            last = b.on_result(Outcome::Success, d, t30);
        }
        assert_eq!(last, transition(BreakerState::HalfOpen, BreakerState::Open));
    }

    #[test]
    fn closing_starts_a_fresh_window() {
        let t0 = Instant::now();
        let t30 = t0 + WAIT;
        let mut b = opened(t0);
        let t = run(&mut b, &mix(4, 6), t30);
        assert_eq!(t, transition(BreakerState::HalfOpen, BreakerState::Closed));
        assert_eq!(b.state(t30), BreakerState::Closed);
        assert_eq!(b.failure_rate(), None, "fresh window");
        // The 4 trial failures do not count: 5 failures of the next 10 are needed.
        let mut calls = mix(0, 6);
        calls.extend(mix(4, 0));
        assert_eq!(run(&mut b, &calls, t30), None);
    }

    #[test]
    fn reopening_restarts_the_wait() {
        let t0 = Instant::now();
        let t30 = t0 + WAIT;
        let mut b = opened(t0);
        run(&mut b, &mix(5, 5), t30 + Duration::from_secs(5));
        let reopened = t30 + Duration::from_secs(5);
        let almost = reopened + Duration::from_millis(29_999);
        assert_eq!(b.state(almost), BreakerState::Open);
        let err = b.try_acquire(almost).unwrap_err();
        assert_eq!(err.retry_in, Duration::from_millis(1));
        let t = b.try_acquire(reopened + WAIT).unwrap();
        assert_eq!(t, transition(BreakerState::Open, BreakerState::HalfOpen));
    }

    #[test]
    fn results_while_open_are_ignored() {
        let t0 = Instant::now();
        let mut b = breaker();
        // Calls permitted while closed, finishing after the breaker opened.
        for _ in 0..5 {
            b.try_acquire(t0).unwrap();
        }
        run(&mut b, &mix(10, 0), t0);
        for _ in 0..5 {
            assert_eq!(b.on_result(Outcome::Success, FAST, t0), None);
        }
        assert_eq!(b.state(t0), BreakerState::Open);
        assert_eq!(b.failure_rate(), None);
        // They do not count as trial results either.
        let t30 = t0 + WAIT;
        b.try_acquire(t30).unwrap();
        assert_eq!(run(&mut b, &mix(0, 8), t30), None);
        assert_eq!(b.state(t30), BreakerState::HalfOpen);
    }

    #[test]
    fn degenerate_configs_are_adjusted() {
        let t0 = Instant::now();
        let cfg = BreakerConfig {
            window_size: 0,
            minimum_calls: 0,
            half_open_calls: 0,
            ..BreakerConfig::default()
        };
        let mut b = CircuitBreaker::new(cfg);
        assert_eq!(
            (
                b.config().window_size,
                b.config().minimum_calls,
                b.config().half_open_calls
            ),
            (1, 1, 1)
        );
        assert_eq!(b.failure_rate(), None);
        run(&mut b, &mix(0, 3), t0);
        assert_eq!(b.failure_rate(), Some(0.0));
        let t = run(&mut b, &mix(1, 0), t0);
        assert_eq!(t, transition(BreakerState::Closed, BreakerState::Open));

        let capped = CircuitBreaker::new(BreakerConfig {
            window_size: 5,
            minimum_calls: 50,
            ..BreakerConfig::default()
        });
        assert_eq!(capped.config().minimum_calls, 5);
    }

    #[test]
    fn small_window_opens_at_its_own_minimum() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig {
            window_size: 4,
            minimum_calls: 10,
            ..BreakerConfig::default()
        });
        assert_eq!(run(&mut b, &mix(0, 3), t0), None);
        assert_eq!(run(&mut b, &mix(1, 0), t0), None, "1/4");
        let t = run(&mut b, &mix(1, 0), t0);
        assert_eq!(
            t,
            transition(BreakerState::Closed, BreakerState::Open),
            "2/4"
        );
    }

    #[test]
    fn a_passed_probe_half_opens_an_open_breaker_at_once() {
        let mut b = breaker();
        let t0 = Instant::now();
        assert_eq!(b.probe_passed(t0), None, "closed: nothing to do");
        let opened = run(&mut b, &[Outcome::Failure; 10], t0).expect("opened");
        assert_eq!(opened.to, BreakerState::Open);
        assert!(b.try_acquire(t0 + Duration::from_secs(1)).is_err());
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            b.probe_passed(t1),
            Some(Transition {
                from: BreakerState::Open,
                to: BreakerState::HalfOpen
            })
        );
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        assert_eq!(b.probe_passed(t1), None, "already half-open");
        // The trial calls decide as usual: ten successes close it, ...
        let closed = run(&mut b, &[Outcome::Success; 10], t1).expect("closed");
        assert_eq!(closed.to, BreakerState::Closed);
        // ... ten failures open it again for a full wait.
        run(&mut b, &[Outcome::Failure; 10], t1).expect("opened");
        b.probe_passed(t1 + Duration::from_secs(2))
            .expect("half-open");
        let reopened = run(&mut b, &[Outcome::Failure; 10], t1).expect("reopened");
        assert_eq!(reopened.to, BreakerState::Open);
        assert!(b.try_acquire(t1 + WAIT - Duration::from_secs(1)).is_err());
    }
}
