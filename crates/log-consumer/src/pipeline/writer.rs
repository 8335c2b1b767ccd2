//! Batch writes: a bounded number at once, each retried through the database circuit
//! breaker until it is durable, with bad rows isolated into `dead_letters`. A finished batch
//! reports its offsets to the loop, which marks them durable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_control::{Backoff, BreakerState, Outcome, Transition};
use tokio::sync::{mpsc, Semaphore};

use super::shared::{lock, Shared};
use crate::db::{Db, DbError, Row};
use crate::metrics;

/// Offsets that became durable (or dead-lettered).
pub(crate) type Done = Vec<(i32, i64)>;

/// Starts batch writes in the background.
pub(crate) struct Writer {
    db: Db,
    shared: Arc<Shared>,
    timeout: Duration,
    slots: Arc<Semaphore>,
    done: mpsc::Sender<Done>,
    topic: String,
}

impl Writer {
    /// At most `concurrency` batches write at once, each attempt bounded by `timeout`;
    /// finished batches go to `done`.
    pub(crate) fn new(
        db: Db,
        shared: Arc<Shared>,
        timeout: Duration,
        concurrency: usize,
        done: mpsc::Sender<Done>,
        topic: String,
    ) -> Writer {
        Writer {
            db,
            shared,
            timeout,
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            done,
            topic,
        }
    }

    /// Writes `rows` in the background; the task waits for a writer slot itself, so the
    /// consume loop never blocks (it must keep polling, pausing and committing during an
    /// outage). Waiting tasks are bounded because every batch holds in-flight events.
    pub(crate) fn spawn(&self, rows: Vec<Row>) {
        let timeout = self.timeout;
        let (db, shared, done, topic, slots) = (
            self.db.clone(),
            self.shared.clone(),
            self.done.clone(),
            self.topic.clone(),
            self.slots.clone(),
        );
        tokio::spawn(async move {
            let permit = slots.acquire_owned().await.expect("semaphore never closed");
            let offsets = write_with_retry(&rows, &db, &shared, &topic, timeout).await;
            drop(permit);
            let _ = done.send(offsets).await;
        });
    }
}

/// Delays between a failed batch's retries: 100 ms doubling to 1 s, short so that a dead
/// database reaches the breaker (which keeps the load off it) within about 10 s; the test
/// below measures it.
const WRITE_RETRY: Backoff = Backoff {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(1),
    factor: 2.0,
};

/// Writes a batch until it is durable: transient failures are retried (through the
/// breaker, with `WRITE_RETRY` between attempts) forever; a permanent failure bisects the
/// batch to isolate the bad rows, which go to `dead_letters`.
async fn write_with_retry(
    rows: &[Row],
    db: &Db,
    shared: &Shared,
    topic: &str,
    timeout: Duration,
) -> Done {
    let mut attempt = 0u32;
    loop {
        let permitted = lock(&shared.breaker).try_acquire(Instant::now());
        match permitted {
            Ok(transition) => report(transition),
            Err(np) => {
                tokio::time::sleep(
                    np.retry_in
                        .clamp(Duration::from_millis(50), Duration::from_secs(1)),
                )
                .await;
                continue;
            }
        }
        let started = Instant::now();
        // A database that hangs without resetting the connection is a failure too.
        let result = match tokio::time::timeout(timeout, db.insert_batch(rows)).await {
            Ok(result) => result,
            Err(_) => Err(DbError::Transient(format!("no answer within {timeout:?}"))),
        };
        let elapsed = started.elapsed();
        match result {
            Ok(inserted) => {
                report(lock(&shared.breaker).on_result(Outcome::Success, elapsed, Instant::now()));
                metrics::batch(rows.len(), elapsed.as_secs_f64());
                metrics::processed("stored", inserted);
                metrics::processed(
                    "duplicate",
                    rows.len() as u64 - inserted.min(rows.len() as u64),
                );
                return rows.iter().map(|r| (r.partition, r.offset)).collect();
            }
            Err(DbError::Transient(e)) => {
                report(lock(&shared.breaker).on_result(Outcome::Failure, elapsed, Instant::now()));
                metrics::db_error("transient");
                if attempt % 10 == 0 {
                    tracing::warn!(error = %e, rows = rows.len(), attempt, "batch write failed; retrying");
                }
                tokio::time::sleep(WRITE_RETRY.delay(attempt)).await;
                attempt = attempt.saturating_add(1);
            }
            Err(DbError::Permanent(e)) => {
                // The database answered: it is healthy, the data is not.
                report(lock(&shared.breaker).on_result(Outcome::Success, elapsed, Instant::now()));
                metrics::db_error("permanent");
                if rows.len() == 1 {
                    dead_letter_row(&rows[0], &e, db, topic).await;
                    return vec![(rows[0].partition, rows[0].offset)];
                }
                tracing::warn!(error = %e, rows = rows.len(), "batch refused; isolating the bad rows");
                // Bisect: a bad row costs about 2·log2(n) statements, not n.
                let (left, right) = rows.split_at(rows.len() / 2);
                let mut done = Box::pin(write_with_retry(left, db, shared, topic, timeout)).await;
                done.extend(Box::pin(write_with_retry(right, db, shared, topic, timeout)).await);
                return done;
            }
        }
    }
}

/// While the breaker is open, pings the database every `every` (each ping bounded by
/// `timeout`); an answer half-opens the breaker at once, so writing resumes about `every`
/// after the database is back instead of at the end of `BREAKER_OPEN_SECS`.
pub(crate) fn spawn_breaker_probe(
    db: Db,
    shared: Arc<Shared>,
    every: Duration,
    timeout: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if shared.breaker_state() != BreakerState::Open {
                continue;
            }
            if let Ok(true) = tokio::time::timeout(timeout, db.ping()).await {
                report(lock(&shared.breaker).probe_passed(Instant::now()));
            }
        }
    })
}

/// Logs and publishes a change of the database breaker's state where the write causing it
/// happens.
fn report(transition: Option<Transition>) {
    if let Some(t) = transition {
        tracing::warn!(
            from = t.from.as_str(),
            to = t.to.as_str(),
            "database circuit breaker"
        );
        metrics::breaker(t.to);
    }
}

async fn dead_letter_row(row: &Row, reason: &str, db: &Db, topic: &str) {
    let backoff = Backoff::default();
    let mut attempt = 0u32;
    loop {
        match db.insert_dead_letter(topic, row, reason).await {
            Ok(()) => {
                metrics::dead_letter("table");
                metrics::processed("dead_lettered", 1);
                tracing::error!(partition = row.partition, offset = row.offset, event_id = %row.event.event_id, reason, "row refused by PostgreSQL: stored in dead_letters");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "dead-letter insert failed; retrying");
                tokio::time::sleep(backoff.delay(attempt)).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_control::{BreakerConfig, BreakerState, CircuitBreaker};

    /// Seconds from the start of an outage (every write fails, fast) to the breaker opening,
    /// when the window is full of successes and `writers` batches retry independently,
    /// each waiting `retry` between its attempts.
    fn seconds_to_open(writers: usize, retry: Backoff) -> f64 {
        let t0 = Instant::now();
        let mut breaker = CircuitBreaker::new(BreakerConfig::default());
        for _ in 0..breaker.config().window_size {
            breaker.try_acquire(t0).unwrap();
            breaker.on_result(Outcome::Success, Duration::from_millis(10), t0);
        }
        // (next attempt, attempts failed so far) per writer.
        let mut next = vec![(Duration::ZERO, 0u32); writers];
        loop {
            let (i, &(at, failed)) = next.iter().enumerate().min_by_key(|(_, n)| n.0).unwrap();
            assert!(at < Duration::from_secs(3_600), "the breaker never opened");
            let now = t0 + at;
            breaker.try_acquire(now).unwrap();
            breaker.on_result(Outcome::Failure, Duration::from_millis(1), now);
            if breaker.state(now) == BreakerState::Open {
                return at.as_secs_f64();
            }
            next[i] = (at + retry.delay(failed), failed + 1);
        }
    }

    #[test]
    fn an_outage_opens_the_breaker_within_seconds_at_the_default_concurrency() {
        let default_writers = 4;
        let secs = seconds_to_open(default_writers, WRITE_RETRY);
        assert!((8.0..15.0).contains(&secs), "{secs} s");
        // More writers, sooner.
        assert!(seconds_to_open(16, WRITE_RETRY) < 3.0);
        // Why the cap is 1 s: the generic 10 s backoff left a dead database to the writers
        // for over a minute (the outage integration test gives the breaker 35 s).
        assert!(seconds_to_open(default_writers, Backoff::default()) > 60.0);
    }
}
