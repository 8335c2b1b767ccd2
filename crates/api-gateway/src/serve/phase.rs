//! When the server closes a connection on its own: the header and idle deadlines as a pure
//! state machine (the caller passes `now`), applied to the socket by [`super::guard`].
//!
//! hyper's own `header_read_timeout` starts when a connection *becomes* idle, so it would close
//! keep-alive connections after the header timeout; here the header clock starts at a
//! request's first byte (at the accept for a connection's first request) and an idle
//! connection has its own, longer, clock.

use std::time::{Duration, Instant};

/// Why the server closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A request head was not complete in time (slowloris).
    Header,
    /// Nothing of a next request arrived in time on a keep-alive connection.
    Idle,
}

impl Expiry {
    pub fn as_str(self) -> &'static str {
        match self {
            Expiry::Header => "header_timeout",
            Expiry::Idle => "idle_timeout",
        }
    }
}

/// The two connection-level timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading a request head whose clock started at `since`.
    Head { since: Instant },
    /// Between requests, nothing of the next one read yet.
    Idle { since: Instant },
    /// A request is with the handler: the handler's deadlines apply (body read, produce).
    Serving,
}

impl Phase {
    /// A new connection: its first request head is due within the header timeout.
    pub fn accepted(now: Instant) -> Phase {
        Phase::Head { since: now }
    }

    /// Bytes arrived. The first byte after an idle spell starts the next head's clock; bytes
    /// read while serving (body, or a pipelined next head) change nothing, so a partial
    /// pipelined head is bounded by the idle timeout, not the header timeout.
    pub fn bytes_read(&mut self, now: Instant) {
        if let Phase::Idle { .. } = self {
            *self = Phase::Head { since: now };
        }
    }

    /// hyper parsed a head and called the service.
    pub fn request_started(&mut self) {
        *self = Phase::Serving;
    }

    /// The handler answered; the connection is idle until the next request's first byte.
    pub fn response_ready(&mut self, now: Instant) {
        *self = Phase::Idle { since: now };
    }

    /// When the connection must be closed if still in this phase, and why.
    pub fn deadline(&self, timeouts: &Timeouts) -> Option<(Instant, Expiry)> {
        match *self {
            Phase::Head { since } => Some((since + timeouts.header, Expiry::Header)),
            Phase::Idle { since } => Some((since + timeouts.idle, Expiry::Idle)),
            Phase::Serving => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(5),
        idle: Duration::from_secs(60),
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_first_request_is_due_within_the_header_timeout_of_the_accept() {
        let t0 = Instant::now();
        let mut phase = Phase::accepted(t0);
        phase.bytes_read(t0 + secs(3));
        assert_eq!(phase.deadline(&T), Some((t0 + secs(5), Expiry::Header)));
    }

    #[test]
    fn serving_has_no_connection_deadline() {
        let t0 = Instant::now();
        let mut phase = Phase::accepted(t0);
        phase.request_started();
        phase.bytes_read(t0 + secs(100));
        assert_eq!(phase.deadline(&T), None);
    }

    #[test]
    fn idle_then_the_next_heads_clock_starts_at_its_first_byte() {
        let t0 = Instant::now();
        let mut phase = Phase::accepted(t0);
        phase.request_started();
        phase.response_ready(t0 + secs(1));
        assert_eq!(phase.deadline(&T), Some((t0 + secs(61), Expiry::Idle)));
        phase.bytes_read(t0 + secs(30));
        assert_eq!(phase.deadline(&T), Some((t0 + secs(35), Expiry::Header)));
        // Trickled bytes of the same head do not move its deadline.
        phase.bytes_read(t0 + secs(34));
        assert_eq!(phase.deadline(&T), Some((t0 + secs(35), Expiry::Header)));
    }
}
