//! Integration-test harness: real Apache Kafka clusters started through `scripts/kafka.sh`
//! (the one script setup.sh and CI use too), per-test topics and databases, and deadline
//! polling.

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

/// An Apache Kafka cluster (one KRaft node or three) run by `scripts/kafka.sh`, with its own
/// data folder and free ports.
#[derive(Debug)]
pub struct Kafka {
    bootstrap: String,
    /// `None` for a cluster this process did not start (`KAFKA_BROKERS`).
    data: Option<PathBuf>,
}

/// How `kill_node` stops a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Kill,
    Term,
}

impl Kafka {
    /// Starts a new cluster of `nodes` (1 or 3) on free ports in a fresh data folder.
    pub fn start_new(nodes: u8) -> Kafka {
        let data = std::env::temp_dir().join(unique("kafka"));
        let out = kafka_sh(
            &[
                "start",
                "--nodes",
                &nodes.to_string(),
                // nextest runs every test in its own process and the shared cluster lives in
                // a static that is never dropped: the script's watchdog stops the cluster and
                // deletes its folder once this process has exited.
                "--owner",
                &std::process::id().to_string(),
            ],
            &data,
        );
        let bootstrap = out
            .lines()
            .last()
            .expect("scripts/kafka.sh start prints the bootstrap servers last")
            .trim()
            .to_owned();
        Kafka {
            bootstrap,
            data: Some(data),
        }
    }

    /// `host:port[,host:port…]` for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        self.bootstrap.clone()
    }

    /// Starts the stopped cluster again on the same ports and data (the log survives).
    pub fn start(&self) {
        kafka_sh(&["start"], self.data());
    }

    /// Stops every node (SIGTERM, then SIGKILL after a deadline); the data stays.
    pub fn stop(&self) {
        kafka_sh(&["stop"], self.data());
    }

    /// Signals node `id` (the id Kafka reports as a partition's leader) and waits until it
    /// has exited.
    pub fn kill_node(&self, id: i32, signal: Signal) {
        let signal = match signal {
            Signal::Kill => "KILL",
            Signal::Term => "TERM",
        };
        kafka_sh(
            &["kill-node", &id.to_string(), "--signal", signal],
            self.data(),
        );
    }

    /// Starts node `id` again and waits until the cluster reports every node.
    pub fn restart_node(&self, id: i32) {
        kafka_sh(&["restart-node", &id.to_string()], self.data());
    }

    fn data(&self) -> &PathBuf {
        self.data
            .as_ref()
            .expect("cannot control an external cluster (KAFKA_BROKERS)")
    }
}

/// Runs `scripts/kafka.sh ARGS --data DATA`; panics on failure; returns its standard output.
fn kafka_sh(args: &[&str], data: &PathBuf) -> String {
    let out = Command::new(repo_root().join("scripts/kafka.sh"))
        .args(args)
        .arg("--data")
        .arg(data)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run scripts/kafka.sh");
    assert!(
        out.status.success(),
        "scripts/kafka.sh {} failed ({})",
        args.join(" "),
        out.status
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

impl Drop for Kafka {
    fn drop(&mut self) {
        if let Some(data) = &self.data {
            let _ = Command::new(repo_root().join("scripts/kafka.sh"))
                .args(["stop", "--delete", "--data"])
                .arg(data)
                .status();
        }
    }
}

/// The one-node cluster shared by a test binary: `KAFKA_BROKERS` when set (the test runner
/// starts one), otherwise one started for this process. Tests isolate themselves by topic.
pub fn broker() -> &'static Kafka {
    static SHARED: OnceLock<Kafka> = OnceLock::new();
    SHARED.get_or_init(|| match std::env::var("KAFKA_BROKERS") {
        Ok(list) if !list.is_empty() => Kafka {
            bootstrap: list,
            data: None,
        },
        _ => Kafka::start_new(1),
    })
}

/// A one-node cluster of the test's own, for tests that stop and start it.
pub fn dedicated_broker() -> Kafka {
    Kafka::start_new(1)
}

/// A three-node cluster of the test's own (replication 3, `min.insync.replicas` 2).
pub fn three_node_cluster() -> Kafka {
    Kafka::start_new(3)
}

/// The node id leading `topic`'s `partition`, from a metadata request (`None` while the
/// partition has no leader).
pub fn partition_leader(brokers: &str, topic: &str, partition: i32) -> Option<i32> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("metadata client");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()?;
    let leader = metadata
        .topics()
        .first()?
        .partitions()
        .iter()
        .find(|p| p.id() == partition)?
        .leader();
    (leader >= 0).then_some(leader)
}

/// Creates a topic with one replica (waiting until the broker accepts admin requests); an
/// existing topic is fine.
pub async fn create_topic(brokers: &str, name: &str, partitions: i32) {
    create_replicated_topic(brokers, name, partitions, 1, 1).await;
}

/// Creates a topic with `replication` copies, of which `min_insync` must acknowledge an
/// acks=all write; an existing topic is fine.
pub async fn create_replicated_topic(
    brokers: &str,
    name: &str,
    partitions: i32,
    replication: i32,
    min_insync: u8,
) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let min_insync = min_insync.to_string();
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication))
        .set("min.insync.replicas", &min_insync);
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
