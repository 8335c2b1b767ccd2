//! api-gateway binary: parse config, init telemetry, run until SIGTERM/SIGINT.

use api_gateway::config::{Command, KeysCommand};
use api_gateway::{shutdown_signal, Application, Config};
use clap::Parser;

/// mimalloc: with glibc's malloc a fifth of the gateway's CPU went to malloc/free
/// (bench/optimisations.md, entry 3).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    if let Some(Command::Keys(KeysCommand::New { name })) = &cfg.command {
        let (key, entry) = api_gateway::auth::keys::new_key(name)?;
        println!("key (give it to the client; it is not stored anywhere): {key}");
        println!(
            "entry for API_KEYS_FILE: {}",
            serde_json::to_string(&entry)?
        );
        return Ok(());
    }
    service_runtime::init_logging(&cfg.log_format);
    tracing::info!(addr = %cfg.addr, brokers = %cfg.kafka_brokers, topic = %cfg.kafka_topic, librdkafka = %service_runtime::librdkafka_version(), "starting api-gateway");
    let app = Application::build(cfg).await?;
    tracing::info!(addr = %app.local_addr(), "listening");
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}
