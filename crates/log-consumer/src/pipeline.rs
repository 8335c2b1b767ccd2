//! The consume → batch → write → commit loop.
//!
//! Flow control lives here: at most `MAX_IN_FLIGHT` events between "received" and "durable"
//! (at the limit the loop stops taking messages; if it stays there past `PAUSE_AFTER_FULL_MS`
//! the partitions are paused and polling continues, so the group never evicts us); the
//! database circuit breaker pauses everything while open; a
//! failed batch is retried with backoff, never skipped; and only the contiguous watermark
//! of durable offsets (flow_control::OffsetTracker) is ever committed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flow_control::{Backoff, BreakerConfig, BreakerState, CircuitBreaker, OffsetTracker, Outcome};
use log_event::{Limits, LogEvent};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, Semaphore};

use crate::config::Config;
use crate::db::{Db, DbError, Row};
use crate::dlq::DeadLetterTopic;
use crate::metrics;

/// State shared with the health endpoint and the rebalance callbacks.
pub struct Shared {
    pub in_flight: AtomicUsize,
    /// The most events ever in flight at once (health shows it: the bound, proven).
    pub in_flight_peak: AtomicUsize,
    pub max_in_flight: usize,
    pub paused: AtomicBool,
    pub subscribed: AtomicBool,
    pub assigned: Mutex<Vec<i32>>,
    pub breaker: Mutex<CircuitBreaker>,
    pub last_commit: Mutex<Option<Instant>>,
    pub tracker: Mutex<OffsetTracker>,
    pub rebalances: AtomicUsize,
}

impl Shared {
    pub fn new(cfg: &Config) -> Arc<Shared> {
        Arc::new(Shared {
            in_flight: AtomicUsize::new(0),
            in_flight_peak: AtomicUsize::new(0),
            max_in_flight: cfg.max_in_flight.max(1),
            paused: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            assigned: Mutex::new(Vec::new()),
            breaker: Mutex::new(CircuitBreaker::new(BreakerConfig {
                wait_in_open: Duration::from_secs(cfg.breaker_open_secs),
                ..BreakerConfig::default()
            })),
            last_commit: Mutex::new(None),
            tracker: Mutex::new(OffsetTracker::new()),
            rebalances: AtomicUsize::new(0),
        })
    }

    pub fn breaker_state(&self) -> BreakerState {
        lock(&self.breaker).state(Instant::now())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Rebalance-aware context: commits what is durable for revoked partitions, drops their
/// pending state, and re-pauses newly assigned partitions while paused.
pub struct Context {
    shared: Arc<Shared>,
    topic: String,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        service_runtime::kafka_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        service_runtime::kafka_error(error, reason);
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let mut commit = TopicPartitionList::new();
        {
            let mut tracker = lock(&self.shared.tracker);
            for elem in tpl.elements() {
                if let Some(offset) = tracker.revoke(elem.partition()) {
                    let _ = commit.add_partition_offset(
                        &self.topic,
                        elem.partition(),
                        Offset::Offset(offset),
                    );
                }
            }
        }
        if commit.count() > 0 {
            match consumer.commit(&commit, CommitMode::Sync) {
                Ok(()) => tracing::info!(
                    partitions = commit.count(),
                    "committed durable offsets of revoked partitions"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "commit on revoke failed (rows are idempotent; the new owner re-reads)")
                }
            }
        }
        lock(&self.shared.assigned).clear();
        metrics::assigned(0);
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        self.shared.rebalances.fetch_add(1, Ordering::Relaxed);
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        {
            let mut tracker = lock(&self.shared.tracker);
            for p in &partitions {
                tracker.reset(*p);
            }
        }
        tracing::info!(?partitions, "partitions assigned");
        metrics::assigned(partitions.len());
        *lock(&self.shared.assigned) = partitions;
        // Pausing is per assigned partition: a paused consumer must pause new ones too.
        if self.shared.paused.load(Ordering::Relaxed) {
            if let Err(e) = consumer.pause(tpl) {
                tracing::warn!(error = %e, "could not pause newly assigned partitions");
            }
        }
    }
}

/// Offsets that became durable (or dead-lettered).
type Done = Vec<(i32, i64)>;

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

/// Runs until `shutdown` resolves; then stops fetching, gives in-flight batches a bounded
/// time to finish, commits what is durable and returns.
pub async fn run(
    cfg: Config,
    db: Db,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), crate::Error> {
    let topic = cfg.kafka_topic.clone();
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &cfg.kafka_brokers)
        .set("group.id", &cfg.kafka_group_id)
        .set("client.id", "log-consumer")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // A dead member's partitions move after the session timeout: a consumer killed and
        // restarted resumes within it (the broker's minimum is 6 s).
        .set("session.timeout.ms", "10000")
        .set("max.poll.interval.ms", "300000")
        .set("fetch.wait.max.ms", cfg.kafka_fetch_wait_max_ms.to_string())
        .set("queued.min.messages", "20000")
        .set(
            "max.partition.fetch.bytes",
            cfg.kafka_max_partition_fetch_bytes.to_string(),
        );
    for (key, value) in cfg.librdkafka_overrides()? {
        client.set(key, value);
    }
    let consumer: StreamConsumer<Context> = client.create_with_context(Context {
        shared: shared.clone(),
        topic: topic.clone(),
    })?;
    consumer.subscribe(&[&topic])?;
    shared.subscribed.store(true, Ordering::Relaxed);
    metrics::in_flight(0, shared.max_in_flight);
    metrics::breaker(BreakerState::Closed);
    metrics::paused(false);
    metrics::assigned(0);

    let dlq = DeadLetterTopic::new(&cfg.kafka_brokers, cfg.dlq_topic())?;
    let limits = Limits::default();
    let writers = Arc::new(Semaphore::new(cfg.db_concurrency.max(1)));
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(cfg.max_in_flight.max(16));
    let mut batch: Vec<Row> = Vec::with_capacity(cfg.batch_size);
    let mut batch_started = Instant::now();
    let mut last_commit = Instant::now();
    let commit_every = Duration::from_millis(cfg.commit_interval_ms.max(50));
    let mut tick = tokio::time::interval(
        cfg.batch_linger()
            .clamp(Duration::from_millis(5), Duration::from_millis(200)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_state = BreakerState::Closed;
    let pause_after = cfg.pause_after_full();
    let mut full_since: Option<Instant> = None;
    tokio::pin!(shutdown);

    loop {
        // Flow control before taking anything more.
        let state = shared.breaker_state();
        if state != last_state {
            tracing::warn!(
                from = last_state.as_str(),
                to = state.as_str(),
                "database circuit breaker"
            );
            metrics::breaker(state);
            last_state = state;
        }
        let in_flight = shared.in_flight.load(Ordering::Relaxed);
        if in_flight < shared.max_in_flight {
            full_since = None;
        } else if full_since.is_none() {
            full_since = Some(Instant::now());
        }
        let decision = flow(
            in_flight,
            shared.max_in_flight,
            full_since.map(|t| t.elapsed()),
            pause_after,
            state,
            shared.paused.load(Ordering::Relaxed),
        );
        if decision.pause != shared.paused.load(Ordering::Relaxed) {
            set_paused(&consumer, &shared, decision.pause);
        }
        // Decided again with the pause as it really is (pausing can fail without an assignment).
        let take = flow(
            in_flight,
            shared.max_in_flight,
            None,
            pause_after,
            state,
            shared.paused.load(Ordering::Relaxed),
        )
        .take;

        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(done) = done_rx.recv() => apply_done(&shared, &done),
            msg = consumer.recv(), if take => {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka receive error");
                        continue;
                    }
                };
                if shared.paused.load(Ordering::Relaxed) {
                    // librdkafka filters messages of paused partitions (a pause bumps the
                    // partition's op version); should one get through, process it: dropping
                    // it would let the watermark pass an offset never written.
                    tracing::warn!(partition = msg.partition(), offset = msg.offset(), "message while paused: processing it");
                }
                let (partition, offset) = (msg.partition(), msg.offset());
                if !lock(&shared.tracker).received(partition, offset) {
                    continue; // a redelivery of something already tracked
                }
                let now_in_flight = shared.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
                shared.in_flight_peak.fetch_max(now_in_flight, Ordering::Relaxed);
                let payload = msg.payload().unwrap_or_default();
                match LogEvent::from_record(payload, &limits) {
                    Ok(event) => {
                        if batch.is_empty() {
                            batch_started = Instant::now();
                        }
                        batch.push(Row { event, partition, offset, raw: payload.to_vec() });
                        if batch.len() >= cfg.batch_size {
                            spawn_write(std::mem::take(&mut batch), &db, &shared, &writers, &done_tx, &topic);
                        }
                    }
                    Err(e) => {
                        dlq.send(payload.to_vec(), msg.key().map(<[u8]>::to_vec), e.to_string(), &topic, partition, offset, done_tx.clone());
                    }
                }
            }
            _ = tick.tick() => {}
        }

        if !batch.is_empty() && batch_started.elapsed() >= cfg.batch_linger() {
            spawn_write(
                std::mem::take(&mut batch),
                &db,
                &shared,
                &writers,
                &done_tx,
                &topic,
            );
        }
        if last_commit.elapsed() >= commit_every {
            commit(&consumer, &shared, &topic, CommitMode::Async);
            publish_metrics(&shared, &db);
            last_commit = Instant::now();
        }
    }

    // Shutdown: stop fetching, let in-flight batches finish within a bound, commit.
    tracing::info!("shutdown requested: finishing in-flight batches");
    set_paused(&consumer, &shared, true);
    if !batch.is_empty() {
        spawn_write(
            std::mem::take(&mut batch),
            &db,
            &shared,
            &writers,
            &done_tx,
            &topic,
        );
    }
    let deadline = tokio::time::Instant::now() + cfg.shutdown_grace();
    while shared.in_flight.load(Ordering::Relaxed) > 0 {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some(done)) => apply_done(&shared, &done),
            _ => {
                tracing::warn!(
                    abandoned = shared.in_flight.load(Ordering::Relaxed),
                    "abandoning unfinished batches (not committed)"
                );
                break;
            }
        }
    }
    commit(&consumer, &shared, &topic, CommitMode::Sync);
    publish_metrics(&shared, &db);
    dlq.flush();
    Ok(())
}

/// Marks offsets durable in the tracker and releases their in-flight slots.
fn apply_done(shared: &Shared, done: &Done) {
    let mut tracker = lock(&shared.tracker);
    for (p, o) in done {
        tracker.completed(*p, *o);
    }
    drop(tracker);
    shared.in_flight.fetch_sub(done.len(), Ordering::Relaxed);
}

fn set_paused(consumer: &StreamConsumer<Context>, shared: &Shared, pause: bool) {
    let assignment = match consumer.assignment() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "no assignment to pause/resume");
            return;
        }
    };
    // Set the flag first so a rebalance in between re-pauses what it assigns.
    shared.paused.store(pause, Ordering::Relaxed);
    let result = if pause {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, pause, "pause/resume failed");
    }
    metrics::paused(pause);
    tracing::debug!(pause, partitions = assignment.count(), "flow control");
}

fn commit(consumer: &StreamConsumer<Context>, shared: &Shared, topic: &str, mode: CommitMode) {
    let points = lock(&shared.tracker).to_commit();
    if points.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in &points {
        let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*o));
    }
    match consumer.commit(&tpl, mode) {
        Ok(()) => {
            let mut tracker = lock(&shared.tracker);
            for (p, o) in &points {
                tracker.mark_committed(*p, *o);
                metrics::committed_offset(*p, *o);
            }
            *lock(&shared.last_commit) = Some(Instant::now());
        }
        Err(e) => tracing::warn!(error = %e, "offset commit failed; will retry"),
    }
}

fn publish_metrics(shared: &Shared, db: &Db) {
    // Every tracked partition, committed or not: a lag that stops moving is the signal.
    {
        let tracker = lock(&shared.tracker);
        for p in tracker.partitions() {
            metrics::commit_lag(p, tracker.commit_lag(p));
        }
    }
    metrics::in_flight(
        shared.in_flight.load(Ordering::Relaxed),
        shared.max_in_flight,
    );
    let (size, idle, waiting, max) = db.usage();
    metrics::pool(size, idle, waiting, max);
    metrics::breaker(shared.breaker_state());
}

/// Writes in the background; the task waits for a writer slot itself, so the consume loop
/// never blocks (it must keep polling, pausing and committing during an outage). Waiting
/// tasks are bounded because every batch holds in-flight events.
fn spawn_write(
    rows: Vec<Row>,
    db: &Db,
    shared: &Arc<Shared>,
    writers: &Arc<Semaphore>,
    done: &mpsc::Sender<Done>,
    topic: &str,
) {
    let (db, shared, done, topic, writers) = (
        db.clone(),
        shared.clone(),
        done.clone(),
        topic.to_owned(),
        writers.clone(),
    );
    tokio::spawn(async move {
        let permit = writers
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let offsets = write_with_retry(&rows, &db, &shared, &topic).await;
        drop(permit);
        let _ = done.send(offsets).await;
    });
}

/// Delays between a failed batch's retries: 100 ms doubling, at most 1 s.
///
/// The breaker, not this backoff, is what keeps the load off a database that is down (open,
/// nothing is sent for `BREAKER_OPEN_SECS`). A long per-batch backoff only hides the outage
/// from the breaker: after a window of 100 successes it takes 50 failures to open it, and
/// with only `DB_CONCURRENCY` batches retrying, a 10 s cap meant over a minute of a dead
/// database before the partitions were paused. At 1 s and 4 writers it takes about 10 s.
const WRITE_RETRY: Backoff = Backoff {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(1),
    factor: 2.0,
};

/// Writes a batch until it is durable: transient failures are retried (through the
/// breaker, with `WRITE_RETRY` between attempts) forever; a permanent failure splits the
/// batch to isolate the bad rows, which go to `dead_letters`.
async fn write_with_retry(rows: &[Row], db: &Db, shared: &Shared, topic: &str) -> Done {
    let mut attempt = 0u32;
    loop {
        let permitted = lock(&shared.breaker).try_acquire(Instant::now());
        if let Err(np) = permitted {
            tokio::time::sleep(
                np.retry_in
                    .clamp(Duration::from_millis(50), Duration::from_secs(1)),
            )
            .await;
            continue;
        }
        let started = Instant::now();
        let result = db.insert_batch(rows).await;
        let elapsed = started.elapsed();
        match result {
            Ok(inserted) => {
                lock(&shared.breaker).on_result(Outcome::Success, elapsed, Instant::now());
                metrics::batch(rows.len(), elapsed.as_secs_f64());
                metrics::processed("stored", inserted);
                metrics::processed(
                    "duplicate",
                    rows.len() as u64 - inserted.min(rows.len() as u64),
                );
                return rows.iter().map(|r| (r.partition, r.offset)).collect();
            }
            Err(DbError::Transient(e)) => {
                lock(&shared.breaker).on_result(Outcome::Failure, elapsed, Instant::now());
                metrics::db_error("transient");
                if attempt % 10 == 0 {
                    tracing::warn!(error = %e, rows = rows.len(), attempt, "batch write failed; retrying");
                }
                tokio::time::sleep(WRITE_RETRY.delay(attempt)).await;
                attempt = attempt.saturating_add(1);
            }
            Err(DbError::Permanent(e)) => {
                // The database answered: it is healthy, the data is not.
                lock(&shared.breaker).on_result(Outcome::Success, elapsed, Instant::now());
                metrics::db_error("permanent");
                if rows.len() == 1 {
                    dead_letter_row(&rows[0], &e, db, topic).await;
                    return vec![(rows[0].partition, rows[0].offset)];
                }
                tracing::warn!(error = %e, rows = rows.len(), "batch refused; isolating the bad rows");
                let mut done = Vec::with_capacity(rows.len());
                for row in rows {
                    done.extend(
                        Box::pin(write_with_retry(
                            std::slice::from_ref(row),
                            db,
                            shared,
                            topic,
                        ))
                        .await,
                    );
                }
                return done;
            }
        }
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
