//! Integration-test harness: real tansu brokers started through `scripts/tansu.sh` (the one
//! script setup.sh and CI use too), per-test topics and databases, and deadline polling.

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root exists")
}

/// A tansu broker run by `scripts/tansu.sh` with its own data folder and ports.
#[derive(Debug)]
pub struct Broker {
    port: u16,
    metrics_port: u16,
    data: Option<PathBuf>,
}

impl Broker {
    /// Starts a new broker on free ports in a fresh data folder.
    pub fn start_new() -> Broker {
        let data = std::env::temp_dir().join(unique("tansu"));
        let broker = Broker {
            port: free_port(),
            metrics_port: free_port(),
            data: Some(data),
        };
        broker.start();
        broker
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// (Re)starts the broker on the same port and data (the log survives).
    pub fn start(&self) {
        self.script("start");
    }

    /// Stops the broker process (SIGTERM, then SIGKILL after a deadline).
    pub fn stop(&self) {
        self.script("stop");
    }

    fn script(&self, action: &str) {
        let Some(data) = &self.data else {
            panic!("cannot {action} an external broker (KAFKA_BROKERS)");
        };
        let status = Command::new(repo_root().join("scripts/tansu.sh"))
            .arg(action)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--metrics-port")
            .arg(self.metrics_port.to_string())
            .arg("--data")
            .arg(data)
            // The shared broker lives in a static that is never dropped, and nextest runs
            // every test in its own process: the script's watchdog stops the broker and
            // deletes its temporary folder once this process has exited.
            .arg("--owner")
            .arg(std::process::id().to_string())
            .status()
            .expect("run scripts/tansu.sh");
        assert!(status.success(), "scripts/tansu.sh {action} failed");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(data) = &self.data {
            let _ = Command::new(repo_root().join("scripts/tansu.sh"))
                .args(["stop", "--data"])
                .arg(data)
                .status();
            let _ = std::fs::remove_dir_all(data);
        }
    }
}

/// The broker shared by a test binary: `KAFKA_BROKERS` when set (the test runner starts
/// one), otherwise one started for this process. Tests isolate themselves by topic.
pub fn broker() -> &'static Broker {
    static SHARED: OnceLock<Broker> = OnceLock::new();
    SHARED.get_or_init(|| match std::env::var("KAFKA_BROKERS") {
        Ok(list) if !list.is_empty() => {
            let port = list
                .split(',')
                .next()
                .and_then(|b| b.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .expect("KAFKA_BROKERS is host:port");
            Broker {
                port,
                metrics_port: 0,
                data: None,
            }
        }
        _ => Broker::start_new(),
    })
}

/// A broker of the test's own, for tests that stop and start it.
pub fn dedicated_broker() -> Broker {
    Broker::start_new()
}

/// Creates a topic (waiting until the broker accepts admin requests); an existing topic is fine.
pub async fn create_topic(brokers: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match admin.create_topics([&topic], &opts).await {
            Ok(results) => match &results[0] {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => return,
                Err((_, code)) if Instant::now() > deadline => {
                    panic!("create topic {name}: {code:?}")
                }
                Err(_) => {}
            },
            Err(e) if Instant::now() > deadline => panic!("create topic {name}: {e}"),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Admin URL of the PostgreSQL server tests use (`TEST_DATABASE_ADMIN_URL`).
pub fn database_admin_url() -> String {
    std::env::var("TEST_DATABASE_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Creates a randomly named database and returns its URL.
pub async fn fresh_database() -> String {
    use sqlx::Connection;
    let admin = database_admin_url();
    let name = unique("test").replace('-', "_");
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to PostgreSQL (TEST_DATABASE_ADMIN_URL)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

/// Polls `condition` until it is true or `timeout` passes; returns the last answer.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Produces `(key, payload)` records straight to a topic (bypassing the gateway), fast:
/// batched, retrying while the local queue is full, flushed before returning. Blocking.
pub fn produce(brokers: &str, topic: &str, records: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    for (i, (key, payload)) in records.into_iter().enumerate() {
        while producer
            .send(BaseRecord::to(topic).key(&key).payload(&payload))
            .is_err()
        {
            producer.poll(Duration::from_millis(10));
        }
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
}
