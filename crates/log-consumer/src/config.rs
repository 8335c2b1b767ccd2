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

    /// Pause the assigned partitions once in-flight has stayed at the limit this long, in
    /// milliseconds; until then the consumer only stops taking messages, since pausing
    /// discards librdkafka's prefetched records (bench/optimisations.md, entry 1). Paused,
    /// it keeps polling, so `max.poll.interval.ms` never evicts it.
    #[arg(long, env = "PAUSE_AFTER_FULL_MS", default_value_t = 1000)]
    pub pause_after_full_ms: u64,

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

    /// Longest one batch write may take, in milliseconds; past it the write counts as a
    /// failure for the circuit breaker (a database that hangs without resetting the
    /// connection must still open it) and the batch is retried. Also PostgreSQL's
    /// `statement_timeout` on the writers' connections.
    #[arg(long, env = "DB_WRITE_TIMEOUT_MS", default_value_t = 10_000)]
    pub db_write_timeout_ms: u64,

    /// Seconds the circuit breaker stays open before trial calls (at most: see
    /// `BREAKER_PROBE_MS`).
    #[arg(long, env = "BREAKER_OPEN_SECS", default_value_t = 30)]
    pub breaker_open_secs: u64,

    /// While the breaker is open, ping the database this often (milliseconds); when it
    /// answers, the breaker half-opens at once and trial writes decide. 0 = wait the full
    /// `BREAKER_OPEN_SECS`.
    #[arg(long, env = "BREAKER_PROBE_MS", default_value_t = 1000)]
    pub breaker_probe_ms: u64,

    /// How often durable offsets are committed, in milliseconds.
    #[arg(long, env = "COMMIT_INTERVAL_MS", default_value_t = 1000)]
    pub commit_interval_ms: u64,

    /// On SIGTERM/SIGINT, how long in-flight batches may take to finish before they are
    /// abandoned (left uncommitted, so re-read after restart), in milliseconds.
    #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,

    /// Width of one `log_events` partition (UTC-aligned): `hour`, `day` or `week`.
    #[arg(long, env = "PARTITION_INTERVAL", value_enum, default_value = "day")]
    pub partition_interval: crate::partitions::Interval,

    /// Days of events kept: partitions ending before now minus this many days are dropped
    /// whole. Rows in the DEFAULT partition are kept.
    #[arg(long, env = "LOG_RETENTION_DAYS", default_value_t = 7)]
    pub log_retention_days: u32,

    /// How often partitions are created ahead and expired ones dropped, in seconds (also
    /// once at start, before consuming).
    #[arg(long, env = "PARTITION_MAINTENANCE_SECS", default_value_t = 600)]
    pub partition_maintenance_secs: u64,

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
    pub fn librdkafka_overrides(&self) -> Result<Vec<(&str, &str)>, ConfigError> {
        self.kafka_consumer_properties
            .split(',')
            .map(str::trim)
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.trim(), v.trim()))
                    .ok_or_else(|| ConfigError::NotKeyValue(kv.to_owned()))
            })
            .collect()
    }

    pub fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    pub fn pause_after_full(&self) -> Duration {
        Duration::from_millis(self.pause_after_full_ms)
    }

    pub fn db_write_timeout(&self) -> Duration {
        Duration::from_millis(self.db_write_timeout_ms.max(1))
    }

    /// How often an open breaker pings the database, if at all.
    pub fn breaker_probe(&self) -> Option<Duration> {
        (self.breaker_probe_ms > 0).then(|| Duration::from_millis(self.breaker_probe_ms))
    }

    pub fn partition_maintenance(&self) -> Duration {
        Duration::from_secs(self.partition_maintenance_secs.max(1))
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// A configuration value clap cannot check by itself.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("KAFKA_CONSUMER_PROPERTIES: {0:?} is not key=value")]
    NotKeyValue(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["log-consumer"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).unwrap()
    }

    /// Read from the definitions, not by parsing: the environment (CI sets KAFKA_BROKERS,
    /// DATABASE_URL...) must not change what this test sees.
    #[test]
    fn every_knob_has_an_env_var_and_the_documented_default() {
        use clap::CommandFactory;
        let cmd = Config::command();
        let knob = |env: &str| {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == env))
                .unwrap_or_else(|| panic!("no argument reads {env}"));
            arg.get_default_values()
                .first()
                .map(|v| v.to_string_lossy().into_owned())
        };
        let expected = [
            ("CONSUMER_ADDR", "0.0.0.0:8081"),
            ("KAFKA_BROKERS", "127.0.0.1:9092"),
            ("KAFKA_TOPIC", "log-events"),
            ("KAFKA_GROUP_ID", "log-consumer-group"),
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/logs"),
            ("MAX_IN_FLIGHT", "1000"),
            ("BATCH_SIZE", "500"),
            ("BATCH_LINGER_MS", "50"),
            ("DB_CONCURRENCY", "4"),
            ("DB_POOL_MAX", "20"),
            ("DB_ACQUIRE_TIMEOUT_MS", "5000"),
            ("DB_WRITE_TIMEOUT_MS", "10000"),
            ("PARTITION_INTERVAL", "day"),
            ("LOG_RETENTION_DAYS", "7"),
            ("PARTITION_MAINTENANCE_SECS", "600"),
            ("LOG_FORMAT", "json"),
        ];
        for (env, default) in expected {
            assert_eq!(knob(env).as_deref(), Some(default), "{env}");
        }
        assert_eq!(knob("KAFKA_DLQ_TOPIC"), None, "derived from the topic");
        let without_env: Vec<_> = cmd
            .get_arguments()
            .filter(|a| {
                a.get_env().is_none() && !["help", "version"].contains(&a.get_id().as_str())
            })
            .map(|a| a.get_id().to_string())
            .collect();
        assert!(
            without_env.is_empty(),
            "knobs without an env var: {without_env:?}"
        );
    }

    #[test]
    fn the_dlq_topic_defaults_to_the_topic_plus_dlq() {
        assert_eq!(parse(&["--kafka-topic=t"]).dlq_topic(), "t.dlq");
        assert_eq!(parse(&["--kafka-dlq-topic=x"]).dlq_topic(), "x");
    }

    #[test]
    fn librdkafka_overrides_are_trimmed_key_value_pairs() {
        let c = parse(&["--kafka-consumer-properties= a=1 , b.c = x=y ,,"]);
        assert_eq!(
            c.librdkafka_overrides().unwrap(),
            [("a", "1"), ("b.c", "x=y")]
        );
        assert!(parse(&["--kafka-consumer-properties="])
            .librdkafka_overrides()
            .unwrap()
            .is_empty());
        let bad = parse(&["--kafka-consumer-properties=a=1,oops"]);
        assert!(
            matches!(bad.librdkafka_overrides(), Err(ConfigError::NotKeyValue(kv)) if kv == "oops")
        );
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Config::command().debug_assert();
    }
}
