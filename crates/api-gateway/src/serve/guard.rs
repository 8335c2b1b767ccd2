//! Applies [`Phase`] to one connection: the socket wrapper fails a read that waits past the
//! phase's deadline (hyper then closes the connection), the service wrapper marks where each
//! request starts and ends.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::phase::{Phase, Timeouts};
use super::Listener;
use crate::metrics;

/// The phase of one connection, shared by its socket and its service.
#[derive(Debug)]
pub(crate) struct ConnPhase {
    phase: Mutex<Phase>,
    timeouts: Timeouts,
}

impl ConnPhase {
    pub(crate) fn new(timeouts: Timeouts, now: Instant) -> Arc<ConnPhase> {
        Arc::new(ConnPhase {
            phase: Mutex::new(Phase::accepted(now)),
            timeouts,
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Phase) -> R) -> R {
        // The lock is only held for a field update; a panic cannot leave it half-done.
        f(&mut self.phase.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn request_started(&self) {
        self.with(Phase::request_started);
    }

    pub(crate) fn response_ready(&self) {
        let now = Instant::now();
        self.with(|p| p.response_ready(now));
    }
}

/// A socket that fails reads once its connection's deadline has passed.
pub(crate) struct GuardedIo<T> {
    io: T,
    conn: Arc<ConnPhase>,
    listener: Listener,
    /// One timer per connection, reset when the deadline moves.
    sleep: Option<Pin<Box<Sleep>>>,
    armed: Option<Instant>,
}

impl<T> GuardedIo<T> {
    pub(crate) fn new(io: T, conn: Arc<ConnPhase>, listener: Listener) -> Self {
        GuardedIo {
            io,
            conn,
            listener,
            sleep: None,
            armed: None,
        }
    }

    /// Whether `deadline` has passed; if not, the task is woken when it does.
    fn passed(&mut self, cx: &mut Context<'_>, now: Instant, deadline: Instant) -> bool {
        if now >= deadline {
            return true;
        }
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        if self.armed != Some(deadline) {
            sleep.as_mut().reset(deadline.into());
            self.armed = Some(deadline);
        }
        sleep.as_mut().poll(cx).is_ready()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        let now = Instant::now();
        let got_bytes = buf.filled().len() > before;
        let deadline = this.conn.with(|phase| {
            if got_bytes {
                phase.bytes_read(now);
            }
            phase.deadline(&this.conn.timeouts)
        });
        // Data is handed over even late: the deadline is checked whenever hyper waits.
        if read.is_ready() {
            return read;
        }
        let Some((at, expiry)) = deadline else {
            return Poll::Pending;
        };
        if !this.passed(cx, now, at) {
            return Poll::Pending;
        }
        metrics::connection_expired(this.listener, expiry);
        tracing::debug!(reason = expiry.as_str(), "closing connection");
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            expiry.as_str(),
        )))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
