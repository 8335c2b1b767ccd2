//! The gateway's configuration: one typed struct, every knob an env var with a default.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use flow_control::{Burst, BurstPolicy};

/// HTTP gateway that validates log events and produces them to Kafka, slowing clients down
/// with 429s when the consumer falls behind.
#[derive(Debug, Clone, Parser)]
#[command(name = "api-gateway", version, about, long_about = None)]
pub struct Config {
    /// Address the HTTP server listens on.
    #[arg(long, env = "GATEWAY_ADDR", default_value = "0.0.0.0:8080")]
    pub addr: SocketAddr,

    /// Private operations address for `/metrics` and `/health/live`, `/health/ready`. Unset,
    /// they are served on GATEWAY_ADDR; set, only here (GATEWAY_ADDR keeps the public API,
    /// `/api/logs/health` and `/openapi.json`).
    #[arg(long, env = "GATEWAY_OPS_ADDR")]
    pub ops_addr: Option<SocketAddr>,

    /// A request's header block must be complete within this long of its first byte (of the
    /// accept, for a connection's first request), in milliseconds; else the connection is
    /// closed. Slowloris defence.
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub http_header_read_timeout_ms: u64,

    /// A request's whole body must arrive within this long of the handler starting to read
    /// it, in milliseconds; else 408 and the connection is closed.
    #[arg(long, env = "HTTP_BODY_READ_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub http_body_read_timeout_ms: u64,

    /// A keep-alive connection with no request in progress is closed after this long, in
    /// milliseconds. Keep it above the idle timeout of load balancers in front of the gateway.
    #[arg(long, env = "HTTP_IDLE_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub http_idle_timeout_ms: u64,

    /// Most concurrent connections on GATEWAY_ADDR; past it a new connection gets a canned
    /// 503 and is closed at once. Lowered at start to what the process's open-file limit
    /// allows.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub http_max_connections: u64,

    /// Most header fields in a request (431 past it; at most 100 keeps hyper's parser on
    /// the stack).
    #[arg(long, env = "HTTP_MAX_HEADERS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub http_max_headers: u64,

    /// Largest request line plus header block in bytes (431 past it).
    #[arg(long, env = "HTTP_MAX_HEADER_BYTES", default_value_t = 16 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=1024 * 1024))]
    pub http_max_header_bytes: u64,

    /// Kafka bootstrap servers (comma-separated host:port).
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Topic events are produced to.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "log-events")]
    pub kafka_topic: String,

    /// The longest a request waits for its delivery report, in milliseconds (at least 2500).
    /// librdkafka gives up on a record 1.5 s before this (`message_timeout`), so a 503 is
    /// librdkafka's final word on the record, never a report that may still arrive.
    #[arg(long, env = "PRODUCE_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(MIN_PRODUCE_TIMEOUT_MS..))]
    pub produce_timeout_ms: u64,

    /// Producer linger (librdkafka `linger.ms`): batching window for records.
    #[arg(long, env = "KAFKA_LINGER_MS", default_value_t = 5)]
    pub kafka_linger_ms: u64,

    /// Producer compression (`none`, `gzip`, `snappy`, `lz4`, `zstd`).
    #[arg(long, env = "KAFKA_COMPRESSION", default_value = "none")]
    pub kafka_compression: String,

    /// librdkafka debug contexts (e.g. `broker,msg,eos`), for troubleshooting.
    #[arg(long, env = "KAFKA_DEBUG")]
    pub kafka_debug: Option<String>,

    /// Consumer group whose lag drives the rate.
    #[arg(long, env = "KAFKA_GROUP_ID", default_value = "log-consumer-group")]
    pub kafka_group_id: String,

    /// How often consumer lag is measured, in milliseconds.
    #[arg(long, env = "LAG_INTERVAL_MS", default_value_t = 5000)]
    pub lag_interval_ms: u64,

    /// Events/s admitted while lag <= LAG_NORMAL.
    #[arg(long, env = "RATE_MAX", default_value_t = 1000.0)]
    pub rate_max: f64,

    /// Events/s admitted while lag >= LAG_CRITICAL.
    #[arg(long, env = "RATE_MIN", default_value_t = 100.0)]
    pub rate_min: f64,

    /// Lag below which the system is healthy (full rate up to here).
    #[arg(long, env = "LAG_NORMAL", default_value_t = 10_000)]
    pub lag_normal: u64,

    /// Lag from which the system is critical (minimum rate, low severities shed).
    #[arg(long, env = "LAG_CRITICAL", default_value_t = 50_000)]
    pub lag_critical: u64,

    /// While critical, events below this severity get 429.
    #[arg(long, env = "SHED_BELOW", default_value = "WARN")]
    pub shed_below: log_event::Severity,

    /// Burst while the system is degraded or critical (lag at or above LAG_NORMAL), in
    /// milliseconds of the current rate: how far a spike may run above the rate before 429s
    /// start (each pool holds at least min(1 s of its rate, 50) events). Shorter keeps the
    /// broker near the rate under overload, and the tail latency of what is admitted low.
    /// Also the burst of API-key quotas and of the bytes/s budgets.
    #[arg(long, env = "RATE_BURST_MS", default_value_t = 200)]
    pub rate_burst_ms: u64,

    /// Most events a pool's bucket holds while degraded or critical, whatever RATE_BURST_MS
    /// gives at the current rate (0: no cap). At the default rate the cap is not reached; at
    /// high rates it keeps an overload's first moment from admitting thousands of events
    /// above the rate.
    #[arg(long, env = "RATE_BURST_MAX_EVENTS", default_value_t = 200)]
    pub rate_burst_max_events: u64,

    /// Burst while healthy (lag below LAG_NORMAL), in milliseconds of the rate, not capped in
    /// events: 1000 admits a whole second of RATE_MAX at once (500 concurrent requests to an
    /// idle gateway at 1000/s all get 202). The bucket shrinks to RATE_BURST_MS /
    /// RATE_BURST_MAX_EVENTS as soon as a lag reading says degraded or critical. 0: use
    /// RATE_BURST_MS and RATE_BURST_MAX_EVENTS at every status.
    #[arg(long, env = "RATE_BURST_HEALTHY_MS", default_value_t = 1000)]
    pub rate_burst_healthy_ms: u64,

    /// Bytes/s admitted while lag <= LAG_NORMAL, counted as the decoded (decompressed) request
    /// bodies; scaled down with the event rate as lag grows (at RATE_MIN it is
    /// RATE_MAX_BYTES × RATE_MIN ÷ RATE_MAX). Requests are refused by whichever of events/s
    /// and bytes/s is hit first (429 `bytes_rate_limited`). Shared through Redis like the
    /// event budget (one Redis trip per request while on), else rate ÷ replicas per gateway.
    /// 0 (the default): no bytes budget; bodies are then bounded by the event rate times
    /// MAX_BODY_BYTES / MAX_BATCH_BYTES. Set it to what the broker's disk and network take,
    /// e.g. 20000000 for 20 MB/s.
    #[arg(long, env = "RATE_MAX_BYTES", default_value_t = 0.0)]
    pub rate_max_bytes: f64,

    /// Share of the rate reserved for ERROR and FATAL events (0..1).
    #[arg(long, env = "RESERVED_SHARE", default_value_t = 0.1)]
    pub reserved_share: f64,

    /// Redis holding the cluster-wide budget; empty disables it (each gateway limits alone).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// JSON file of API keys (README: "API keys"). Unset: no key is needed. Set: ingest
    /// routes need `Authorization: Bearer <key>` (or `X-API-Key`); the file is re-read on
    /// SIGHUP and when it changes.
    #[arg(long, env = "API_KEYS_FILE")]
    pub api_keys_file: Option<std::path::PathBuf>,

    /// PostgreSQL URL the read API (`GET /api/logs`) queries, ideally as a role with SELECT
    /// only (setup.sh creates `log_reader`). Unset: the read API answers 503 `read_disabled`.
    /// Its pool is separate from everything else and small, so reads never starve writers.
    #[arg(long, env = "DATABASE_READ_URL")]
    pub database_read_url: Option<String>,

    /// Most connections the read pool opens (concurrent reads; more wait at most
    /// READ_ACQUIRE_TIMEOUT_MS, then get 503 `read_busy` with Retry-After).
    #[arg(long, env = "READ_POOL_SIZE", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub read_pool_size: u32,

    /// How long a read waits for a free read connection, in milliseconds, before its 503.
    #[arg(long, env = "READ_ACQUIRE_TIMEOUT_MS", default_value_t = 250,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub read_acquire_timeout_ms: u64,

    /// `statement_timeout` of every read connection, in milliseconds: a longer query is
    /// cancelled by PostgreSQL and answered 503 `read_timeout`.
    #[arg(long, env = "READ_STATEMENT_TIMEOUT_MS", default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub read_statement_timeout_ms: u64,

    /// Widest `from`..`to` a read may ask for, in hours (a query by correlationId is not
    /// bounded: its index finds the few rows of one request in every partition).
    #[arg(long, env = "READ_MAX_RANGE_HOURS", default_value_t = 24,
          value_parser = clap::value_parser!(u64).range(1..=24 * 366))]
    pub read_max_range_hours: u64,

    /// A one-off command instead of the server.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Largest single-event body in bytes (after decompression).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,

    /// Largest batch body in bytes (after decompression).
    #[arg(long, env = "MAX_BATCH_BYTES", default_value_t = 5 * 1024 * 1024)]
    pub max_batch_bytes: usize,

    /// Most events in one batch request.
    #[arg(long, env = "MAX_BATCH_EVENTS", default_value_t = 1000)]
    pub max_batch_events: usize,

    /// Largest OTLP export body (`POST /v1/logs`) in bytes, after decompression. The OTel
    /// Collector's batch processor sends up to 8 192 records at once.
    #[arg(long, env = "OTLP_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub otlp_max_body_bytes: usize,

    /// Most log records in one OTLP export.
    #[arg(long, env = "OTLP_MAX_RECORDS", default_value_t = 10_000)]
    pub otlp_max_records: usize,

    /// The OTLP record attribute that becomes `correlationId` when a record has no trace id.
    #[arg(
        long,
        env = "OTLP_CORRELATION_ATTRIBUTE",
        default_value = "correlation_id"
    )]
    pub otlp_correlation_attribute: String,

    /// Answer 202 at enqueue instead of after the delivery report. Benchmarks only: an
    /// acknowledged event could then still be lost.
    #[arg(
        long,
        env = "BENCH_ACK_ON_ENQUEUE",
        default_value_t = false,
        hide = true
    )]
    pub bench_ack_on_enqueue: bool,

    /// Log format: `json` or `text`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: String,
}

/// One-off commands; without one the gateway serves.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Prints a fresh random key (give it to the client) and its entry for API_KEYS_FILE
    /// (which holds only its sha256).
    New {
        /// The key's name: 1 to 64 of A-Z a-z 0-9 . _ - (a metric label and in logs).
        name: String,
    },
}

/// librdkafka scans for expired records about once a second, so its timeout must end this
/// long before the HTTP deadline for its report to arrive first.
const MESSAGE_TIMEOUT_MARGIN: Duration = Duration::from_millis(1500);
const MIN_PRODUCE_TIMEOUT_MS: u64 = 2500;

impl Config {
    /// The produce timeout as a duration.
    pub fn produce_timeout(&self) -> Duration {
        Duration::from_millis(self.produce_timeout_ms)
    }

    /// librdkafka's `message.timeout.ms`: the produce timeout less the margin, so that when
    /// the HTTP deadline passes the record is either acknowledged or abandoned for good
    /// (an event whose client got a 503 is never delivered later).
    pub fn message_timeout(&self) -> Duration {
        self.produce_timeout()
            .saturating_sub(MESSAGE_TIMEOUT_MARGIN)
    }

    /// Defaults, as if no flag or env var were set (for tests).
    pub fn defaults() -> Config {
        Config::parse_from(["api-gateway"])
    }

    /// The burst while degraded or critical (and of key quotas): RATE_BURST_MS of the rate,
    /// capped at RATE_BURST_MAX_EVENTS.
    pub fn loaded_burst(&self) -> Burst {
        Burst::secs(self.rate_burst_ms as f64 / 1000.0).capped(self.rate_burst_max_events as f64)
    }

    /// The burst of the event budget at each load status.
    pub fn burst_policy(&self) -> BurstPolicy {
        let loaded = self.loaded_burst();
        if self.rate_burst_healthy_ms == 0 {
            return BurstPolicy::uniform(loaded);
        }
        BurstPolicy::new(
            Burst::secs(self.rate_burst_healthy_ms as f64 / 1000.0),
            loaded,
        )
    }

    /// The burst of bytes/s budgets: RATE_BURST_MS of the rate (a cap in events would be a
    /// cap of a few hundred bytes).
    pub fn bytes_burst(&self) -> Burst {
        Burst::secs(self.rate_burst_ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_gives_up_well_before_the_http_deadline() {
        let cfg = Config::defaults();
        assert_eq!(cfg.produce_timeout(), Duration::from_secs(10));
        assert_eq!(cfg.message_timeout(), Duration::from_millis(8500));
        let cfg = Config::parse_from(["api-gateway", "--produce-timeout-ms=2500"]);
        assert_eq!(cfg.message_timeout(), Duration::from_millis(1000));
    }

    #[test]
    fn a_produce_timeout_too_short_for_the_margin_is_refused() {
        let err = Config::try_parse_from(["api-gateway", "--produce-timeout-ms=2000"]).unwrap_err();
        assert!(err.to_string().contains("2500"), "{err}");
    }

    #[test]
    fn the_burst_is_a_second_while_healthy_and_small_under_load() {
        use flow_control::LoadStatus;
        let p = Config::defaults().burst_policy();
        assert_eq!(p.for_status(LoadStatus::Healthy).bucket(900.0), 900.0);
        assert_eq!(p.for_status(LoadStatus::Critical).bucket(900.0), 180.0);
        assert_eq!(p.for_status(LoadStatus::Degraded).bucket(6000.0), 200.0);
        let p = Config::parse_from(["api-gateway", "--rate-burst-healthy-ms=0"]).burst_policy();
        assert_eq!(p.for_status(LoadStatus::Healthy).bucket(900.0), 180.0);
        assert_eq!(
            Config::defaults().rate_max_bytes,
            0.0,
            "no bytes budget by default"
        );
    }

    #[test]
    fn the_server_is_the_default_command() {
        assert!(Config::defaults().command.is_none());
        let cfg = Config::parse_from(["api-gateway", "keys", "new", "team-a"]);
        assert!(matches!(
            cfg.command,
            Some(Command::Keys(KeysCommand::New { name })) if name == "team-a"
        ));
    }
}
