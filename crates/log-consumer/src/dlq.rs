//! Poison messages (not JSON, or not a valid event) go to the dead-letter topic with headers
//! naming the error and the original position; only once Kafka has them does their offset
//! count as done. Delivery is retried until it succeeds: nothing is dropped silently.

use std::time::Duration;

use flow_control::Backoff;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tokio::sync::mpsc;

use crate::metrics;

/// Producer for the dead-letter topic.
#[derive(Clone)]
pub struct DeadLetterTopic {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetterTopic {
    pub fn new(brokers: &str, topic: String) -> Result<Self, rdkafka::error::KafkaError> {
        let producer =
            service_runtime::kafka_settings::producer(brokers, "log-consumer-dlq").create()?;
        Ok(Self { producer, topic })
    }

    /// Sends in the background; reports `(partition, offset)` on `done` once delivered.
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &self,
        payload: Vec<u8>,
        key: Option<Vec<u8>>,
        error: String,
        source_topic: &str,
        partition: i32,
        offset: i64,
        done: mpsc::Sender<Vec<(i32, i64)>>,
    ) {
        let this = self.clone();
        let source_topic = source_topic.to_owned();
        tracing::error!(partition, offset, error = %error, dlq = %self.topic, "poison message: sending to the dead-letter topic");
        tokio::spawn(async move {
            let backoff = Backoff::default();
            let mut attempt = 0u32;
            loop {
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "dlq.error",
                        value: Some(error.as_bytes()),
                    })
                    .insert(Header {
                        key: "dlq.original.topic",
                        value: Some(source_topic.as_bytes()),
                    })
                    .insert(Header {
                        key: "dlq.original.partition",
                        value: Some(partition.to_string().as_bytes()),
                    })
                    .insert(Header {
                        key: "dlq.original.offset",
                        value: Some(offset.to_string().as_bytes()),
                    });
                let mut record = FutureRecord::to(&this.topic)
                    .payload(&payload)
                    .headers(headers);
                if let Some(k) = &key {
                    record = record.key(k);
                }
                match this
                    .producer
                    .send(record, Timeout::After(Duration::from_secs(30)))
                    .await
                {
                    Ok(_) => {
                        metrics::dead_letter("topic");
                        metrics::processed("dead_lettered", 1);
                        let _ = done.send(vec![(partition, offset)]).await;
                        return;
                    }
                    Err((e, _)) => {
                        tracing::warn!(error = %e, partition, offset, "dead-letter delivery failed; retrying");
                        tokio::time::sleep(backoff.delay(attempt)).await;
                        attempt = attempt.saturating_add(1);
                    }
                }
            }
        });
    }

    pub fn flush(&self) {
        let _ = self.producer.flush(Timeout::After(Duration::from_secs(5)));
    }
}
