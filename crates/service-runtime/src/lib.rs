//! Process plumbing shared by api-gateway and log-consumer: structured logging set-up,
//! librdkafka's logs and errors forwarded into tracing, the librdkafka settings they share
//! (`kafka_settings`), the metrics upkeep loop, and the shutdown signal.

pub mod kafka_settings;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use tracing_subscriber::EnvFilter;

/// Installs a global subscriber: JSON lines (`format = "json"`) or human text, filtered by
/// `RUST_LOG` (default `info`). Safe to call more than once.
pub fn init_logging(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "text" {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
}

/// The bundled librdkafka's version string (e.g. "2.12.1"), for the start-up log line.
pub fn librdkafka_version() -> String {
    rdkafka::util::get_rdkafka_version().1
}

/// Forwards one librdkafka log line to tracing (target `librdkafka`).
pub fn kafka_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", fac, "{message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
    }
}

/// Forwards a librdkafka client error to tracing.
pub fn kafka_error(error: KafkaError, reason: &str) {
    tracing::warn!(target: "librdkafka", error = %error, "{reason}");
}

/// Client context for Kafka clients that need nothing but logging.
#[derive(Debug, Clone, Default)]
pub struct TracingContext;

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        kafka_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        kafka_error(error, reason);
    }
}

impl ConsumerContext for TracingContext {}

/// Runs the Prometheus recorder's upkeep (draining histogram buckets) every 5 s, for as long
/// as the returned task is not aborted.
pub fn spawn_metrics_upkeep(
    handle: metrics_exporter_prometheus::PrometheusHandle,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            handle.run_upkeep();
        }
    })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    /// librdkafka 2.10.0 has a reconnect loop after broker restarts (fixed in 2.10.1,
    /// librdkafka#5088): the bundled library must be newer.
    #[test]
    fn bundled_librdkafka_is_at_least_2_10_1() {
        let (hex, text) = rdkafka::util::get_rdkafka_version();
        assert!(
            hex >= 0x020a_01ff,
            "librdkafka {text} ({hex:#x}) is older than 2.10.1"
        );
        assert_eq!(text, super::librdkafka_version());
    }
}
