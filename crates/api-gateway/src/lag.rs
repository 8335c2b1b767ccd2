//! The lag monitor: every `LAG_INTERVAL_MS`, Σ over partitions of (high watermark − committed
//! offset of the consumer group), with standard Kafka APIs (OffsetFetch + ListOffsets). A
//! partition the group never committed counts from its low watermark.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::backpressure::Backpressure;
use crate::metrics;
use service_runtime::TracingContext;

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
    pub fn new(brokers: &str, group: &str, topic: &str) -> anyhow::Result<Self> {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("client.id", "api-gateway-lag")
            .set("enable.auto.commit", "false")
            .create_with_context(TracingContext)?;
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
            timeout: Duration::from_secs(3),
        })
    }

    /// Blocking: per-partition lag.
    pub fn read(&self) -> anyhow::Result<Vec<PartitionLag>> {
        let md = self
            .consumer
            .fetch_metadata(Some(&self.topic), self.timeout)?;
        let topic = md
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .ok_or_else(|| anyhow::anyhow!("topic {} not in metadata", self.topic))?;
        if let Some(err) = topic.error() {
            anyhow::bail!("topic {}: {err:?}", self.topic);
        }
        let mut tpl = TopicPartitionList::new();
        for p in topic.partitions() {
            tpl.add_partition(&self.topic, p.id());
        }
        let committed = self.consumer.committed_offsets(tpl, self.timeout)?;
        let mut lags = Vec::new();
        for elem in committed.elements() {
            let (low, high) =
                self.consumer
                    .fetch_watermarks(&self.topic, elem.partition(), self.timeout)?;
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
}

/// Runs the monitor until aborted.
pub fn spawn_lag_monitor(
    reader: LagReader,
    budget: Arc<Backpressure>,
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
                    if budget.lag_age().is_none() || budget.lag_failed_recovered() {
                        tracing::info!(lag = total, "consumer lag readable");
                    }
                    budget.set_lag(total);
                }
                Ok(Err(e)) => {
                    if budget.lag_failed() {
                        tracing::warn!(error = %e, "consumer lag unreadable: keeping the last rate");
                    }
                }
                Err(e) => {
                    if budget.lag_failed() {
                        tracing::warn!(error = %e, "lag task failed: keeping the last rate");
                    }
                }
            }
            metrics::lag_age(budget.lag_age());
            tokio::time::sleep(every).await;
        }
    })
}
