//! The librdkafka settings the services and the bench baselines share, in one place, so that
//! "the baseline uses the gateway's settings" is a fact, not a promise.

use rdkafka::config::ClientConfig;

/// The gateway's producer: idempotent (hence acks=all, ordered, safe retries), murmur2 key
/// hashing (the partition a Java client picks for the same correlationId), a deep local
/// queue and large batches. Callers add `linger.ms`, `compression.type` and
/// `message.timeout.ms`.
pub fn producer(brokers: &str, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("compression.type", "none")
        .set("queue.buffering.max.messages", "200000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("batch.num.messages", "10000")
        .set("socket.keepalive.enable", "true");
    c
}

/// A group consumer that commits by hand, and only what it stored: offsets are neither
/// committed nor stored automatically. A dead member's partitions move at its session
/// timeout (10 s), so a consumer killed and restarted resumes within it. Callers add the
/// fetch tuning.
pub fn consumer(brokers: &str, group: &str, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("max.poll.interval.ms", "300000")
        .set("queued.min.messages", "20000");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_producer_is_idempotent_and_acks_all() {
        let c = producer("127.0.0.1:9092", "t");
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("partitioner"), Some("murmur2_random"));
    }

    #[test]
    fn the_consumer_never_commits_or_stores_offsets_by_itself() {
        let c = consumer("127.0.0.1:9092", "g", "t");
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
    }
}
