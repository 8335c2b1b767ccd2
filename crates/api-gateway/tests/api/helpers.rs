//! Shared helpers for the gateway's integration tests: a gateway on a fresh topic of the
//! shared Apache Kafka broker, request builders and a topic reader.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use api_gateway::{Application, Config, ServeError};
use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

pub(crate) struct TestGateway {
    addr: SocketAddr,
    /// GATEWAY_OPS_ADDR, when the test set it.
    ops_addr: Option<SocketAddr>,
    pub(crate) topic: String,
    pub(crate) brokers: String,
    pub(crate) client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
}

pub(crate) fn config(brokers: &str, topic: &str, extra: &[&str]) -> Config {
    let mut args = vec![
        "api-gateway".to_owned(),
        "--addr=127.0.0.1:0".to_owned(),
        format!("--kafka-brokers={brokers}"),
        format!("--kafka-topic={topic}"),
        "--log-format=text".to_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Config::parse_from(args)
}

impl TestGateway {
    /// A gateway on its own new topic of the shared broker.
    pub(crate) async fn start(extra: &[&str]) -> TestGateway {
        let brokers = test_support::broker().brokers();
        let topic = test_support::unique("gw");
        test_support::create_topic(&brokers, &topic, 3).await;
        Self::start_with(config(&brokers, &topic, extra)).await
    }

    pub(crate) async fn start_with(cfg: Config) -> TestGateway {
        let gw = Self::launch(cfg).await;
        gw.wait_ready().await;
        gw
    }

    /// A gateway that was started, ready or not.
    pub(crate) async fn launch(cfg: Config) -> TestGateway {
        let brokers = cfg.kafka_brokers.clone();
        let topic = cfg.kafka_topic.clone();
        let app = Application::build(cfg).await.expect("gateway builds");
        let addr = app.local_addr();
        let ops_addr = app.ops_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        TestGateway {
            addr,
            ops_addr,
            topic,
            brokers,
            client: reqwest::Client::new(),
            stop: Some(tx),
            done: Some(done),
        }
    }

    async fn wait_ready(&self) {
        self.wait_ready_within(Duration::from_secs(30)).await;
    }

    pub(crate) async fn wait_ready_within(&self, timeout: Duration) {
        let ready = test_support::wait_until(timeout, || async {
            matches!(self.client.get(self.ops_url("/health/ready")).send().await, Ok(r) if r.status() == 200)
        })
        .await;
        assert!(ready, "gateway never became ready");
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Where metrics and probes are served: the operations address if set, else the API's.
    pub(crate) fn ops_url(&self, path: &str) -> String {
        format!("http://{}{}", self.ops_addr.unwrap_or(self.addr), path)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The value of a sample in the gateway's /metrics (`name{labels}` as printed), 0 if absent.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let text = self
            .client
            .get(self.ops_url("/metrics"))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics body");
        sample(&text, series)
    }

    pub(crate) async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request sent")
    }

    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.done.take() {
            done.await.expect("join").expect("clean shutdown");
        }
    }
}

/// The value of `series` (`name{labels}` exactly as Prometheus text prints it) in `text`.
pub(crate) fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
        .unwrap_or(0.0)
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub(crate) fn event(severity: &str, i: usize) -> Value {
    json!({
        "correlationId": format!("corr-{i}"),
        "severity": severity,
        "message": format!("message number {i} with \"quotes\" and ünïcode"),
        "source": "integration-test",
        "timestamp": now_ms() - 1000,
        "attributes": {"n": i, "ok": true, "tag": "t"}
    })
}

/// Reads the record at (partition, offset) of `topic`.
pub(crate) fn read_record(
    brokers: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> (Vec<u8>, Vec<u8>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", test_support::unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            if m.offset() == offset {
                return (
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                );
            }
        }
    }
    panic!("no record at {topic}/{partition}@{offset}");
}

/// Reads every record of the topic (all partitions) until `count` are seen.
pub(crate) fn read_all(brokers: &str, topic: &str, count: usize) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", test_support::unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < count && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(m.payload().unwrap_or_default().to_vec());
        }
    }
    out
}

/// `GET /api/logs/health` as JSON.
pub(crate) async fn health(gw: &TestGateway) -> Value {
    gw.client
        .get(gw.url("/api/logs/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until every gateway in `gws` counts them all as replicas (they share one Redis).
pub(crate) async fn wait_replicas(gws: &[&TestGateway]) {
    let n = gws.len();
    let all = test_support::wait_until(Duration::from_secs(10), || async {
        for gw in gws {
            if health(gw).await["replicas"] != n {
                return false;
            }
        }
        true
    })
    .await;
    assert!(all, "the gateways never saw each other");
}

/// An API key file in a fresh folder (remove the folder when done); `entries` as written
/// in the file, e.g. `{"name":…,"sha256":…,"eventsPerSecond":…}`.
pub(crate) fn key_file(entries: &[Value]) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(test_support::unique("keys"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keys.json");
    std::fs::write(&path, json!({ "keys": entries }).to_string()).unwrap();
    (dir, path)
}

/// Two gateways on a fresh topic and group sharing the Redis at `redis_url`, with the API
/// keys `entries` (none: no key file) and `extra` flags, once each counts the other. Remove
/// the key file's folder (the third value) when done.
pub(crate) async fn gateway_pair(
    redis_url: &str,
    entries: &[Value],
    extra: &[&str],
) -> (TestGateway, TestGateway, Option<std::path::PathBuf>) {
    let brokers = test_support::broker().brokers();
    let topic = test_support::unique("pair");
    test_support::create_topic(&brokers, &topic, 3).await;
    let mut args = vec![
        format!("--redis-url={redis_url}"),
        format!("--kafka-group-id={}", test_support::unique("group")),
    ];
    let dir = if entries.is_empty() {
        None
    } else {
        let (dir, path) = key_file(entries);
        args.push(format!("--api-keys-file={}", path.display()));
        Some(dir)
    };
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let g1 = TestGateway::start_with(config(&brokers, &topic, &args)).await;
    let g2 = TestGateway::start_with(config(&brokers, &topic, &args)).await;
    wait_replicas(&[&g1, &g2]).await;
    (g1, g2, dir)
}

/// The Retry-After of a response, in seconds (at least 1).
pub(crate) fn retry_after(resp: &reqwest::Response) -> u64 {
    let secs: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs >= 1);
    secs
}
