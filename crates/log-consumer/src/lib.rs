//! log-consumer: reads log events from Kafka and writes each exactly once to PostgreSQL.
//!
//! Data path: [`pipeline`] (consume, bound in-flight, batch, commit the watermark) →
//! [`db`] (one binary COPY per batch; an idempotent UNNEST insert for a batch holding a
//! duplicate) — with [`dlq`] for poison messages,
//! [`partitions`] for time partitions and retention, and [`http`] for health and metrics.

pub mod config;
pub mod db;
pub mod dlq;
pub mod http;
pub mod metrics;
pub mod partitions;
pub mod pipeline;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use config::Config;

/// Why the consumer could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
}

/// A built consumer: database ready, HTTP bound.
pub struct Application {
    cfg: Config,
    db: db::Db,
    shared: Arc<pipeline::Shared>,
    listener: TcpListener,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl Application {
    pub async fn build(cfg: Config) -> Result<Application, Error> {
        let handle = metrics::install();
        let db = db::Db::new(
            &cfg.database_url,
            cfg.db_pool_max,
            Duration::from_millis(cfg.db_acquire_timeout_ms),
            cfg.db_write_timeout(),
        )?;
        let shared = pipeline::Shared::new(&cfg);
        let listener = TcpListener::bind(cfg.addr)
            .await
            .map_err(|e| Error::Bind(cfg.addr, e))?;
        Ok(Application {
            cfg,
            db,
            shared,
            listener,
            metrics: handle,
        })
    }

    /// The bound health/metrics address (useful with `CONSUMER_ADDR=...:0`).
    pub fn http_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound")
    }

    /// Consumes until `shutdown`, then commits what is durable and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let state = http::HttpState {
            shared: self.shared.clone(),
            db: self.db.clone(),
            metrics: self.metrics.clone(),
        };
        let upkeep_task = service_runtime::spawn_metrics_upkeep(self.metrics.clone());
        let server = tokio::spawn(axum::serve(self.listener, http::router(state)).into_future());
        let shutdown = std::pin::pin!(shutdown);
        let result = match wait_for_database(&self.db, &self.cfg, shutdown).await {
            Some(shutdown) => {
                let maintenance = partitions::spawn_partition_maintenance(
                    self.db.clone(),
                    self.cfg.partition_interval,
                    self.cfg.log_retention_days,
                    self.cfg.partition_maintenance(),
                );
                let result = pipeline::run(self.cfg, self.db, self.shared, shutdown).await;
                maintenance.abort();
                result
            }
            None => Ok(()),
        };
        server.abort();
        upkeep_task.abort();
        result
    }
}

/// Prepares the database (create, migrate, the partitions of now), retrying with backoff
/// until it answers, while `/health/ready` says not ready; `None` when shutdown came first.
/// Partitions exist before the first insert, so no event of the window waits in DEFAULT.
async fn wait_for_database<S: Future<Output = ()> + Unpin>(
    db: &db::Db,
    cfg: &Config,
    mut shutdown: S,
) -> Option<S> {
    let backoff = flow_control::Backoff::default();
    let mut attempt = 0u32;
    loop {
        let prepared = match db.prepare().await {
            Ok(()) => partitions::maintain(
                db,
                partitions::now_ms(),
                cfg.partition_interval,
                cfg.log_retention_days,
            )
            .await
            .map(|_| ())
            .map_err(Error::from),
            Err(e) => Err(e),
        };
        match prepared {
            Ok(()) => return Some(shutdown),
            Err(e) => {
                let wait = backoff.delay(attempt);
                tracing::warn!(error = %e, retry_in = ?wait, "database not ready (is PostgreSQL up and DATABASE_URL right?)");
                tokio::select! {
                    () = &mut shutdown => return None,
                    () = tokio::time::sleep(wait) => {}
                }
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

pub use service_runtime::{init_logging as init_tracing, shutdown_signal};
