//! api-gateway: validates log events at the edge and hands them to Kafka durably, answering
//! 202 only once the broker holds them.
//!
//! Data path: [`ingest`] (HTTP handlers) → [`body`] (limits, gzip) → `log_event` (validation)
//! → [`producer`] (idempotent acks=all producer) → delivery report → 202.

pub mod auth;
pub mod backpressure;
pub mod body;
pub mod config;
pub mod error;
pub mod health;
pub mod ingest;
pub mod lag;
pub mod metrics;
pub mod openapi;
pub mod otlp;
pub mod producer;
pub mod rate_limit;
pub mod read;
pub mod redis_budget;
pub mod serve;
pub mod shared_budget;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use backpressure::{Backpressure, BackpressureConfig};
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
    pub otlp_max_body_bytes: usize,
    pub otlp_max_records: usize,
    pub otlp_correlation_attribute: String,
    pub body_read_timeout: Duration,
    /// The read API's bounds (`GET /api/logs`).
    pub read: read::query::ReadLimits,
}

impl RequestLimits {
    /// The limits a gateway with `cfg` applies (event limits are the wire format's defaults).
    pub fn from_config(cfg: &Config) -> RequestLimits {
        RequestLimits {
            event: log_event::Limits::default(),
            max_body_bytes: cfg.max_body_bytes,
            max_batch_bytes: cfg.max_batch_bytes,
            max_batch_events: cfg.max_batch_events,
            otlp_max_body_bytes: cfg.otlp_max_body_bytes,
            otlp_max_records: cfg.otlp_max_records,
            otlp_correlation_attribute: cfg.otlp_correlation_attribute.clone(),
            body_read_timeout: Duration::from_millis(cfg.http_body_read_timeout_ms),
            read: read::read_limits(cfg),
        }
    }
}

/// Shared state of every handler.
pub struct AppState {
    pub producer: EventProducer,
    pub limits: RequestLimits,
    pub kafka: Arc<KafkaStatus>,
    pub metrics: PrometheusHandle,
    pub backpressure: Arc<Backpressure>,
    /// None without API_KEYS_FILE: anyone may write.
    pub api_keys: Option<Arc<auth::ApiKeys>>,
    /// Each key's `eventsPerSecond` budget.
    pub key_quotas: auth::quota::KeyQuotas,
    /// The read API's pool; None without DATABASE_READ_URL (reads answer 503).
    pub reader: Option<read::store::ReadStore>,
}

/// Every route the gateway serves: the router and the OpenAPI document are checked against
/// this list by tests.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/logs"),
    ("get", "/api/logs"),
    ("post", "/api/logs/batch"),
    ("post", "/v1/logs"),
    ("get", "/api/logs/health"),
    ("get", "/health/live"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

/// The routes moved to GATEWAY_OPS_ADDR when it is set: metrics and probes.
pub const OPS_ROUTES: &[&str] = &["/health/live", "/health/ready", "/metrics"];

/// Every route of the gateway over `state`, on one address.
pub fn router(state: Arc<AppState>) -> Router {
    api_router(state.clone()).merge(ops_router(state))
}

/// The public API: ingest, the health document, the OpenAPI document.
pub fn api_router(state: Arc<AppState>) -> Router {
    let rate_limit = rate_limit::RateLimitLayer::new(state.backpressure.clone());
    let ingest = Router::new()
        .route(
            "/api/logs",
            post(ingest::ingest_one).layer(rate_limit.clone()),
        )
        .route(
            "/api/logs/batch",
            post(ingest::ingest_batch).layer(rate_limit),
        );
    // Reads need a key too when API_KEYS_FILE is set (any key: the logs are the operators').
    let read = Router::new().route("/api/logs", get(read::read_logs));
    let otlp = Router::new().route("/v1/logs", post(otlp::export_logs));
    // The key is checked before any permit is taken: an unknown caller costs no budget.
    // Without API_KEYS_FILE keys stay off for the process's life: no layer at all (each
    // costs every request a boxed future).
    let (ingest, read, otlp) = if state.api_keys.is_some() {
        let keyed = || axum::middleware::from_fn_with_state(state.clone(), auth::require_key);
        (
            ingest.route_layer(keyed()),
            read.route_layer(keyed()),
            otlp.route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                auth::require_key_otlp,
            )),
        )
    } else {
        (ingest, read, otlp)
    };
    Router::new()
        .merge(ingest)
        .merge(read)
        .merge(otlp)
        .route("/api/logs/health", get(health::logs_health))
        .route("/openapi.json", get(openapi::serve))
        .layer(axum::middleware::from_fn(metrics::track_http))
        .with_state(state)
}

/// Metrics and the liveness and readiness probes ([`OPS_ROUTES`]).
pub fn ops_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(render_metrics))
        .layer(axum::middleware::from_fn(metrics::track_http))
        .with_state(state)
}

async fn render_metrics(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> String {
    state.metrics.render()
}

/// Why the gateway could not start; each message names the setting to check, the cause
/// follows in the error's source chain (main prints it).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not create the Kafka producer (check KAFKA_BROKERS, KAFKA_COMPRESSION and KAFKA_DEBUG)")]
    Producer(#[source] rdkafka::error::KafkaError),
    #[error("invalid backpressure policy (check RATE_MAX, RATE_MIN, LAG_NORMAL and LAG_CRITICAL)")]
    Policy(#[from] flow_control::PolicyError),
    #[error("invalid REDIS_URL (give a redis:// URL, or set it empty to run without Redis)")]
    Redis(#[from] redis_budget::RedisError),
    #[error(transparent)]
    Lag(#[from] lag::LagError),
    #[error("invalid DATABASE_READ_URL")]
    ReadPool(#[source] sqlx::Error),
    #[error("invalid API_KEYS_FILE")]
    ApiKeys(#[from] auth::LoadError),
    #[error("could not listen on {addr} (are GATEWAY_ADDR and GATEWAY_OPS_ADDR free, distinct local addresses?)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The HTTP server failed while serving. The accept loop retries failed accepts itself
/// ([`serve`]), so none is returned today; callers handle it should that change.
#[derive(Debug, thiserror::Error)]
#[error("the HTTP server failed; restart the gateway")]
pub struct ServeError(#[source] std::io::Error);

/// A built gateway: bound listener, producer and background tasks.
pub struct Application {
    listener: TcpListener,
    ops_listener: Option<TcpListener>,
    serve: serve::ServeConfig,
    state: Arc<AppState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    produce_timeout: Duration,
}

impl Application {
    /// Connects the producer, binds the listener (port 0 picks a free port) and starts the
    /// background tasks.
    pub async fn build(cfg: Config) -> Result<Application, StartError> {
        let handle = metrics::install();
        let producer = EventProducer::new(&cfg).map_err(StartError::Producer)?;
        let kafka = Arc::new(KafkaStatus::default());
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
        let backpressure = Backpressure::new(
            BackpressureConfig {
                policy,
                shed_below: cfg.shed_below,
                reserved_share: cfg.reserved_share.clamp(0.0, 1.0),
                burst: cfg.burst_policy(),
                rate_max_bytes: cfg.rate_max_bytes.max(0.0),
                bytes_burst: cfg.bytes_burst(),
                shed_retry: lag_interval.max(Duration::from_secs(1)),
            },
            redis,
        );
        let reader =
            lag::LagReader::new(&cfg.kafka_brokers, &cfg.kafka_group_id, &cfg.kafka_topic)?;
        let api_keys = match &cfg.api_keys_file {
            Some(path) => Some(auth::ApiKeys::load(path.clone())?),
            None => None,
        };
        let logs_reader = read::store_from_config(&cfg).map_err(StartError::ReadPool)?;
        let listener = bind(cfg.addr).await?;
        let ops_listener = match cfg.ops_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };

        // Every fallible step is done: a failed start leaves no task running.
        let mut tasks = vec![
            health::spawn_kafka_monitor(producer.clone(), kafka.clone(), Duration::from_secs(2)),
            lag::spawn_lag_monitor(reader, backpressure.clone(), lag_interval),
            backpressure::spawn_permits_gauge(backpressure.clone()),
            service_runtime::spawn_metrics_upkeep(handle.clone()),
        ];
        if let Some(redis) = backpressure.redis() {
            tasks.push(backpressure::spawn_redis_heartbeat(
                redis.clone(),
                backpressure.clone(),
            ));
        }
        if let Some(keys) = &api_keys {
            tasks.push(auth::reload::spawn_key_reload(keys.clone()));
        }
        let state = Arc::new(AppState {
            producer,
            limits: RequestLimits::from_config(&cfg),
            kafka,
            metrics: handle,
            backpressure,
            api_keys,
            key_quotas: auth::quota::KeyQuotas::new(
                cfg.reserved_share.clamp(0.0, 1.0),
                cfg.loaded_burst(),
                cfg.bytes_burst(),
            ),
            reader: logs_reader,
        });
        Ok(Application {
            listener,
            ops_listener,
            serve: serve::ServeConfig::from_config(&cfg),
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

    /// The bound operations address, when GATEWAY_OPS_ADDR is set.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops_listener
            .as_ref()
            .map(|l| l.local_addr().expect("bound listener has an address"))
    }

    /// The connection limits in force (the cap after the open-file clamp).
    pub fn serve_config(&self) -> &serve::ServeConfig {
        &self.serve
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
    ) -> Result<(), ServeError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut deadline_rx = stop_rx.clone();
        let api = match self.ops_listener {
            Some(_) => api_router(self.state.clone()),
            None => router(self.state.clone()),
        };
        let api = serve::serve(
            self.listener,
            serve::Listener::Api,
            api,
            self.serve.clone(),
            stop_rx.clone(),
        );
        let ops = async {
            if let Some(listener) = self.ops_listener {
                let ops = ops_router(self.state.clone());
                let cfg = serve::ServeConfig {
                    max_connections: serve::OPS_MAX_CONNECTIONS,
                    ..self.serve.clone()
                };
                serve::serve(listener, serve::Listener::Ops, ops, cfg, stop_rx).await;
            }
        };
        let server = async { tokio::join!(api, ops) };
        let signal = tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutdown requested: draining in-flight requests");
            let _ = stop_tx.send(true);
        });
        let grace = self.produce_timeout + Duration::from_secs(5);
        let deadline = async move {
            let _ = deadline_rx.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            _ = server => {},
            () = deadline => tracing::warn!(?grace, "drain deadline passed; closing remaining connections"),
        }
        signal.abort();
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

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

pub use service_runtime::shutdown_signal;
