//! The consumer's configuration: one typed struct, every knob an env var with a default.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Reads log events from Kafka and writes each exactly once to PostgreSQL, committing
/// offsets only once rows are durable.
#[derive(Debug, Clone, Parser)]
#[command(name = "log-consumer", version, about, long_about = None)]
pub struct Config {
    /// Address of the health/metrics HTTP server.
    #[arg(long, env = "CONSUMER_ADDR", default_value = "0.0.0.0:8081")]
    pub addr: SocketAddr,

    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Topic to consume.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "log-events")]
    pub kafka_topic: String,

    /// Consumer group.
    #[arg(long, env = "KAFKA_GROUP_ID", default_value = "log-consumer-group")]
    pub kafka_group_id: String,

    /// Dead-letter topic for poison messages (default: the topic name + `.dlq`).
    #[arg(long, env = "KAFKA_DLQ_TOPIC")]
    pub kafka_dlq_topic: Option<String>,

    /// librdkafka `fetch.wait.max.ms`: longest the broker may hold a fetch.
    #[arg(long, env = "KAFKA_FETCH_WAIT_MAX_MS", default_value_t = 100)]
    pub kafka_fetch_wait_max_ms: u64,

    /// librdkafka `max.partition.fetch.bytes`: most bytes one fetch returns per partition.
    #[arg(long, env = "KAFKA_MAX_PARTITION_FETCH_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub kafka_max_partition_fetch_bytes: usize,

    /// Extra librdkafka consumer properties, `key=value` pairs separated by commas.
    #[arg(long, env = "KAFKA_CONSUMER_PROPERTIES", default_value = "")]
    pub kafka_consumer_properties: String,

    /// PostgreSQL URL; the database is created when missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/logs"
    )]
    pub database_url: String,

    /// Most events between "received from Kafka" and "durable in PostgreSQL".
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 1000)]
    pub max_in_flight: usize,

    /// Rows per INSERT statement.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 500)]
    pub batch_size: usize,

    /// Longest a partial batch waits for more rows, in milliseconds.
    #[arg(long, env = "BATCH_LINGER_MS", default_value_t = 50)]
    pub batch_linger_ms: u64,

    /// Batches written at once.
    #[arg(long, env = "DB_CONCURRENCY", default_value_t = 4)]
    pub db_concurrency: usize,

    /// Connection pool size.
    #[arg(long, env = "DB_POOL_MAX", default_value_t = 20)]
    pub db_pool_max: u32,

    /// Pool acquire timeout, in milliseconds.
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT_MS", default_value_t = 5000)]
    pub db_acquire_timeout_ms: u64,

    /// Seconds the circuit breaker stays open before trial calls.
    #[arg(long, env = "BREAKER_OPEN_SECS", default_value_t = 30)]
    pub breaker_open_secs: u64,

    /// How often durable offsets are committed, in milliseconds.
    #[arg(long, env = "COMMIT_INTERVAL_MS", default_value_t = 1000)]
    pub commit_interval_ms: u64,

    /// Rejoin the group after this many seconds without any assigned partition (0 = never).
    /// Works around brokers that leave a crashed member's partitions unassigned; set 0 when
    /// running more consumers than partitions on purpose.
    #[arg(long, env = "REJOIN_IF_UNASSIGNED_SECS", default_value_t = 30)]
    pub rejoin_if_unassigned_secs: u64,

    /// Log format: `json` or `text`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: String,
}

impl Config {
    pub fn dlq_topic(&self) -> String {
        self.kafka_dlq_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.kafka_topic))
    }

    /// Parses `KAFKA_CONSUMER_PROPERTIES`.
    pub fn librdkafka_overrides(&self) -> anyhow::Result<Vec<(&str, &str)>> {
        self.kafka_consumer_properties
            .split(',')
            .map(str::trim)
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.trim(), v.trim()))
                    .ok_or_else(|| {
                        anyhow::anyhow!("KAFKA_CONSUMER_PROPERTIES: {kv:?} is not key=value")
                    })
            })
            .collect()
    }

    pub fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }
}
