//! The lag monitor: every `LAG_INTERVAL_MS`, Σ over partitions of (high watermark − committed
//! offset of the consumer group), with standard Kafka APIs (OffsetFetch + ListOffsets). A
//! partition the group never committed counts from its low watermark.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::backpressure::Backpressure;
use crate::metrics;
use service_runtime::TracingContext;

/// The lag could not be read, or the reader not created. The Kafka error is part of the
/// message, not a source: the monitor logs these with `%e`.
#[derive(Debug, thiserror::Error)]
pub enum LagError {
    #[error("could not create the lag reader's Kafka client (check KAFKA_BROKERS and KAFKA_GROUP_ID): {0}")]
    Client(KafkaError),
    #[error("could not fetch metadata for topic {topic} (is a broker of KAFKA_BROKERS reachable?): {error}")]
    Metadata { topic: String, error: KafkaError },
    #[error("topic {0} is not in the broker's metadata (create it, or check KAFKA_TOPIC)")]
    TopicMissing(String),
    #[error("topic {topic} is unusable: {code:?} (check KAFKA_TOPIC and the broker's logs)")]
    Topic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error(
        "could not read the offsets of topic {topic} (is its partition leader reachable?): {error}"
    )]
    Offsets { topic: String, error: KafkaError },
}

/// Lag of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: i32,
    pub lag: u64,
}

/// Reads the group's lag on the topic.
pub struct LagReader {
    consumer: BaseConsumer<TracingContext>,
    topic: String,
    timeout: Duration,
}

impl LagReader {
    /// A client in the group that never joins it (it only reads committed offsets).
    pub fn new(brokers: &str, group: &str, topic: &str) -> Result<Self, LagError> {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("client.id", "api-gateway-lag")
            .set("enable.auto.commit", "false")
            .create_with_context(TracingContext)
            .map_err(LagError::Client)?;
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
            timeout: Duration::from_secs(3),
        })
    }

    /// Blocking: per-partition lag.
    pub fn read(&self) -> Result<Vec<PartitionLag>, LagError> {
        let md = self
            .consumer
            .fetch_metadata(Some(&self.topic), self.timeout)
            .map_err(|error| LagError::Metadata {
                topic: self.topic.clone(),
                error,
            })?;
        let topic = md
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .ok_or_else(|| LagError::TopicMissing(self.topic.clone()))?;
        if let Some(err) = topic.error() {
            return Err(LagError::Topic {
                topic: self.topic.clone(),
                code: err.into(),
            });
        }
        let mut tpl = TopicPartitionList::new();
        for p in topic.partitions() {
            tpl.add_partition(&self.topic, p.id());
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, self.timeout)
            .map_err(|error| self.offsets_error(error))?;
        let mut lags = Vec::new();
        for elem in committed.elements() {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.topic, elem.partition(), self.timeout)
                .map_err(|error| self.offsets_error(error))?;
            let from = match elem.offset() {
                Offset::Offset(o) if o >= 0 => o,
                _ => low,
            };
            lags.push(PartitionLag {
                partition: elem.partition(),
                lag: (high - from).max(0) as u64,
            });
        }
        Ok(lags)
    }

    fn offsets_error(&self, error: KafkaError) -> LagError {
        LagError::Offsets {
            topic: self.topic.clone(),
            error,
        }
    }
}

/// Runs the monitor until aborted.
pub fn spawn_lag_monitor(
    reader: LagReader,
    backpressure: Arc<Backpressure>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let reader = Arc::new(reader);
    tokio::spawn(async move {
        loop {
            let r = reader.clone();
            let result = tokio::task::spawn_blocking(move || r.read()).await;
            match result {
                Ok(Ok(lags)) => {
                    let total: u64 = lags.iter().map(|l| l.lag).sum();
                    for l in &lags {
                        metrics::partition_lag(l.partition, l.lag);
                    }
                    metrics::total_lag(total);
                    if backpressure.lag_age().is_none() || backpressure.lag_failed_recovered() {
                        tracing::info!(lag = total, "consumer lag readable");
                    }
                    backpressure.set_lag(total);
                }
                Ok(Err(e)) => {
                    if backpressure.lag_failed() {
                        tracing::warn!(error = %e, "consumer lag unreadable: keeping the last rate");
                    }
                }
                Err(e) => {
                    if backpressure.lag_failed() {
                        tracing::warn!(error = %e, "lag task failed: keeping the last rate");
                    }
                }
            }
            metrics::lag_age(backpressure.lag_age());
            tokio::time::sleep(every).await;
        }
    })
}
