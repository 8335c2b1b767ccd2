//! The consume → batch → write → commit loop.
//!
//! A Kafka message flows forward through the rooms: [`Pipeline::on_message`] (tracked,
//! decoded, batched; poison to the DLQ) → [`writer`] (a batch written through the breaker,
//! retried until durable) → back to the loop as done offsets → [`Shared::apply_done`] → the
//! periodic commit of the contiguous watermark ([`commit`]). [`flow`] decides before each
//! take whether to take and whether to pause; [`shared`] holds the state the health
//! endpoint and the rebalance callbacks read.
//!
//! At most `MAX_IN_FLIGHT` events are between "received" and "durable" (at the limit the loop
//! stops taking messages; still full after `PAUSE_AFTER_FULL_MS`, it pauses the partitions and
//! keeps polling, so the group never evicts it); the open breaker pauses everything; a failed
//! batch is retried, never skipped; only the contiguous watermark of durable offsets
//! (flow_control::OffsetTracker) is ever committed.

mod commit;
mod flow;
mod shared;
mod writer;

pub use flow::{flow, Flow};
pub use shared::{Context, Health, Shared};

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_control::BreakerState;
use log_event::{Limits, LogEvent};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::db::{Db, Row};
use crate::dlq::DeadLetterTopic;
use crate::metrics;
use commit::{commit, publish_metrics};
use shared::lock;
use writer::{Done, Writer};

/// Runs until `shutdown` resolves; then stops fetching, gives in-flight batches a bounded
/// time to finish, commits what is durable and returns.
pub async fn run(
    cfg: Config,
    db: Db,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), crate::Error> {
    let topic = cfg.kafka_topic.clone();
    let mut client = service_runtime::kafka_settings::consumer(
        &cfg.kafka_brokers,
        &cfg.kafka_group_id,
        "log-consumer",
    );
    client
        .set("fetch.wait.max.ms", cfg.kafka_fetch_wait_max_ms.to_string())
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

    let probe = cfg.breaker_probe().map(|every| {
        writer::spawn_breaker_probe(db.clone(), shared.clone(), every, cfg.db_write_timeout())
    });
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(cfg.max_in_flight.max(16));
    let mut tick = tokio::time::interval(
        cfg.batch_linger()
            .clamp(Duration::from_millis(5), Duration::from_millis(200)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pipeline = Pipeline {
        dlq: DeadLetterTopic::new(&cfg.kafka_brokers, cfg.dlq_topic())?,
        writer: Writer::new(
            db.clone(),
            shared.clone(),
            cfg.db_write_timeout(),
            cfg.db_concurrency,
            done_tx.clone(),
            topic.clone(),
        ),
        done: done_tx,
        limits: Limits::default(),
        batch: Vec::with_capacity(cfg.batch_size),
        batch_started: Instant::now(),
        last_commit: Instant::now(),
        full_since: None,
        commit_every: Duration::from_millis(cfg.commit_interval_ms.max(50)),
        cfg,
        db,
        shared,
        topic,
    };
    tokio::pin!(shutdown);
    loop {
        let take = pipeline.flow_control(&consumer);
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(done) = done_rx.recv() => pipeline.shared.apply_done(&done),
            msg = consumer.recv(), if take => pipeline.on_message(msg),
            _ = tick.tick() => {}
        }
        pipeline.flush_if_due();
        pipeline.commit_if_due(&consumer);
    }
    if let Some(probe) = probe {
        probe.abort();
    }
    pipeline.shutdown(&consumer, &mut done_rx).await;
    Ok(())
}

/// The loop's own state: the batch being filled and the clocks of flushing and committing.
struct Pipeline {
    cfg: Config,
    db: Db,
    shared: Arc<Shared>,
    topic: String,
    dlq: DeadLetterTopic,
    writer: Writer,
    /// Where finished work reports its offsets (the writer's batches, the DLQ's records).
    done: mpsc::Sender<Done>,
    limits: Limits,
    batch: Vec<Row>,
    batch_started: Instant,
    last_commit: Instant,
    commit_every: Duration,
    full_since: Option<Instant>,
}

impl Pipeline {
    /// Applies the flow decision (pause or resume) and says whether to take a message now.
    fn flow_control(&mut self, consumer: &StreamConsumer<Context>) -> bool {
        let state = self.shared.breaker_state();
        let in_flight = self.shared.in_flight.load(Ordering::Relaxed);
        if in_flight < self.shared.max_in_flight {
            self.full_since = None;
        } else if self.full_since.is_none() {
            self.full_since = Some(Instant::now());
        }
        let pause_after = self.cfg.pause_after_full();
        let decision = flow(
            in_flight,
            self.shared.max_in_flight,
            self.full_since.map(|t| t.elapsed()),
            pause_after,
            state,
            self.shared.paused.load(Ordering::Relaxed),
        );
        if decision.pause != self.shared.paused.load(Ordering::Relaxed) {
            set_paused(consumer, &self.shared, decision.pause);
        }
        // Decided again with the pause as it really is (pausing can fail without an assignment).
        flow(
            in_flight,
            self.shared.max_in_flight,
            None,
            pause_after,
            state,
            self.shared.paused.load(Ordering::Relaxed),
        )
        .take
    }

    /// One message: tracked, then batched as a row, or sent to the DLQ if it is no event.
    fn on_message(&mut self, msg: KafkaResult<BorrowedMessage<'_>>) {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "kafka receive error");
                return;
            }
        };
        if self.shared.paused.load(Ordering::Relaxed) {
            // librdkafka filters messages of paused partitions (a pause bumps the
            // partition's op version); should one get through, process it: dropping it
            // would let the watermark pass an offset never written.
            tracing::warn!(
                partition = msg.partition(),
                offset = msg.offset(),
                "message while paused: processing it"
            );
        }
        let (partition, offset) = (msg.partition(), msg.offset());
        if !lock(&self.shared.tracker).received(partition, offset) {
            return; // a redelivery of something already tracked
        }
        let now_in_flight = self.shared.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.shared
            .in_flight_peak
            .fetch_max(now_in_flight, Ordering::Relaxed);
        let payload = msg.payload().unwrap_or_default();
        match LogEvent::from_record(payload, &self.limits) {
            Ok(event) => {
                if self.batch.is_empty() {
                    self.batch_started = Instant::now();
                }
                self.batch.push(Row {
                    event,
                    partition,
                    offset,
                    raw: payload.to_vec(),
                });
                if self.batch.len() >= self.cfg.batch_size {
                    self.flush();
                }
            }
            Err(e) => self.dlq.send(
                payload.to_vec(),
                msg.key().map(<[u8]>::to_vec),
                e.to_string(),
                &self.topic,
                partition,
                offset,
                self.done.clone(),
            ),
        }
    }

    /// Hands the batch to the writer.
    fn flush(&mut self) {
        self.writer.spawn(std::mem::take(&mut self.batch));
    }

    /// A partial batch goes once it has lingered `BATCH_LINGER_MS`.
    fn flush_if_due(&mut self) {
        if !self.batch.is_empty() && self.batch_started.elapsed() >= self.cfg.batch_linger() {
            self.flush();
        }
    }

    fn commit_if_due(&mut self, consumer: &StreamConsumer<Context>) {
        if self.last_commit.elapsed() >= self.commit_every {
            commit(consumer, &self.shared, &self.topic, CommitMode::Async);
            publish_metrics(&self.shared, &self.db);
            self.last_commit = Instant::now();
        }
    }

    /// Stops fetching, lets in-flight batches finish within `SHUTDOWN_GRACE_MS`, commits.
    async fn shutdown(
        mut self,
        consumer: &StreamConsumer<Context>,
        done_rx: &mut mpsc::Receiver<Done>,
    ) {
        tracing::info!("shutdown requested: finishing in-flight batches");
        set_paused(consumer, &self.shared, true);
        if !self.batch.is_empty() {
            self.flush();
        }
        let deadline = tokio::time::Instant::now() + self.cfg.shutdown_grace();
        while self.shared.in_flight.load(Ordering::Relaxed) > 0 {
            match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                Ok(Some(done)) => self.shared.apply_done(&done),
                _ => {
                    tracing::warn!(
                        abandoned = self.shared.in_flight.load(Ordering::Relaxed),
                        "abandoning unfinished batches (not committed)"
                    );
                    break;
                }
            }
        }
        commit(consumer, &self.shared, &self.topic, CommitMode::Sync);
        publish_metrics(&self.shared, &self.db);
        self.dlq.flush();
    }
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
