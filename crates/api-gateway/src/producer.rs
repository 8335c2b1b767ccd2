//! Hands validated events to Kafka with an idempotent, acks=all producer and turns delivery
//! reports into answers. Nothing here blocks: a full local queue is an immediate error.

use std::time::{Duration, Instant};

use log_event::LogEvent;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tokio::time::timeout_at;

use crate::config::Config;
use crate::metrics;
use service_runtime::TracingContext;

/// Why an event was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProduceError {
    #[error("the producer queue is full")]
    QueueFull,
    #[error("no delivery report within {0:?}")]
    Timeout(Duration),
    #[error("Kafka refused or lost the record: {0}")]
    Kafka(String),
}

impl ProduceError {
    /// Seconds a client should wait before retrying.
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            ProduceError::QueueFull => 1,
            ProduceError::Timeout(_) | ProduceError::Kafka(_) => 5,
        }
    }
}

/// Where the broker put an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub partition: i32,
    /// -1 when the gateway answered at enqueue (benchmark mode).
    pub offset: i64,
}

/// An enqueued record waiting for its delivery report.
pub struct Pending {
    future: Option<DeliveryFuture>,
    enqueued_at: Instant,
}

/// The gateway's Kafka producer.
#[derive(Clone)]
pub struct EventProducer {
    producer: FutureProducer<TracingContext>,
    topic: String,
    timeout: Duration,
    ack_on_enqueue: bool,
}

impl EventProducer {
    /// Builds the producer on the shared settings (`service_runtime::kafka_settings`:
    /// idempotent, acks=all, murmur2 key hashing as Java clients do for a correlationId).
    ///
    /// The HTTP answer is bounded by `PRODUCE_TIMEOUT_MS` and librdkafka's
    /// `message.timeout.ms` ends 1.5 s earlier (`Config::message_timeout`): a record not
    /// acknowledged by then is abandoned: nothing is delivered after the 503 (one that was in
    /// flight may already be in the log; a retry with the same eventIds is stored once).
    pub fn new(cfg: &Config) -> Result<Self, KafkaError> {
        let timeout = cfg.produce_timeout();
        let message_timeout = cfg.message_timeout();
        let mut client =
            service_runtime::kafka_settings::producer(&cfg.kafka_brokers, "api-gateway");
        client
            .set("linger.ms", cfg.kafka_linger_ms.to_string())
            .set("compression.type", &cfg.kafka_compression)
            .set(
                "message.timeout.ms",
                message_timeout.as_millis().to_string(),
            );
        if let Some(debug) = &cfg.kafka_debug {
            client.set("debug", debug);
        }
        let producer = client.create_with_context(TracingContext)?;
        Ok(Self {
            producer,
            topic: cfg.kafka_topic.clone(),
            timeout,
            ack_on_enqueue: cfg.bench_ack_on_enqueue,
        })
    }

    /// The topic events go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The underlying client (metadata, flush).
    pub fn inner(&self) -> &FutureProducer<TracingContext> {
        &self.producer
    }

    /// Enqueues one event without waiting. Keyed by correlationId.
    pub fn enqueue(&self, event: &LogEvent, buf: &mut Vec<u8>) -> Result<Pending, ProduceError> {
        buf.clear();
        event.write_record(buf);
        let record = FutureRecord::to(&self.topic)
            .key(event.correlation_id.as_bytes())
            .payload(buf.as_slice());
        match self.producer.send_result(record) {
            Ok(future) => Ok(Pending {
                future: (!self.ack_on_enqueue).then_some(future),
                enqueued_at: Instant::now(),
            }),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(ProduceError::QueueFull)
            }
            Err((e, _)) => Err(ProduceError::Kafka(e.to_string())),
        }
    }

    /// Waits for the delivery report, at most until `deadline`.
    pub async fn wait(
        &self,
        pending: Pending,
        deadline: tokio::time::Instant,
    ) -> Result<Placement, ProduceError> {
        let Some(future) = pending.future else {
            return Ok(Placement {
                partition: -1,
                offset: -1,
            });
        };
        let outcome = match timeout_at(deadline, future).await {
            Err(_) => Err(ProduceError::Timeout(self.timeout)),
            Ok(Err(_canceled)) => Err(ProduceError::Kafka("producer shut down".into())),
            Ok(Ok(Err((e, _msg)))) => Err(match e {
                KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut) => {
                    ProduceError::Timeout(self.timeout)
                }
                other => ProduceError::Kafka(other.to_string()),
            }),
            Ok(Ok(Ok(delivery))) => Ok(Placement {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
        };
        metrics::produce_finished(pending.enqueued_at.elapsed(), outcome.is_ok());
        outcome
    }

    /// Enqueue one event and wait for its report within the produce timeout.
    pub async fn send(&self, event: &LogEvent) -> Result<Placement, ProduceError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut buf = Vec::with_capacity(256 + event.message.len());
        let pending = self.enqueue(event, &mut buf)?;
        self.wait(pending, deadline).await
    }

    /// Enqueue every event, then wait for every report within one produce timeout. The
    /// result for each event is in input order.
    pub async fn send_all(&self, events: &[LogEvent]) -> Vec<Result<Placement, ProduceError>> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut buf = Vec::with_capacity(512);
        let pending: Vec<_> = events.iter().map(|e| self.enqueue(e, &mut buf)).collect();
        let mut results = Vec::with_capacity(events.len());
        for p in pending {
            results.push(match p {
                Ok(p) => self.wait(p, deadline).await,
                Err(e) => Err(e),
            });
        }
        results
    }

    /// Records waiting in the local queue or in flight to the broker.
    pub fn queue_depth(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Delivers everything still queued, waiting at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(Timeout::After(timeout))
    }
}
