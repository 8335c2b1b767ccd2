//! The consume loop's flow-control decision: pause or not, take a message or not. Pure: the
//! loop passes in what it measured.

use std::time::Duration;

use flow_control::BreakerState;

/// Whether the partitions should be paused, and whether the loop may take a message now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub pause: bool,
    pub take: bool,
}

/// The flow-control policy. At the in-flight limit the loop stops taking messages at once,
/// but pauses only once the limit has held for `pause_after` (pausing discards librdkafka's
/// prefetched records, and fetching them again after each resume is what limits a
/// backlog's drain rate). The breaker pauses at once: open, nothing can be written;
/// half-open, the retrying batches are the trial calls, so fetch more only once closed.
/// A paused consumer takes (polls) again: paused partitions deliver nothing, and polling
/// serves rebalances and keeps `max.poll.interval.ms` from evicting it.
pub fn flow(
    in_flight: usize,
    max_in_flight: usize,
    full_for: Option<Duration>,
    pause_after: Duration,
    breaker: BreakerState,
    paused: bool,
) -> Flow {
    let full = in_flight >= max_in_flight;
    let stalled = full && full_for.is_some_and(|d| d >= pause_after);
    let pause = stalled
        || breaker == BreakerState::Open
        || (breaker == BreakerState::HalfOpen && in_flight > 0);
    Flow {
        pause,
        take: !full || paused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 100;
    const GRACE: Duration = Duration::from_millis(1000);

    fn decide(
        in_flight: usize,
        full_for_ms: Option<u64>,
        breaker: BreakerState,
        paused: bool,
    ) -> Flow {
        flow(
            in_flight,
            MAX,
            full_for_ms.map(Duration::from_millis),
            GRACE,
            breaker,
            paused,
        )
    }

    #[test]
    fn below_the_limit_takes_without_pausing() {
        let f = decide(MAX - 1, None, BreakerState::Closed, false);
        assert_eq!(
            f,
            Flow {
                pause: false,
                take: true
            }
        );
    }

    #[test]
    fn at_the_limit_stops_taking_at_once_but_pauses_only_after_the_grace() {
        let f = decide(MAX, Some(0), BreakerState::Closed, false);
        assert_eq!(
            f,
            Flow {
                pause: false,
                take: false
            }
        );
        let f = decide(MAX, Some(999), BreakerState::Closed, false);
        assert_eq!(
            f,
            Flow {
                pause: false,
                take: false
            }
        );
        let f = decide(MAX, Some(1000), BreakerState::Closed, false);
        assert!(f.pause);
    }

    #[test]
    fn a_paused_consumer_keeps_polling_even_when_full() {
        let f = decide(MAX, Some(5000), BreakerState::Closed, true);
        assert_eq!(
            f,
            Flow {
                pause: true,
                take: true
            }
        );
    }

    #[test]
    fn draining_below_the_limit_resumes() {
        let f = decide(MAX - 1, None, BreakerState::Closed, true);
        assert_eq!(
            f,
            Flow {
                pause: false,
                take: true
            }
        );
    }

    #[test]
    fn an_open_breaker_pauses_at_once() {
        let f = decide(0, None, BreakerState::Open, false);
        assert!(f.pause);
        let f = decide(MAX, Some(0), BreakerState::Open, false);
        assert!(f.pause);
        assert!(!f.take, "not yet paused and full: take nothing");
    }

    #[test]
    fn half_open_waits_for_the_trial_batches_before_fetching_more() {
        assert!(decide(3, None, BreakerState::HalfOpen, false).pause);
        assert!(!decide(0, None, BreakerState::HalfOpen, true).pause);
    }
}
