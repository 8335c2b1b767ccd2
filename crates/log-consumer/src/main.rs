//! log-consumer binary: parse config, init telemetry, consume until SIGTERM/SIGINT.

use clap::Parser;
use log_consumer::{init_tracing, shutdown_signal, Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    init_tracing(&cfg.log_format);
    tracing::info!(brokers = %cfg.kafka_brokers, topic = %cfg.kafka_topic, group = %cfg.kafka_group_id, librdkafka = %service_runtime::librdkafka_version(), "starting log-consumer");
    let app = Application::build(cfg).await?;
    tracing::info!(addr = %app.http_addr(), "health and metrics listening");
    app.run_until_stopped(shutdown_signal()).await?;
    tracing::info!("stopped cleanly");
    Ok(())
}
