//! api-gateway: validates log events at the edge and hands them to Kafka durably, answering
//! 202 only once the broker holds them.
//!
//! Data path: [`ingest`] (HTTP handlers) → [`body`] (limits, gzip) → `log_event` (validation)
//! → [`producer`] (idempotent acks=all producer) → delivery report → 202.

pub mod backpressure;
pub mod body;
pub mod config;
pub mod error;
pub mod health;
pub mod ingest;
pub mod lag;
pub mod metrics;
pub mod openapi;
pub mod producer;
pub mod rate_limit;
pub mod redis_budget;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

pub use config::Config;
use health::KafkaStatus;
use producer::EventProducer;

/// Request limits, resolved from the config once.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    pub event: log_event::Limits,
    pub max_body_bytes: usize,
    pub max_batch_bytes: usize,
    pub max_batch_events: usize,
}

/// Shared state of every handler.
pub struct AppState {
    pub producer: EventProducer,
    pub limits: RequestLimits,
    pub kafka: Arc<KafkaStatus>,
    pub metrics: PrometheusHandle,
    pub backpressure: Arc<backpressure::Backpressure>,
}

/// Every route the gateway serves: the router and the OpenAPI document are checked against
/// this list by tests.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/logs"),
    ("post", "/api/logs/batch"),
    ("get", "/api/logs/health"),
    ("get", "/health/live"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

/// The gateway's HTTP routes over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let limiter = rate_limit::RateLimitLayer::new(state.backpressure.clone());
    Router::new()
        .route("/api/logs", post(ingest::ingest_one).layer(limiter.clone()))
        .route("/api/logs/batch", post(ingest::ingest_batch).layer(limiter))
        .route("/api/logs/health", get(health::logs_health))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(render_metrics))
        .route("/openapi.json", get(openapi::serve))
        .layer(axum::middleware::from_fn(metrics::track_http))
        .with_state(state)
}

async fn render_metrics(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> String {
    state.metrics.render()
}

/// A built gateway: bound listener, producer and background tasks.
pub struct Application {
    listener: TcpListener,
    state: Arc<AppState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    produce_timeout: Duration,
}

impl Application {
    /// Connects the producer, binds the listener (port 0 picks a free port) and starts the
    /// background tasks.
    pub async fn build(cfg: Config) -> anyhow::Result<Application> {
        let handle = metrics::install();
        let producer = EventProducer::new(&cfg)?;
        let kafka = Arc::new(KafkaStatus::default());
        let mut tasks = Vec::new();
        tasks.push(health::spawn_kafka_monitor(
            producer.clone(),
            kafka.clone(),
            Duration::from_secs(2),
        ));
        let policy = flow_control::RatePolicy::new(
            cfg.rate_max,
            cfg.rate_min,
            cfg.lag_normal,
            cfg.lag_critical,
        )?;
        let redis = if cfg.redis_url.trim().is_empty() {
            None
        } else {
            let prefix = format!("ingest:{}:{}", cfg.kafka_group_id, cfg.kafka_topic);
            Some(redis_budget::RedisBudget::new(&cfg.redis_url, prefix)?)
        };
        let lag_interval = Duration::from_millis(cfg.lag_interval_ms.max(100));
        let budget = backpressure::Backpressure::new(
            backpressure::BudgetConfig {
                policy,
                shed_below: cfg.shed_below,
                reserved_share: cfg.reserved_share.clamp(0.0, 1.0),
                burst: flow_control::Burst::secs(cfg.rate_burst_ms as f64 / 1000.0)
                    .capped(cfg.rate_burst_max_events as f64),
                shed_retry: lag_interval.max(Duration::from_secs(1)),
            },
            redis,
        );
        let reader =
            lag::LagReader::new(&cfg.kafka_brokers, &cfg.kafka_group_id, &cfg.kafka_topic)?;
        tasks.push(lag::spawn_lag_monitor(reader, budget.clone(), lag_interval));
        if budget.redis().is_some() {
            let b = budget.clone();
            tasks.push(tokio::spawn(async move {
                let ttl = Duration::from_secs(10);
                loop {
                    if let Some(redis) = b.redis() {
                        b.heartbeat(redis.heartbeat(ttl).await);
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }));
        }
        let metrics_handle = handle.clone();
        let b = budget.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = 0u32;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                metrics::limiter_available(b.available());
                tick += 1;
                if tick % 5 == 0 {
                    metrics_handle.run_upkeep();
                }
            }
        }));
        let state = Arc::new(AppState {
            producer,
            limits: RequestLimits {
                event: log_event::Limits::default(),
                max_body_bytes: cfg.max_body_bytes,
                max_batch_bytes: cfg.max_batch_bytes,
                max_batch_events: cfg.max_batch_events,
            },
            kafka,
            metrics: handle,
            backpressure: budget,
        });
        let listener = TcpListener::bind(cfg.addr).await?;
        Ok(Application {
            listener,
            state,
            tasks,
            produce_timeout: cfg.produce_timeout(),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The shared state (tests inspect it).
    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets every in-flight request
    /// get its real answer (bounded by the produce timeout plus a margin) and flushes the
    /// producer.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let graceful = async move {
            shutdown.await;
            tracing::info!("shutdown requested: draining in-flight requests");
            let _ = stop_tx.send(true);
        };
        let app = router(self.state.clone());
        // TCP_NODELAY: an answer goes out at once, not after the client's delayed ACK.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        });
        let server = axum::serve(listener, app).with_graceful_shutdown(graceful);
        let grace = self.produce_timeout + Duration::from_secs(5);
        let deadline = async move {
            let _ = stop_rx.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            served = server => served?,
            () = deadline => tracing::warn!(?grace, "drain deadline passed; closing remaining connections"),
        }
        for task in &self.tasks {
            task.abort();
        }
        if let Some(redis) = self.state.backpressure.redis() {
            redis.leave().await;
        }
        let producer = self.state.producer.clone();
        let flushed =
            tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
        match flushed {
            Ok(Ok(())) => tracing::info!("producer flushed; bye"),
            Ok(Err(e)) => tracing::warn!(error = %e, "producer flush incomplete"),
            Err(e) => tracing::warn!(error = %e, "producer flush task failed"),
        }
        Ok(())
    }
}

pub use service_runtime::shutdown_signal;
