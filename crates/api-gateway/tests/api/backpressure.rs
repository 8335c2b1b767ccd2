//! Adaptive backpressure against real Apache Kafka and Redis: lag drives the rate, critical load
//! sheds low severities with 429 + Retry-After while ERROR still gets through, recovery
//! restores the rate, and gateways share one Redis budget (falling back when it is gone).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::helpers::{self, event, health, TestGateway};

/// Fills the topic with `n` small records, bypassing the gateway.
fn backlog(brokers: &str, topic: &str, n: usize) {
    let payload = br#"{"backlog":true}"#;
    test_support::produce(
        brokers,
        topic,
        (0..n).map(|i| ((i % 64).to_string().into_bytes(), payload.to_vec())),
    );
}

/// Commits the group's offsets at the end of every partition.
fn commit_to_end(brokers: &str, group: &str, topic: &str) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(5))
            .unwrap();
        tpl.add_partition_offset(topic, p, Offset::Offset(high))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
}

#[tokio::test]
async fn lag_drives_the_rate_sheds_low_severity_and_recovers() {
    let brokers = test_support::broker().brokers();
    let topic = test_support::unique("bp");
    let group = test_support::unique("group");
    test_support::create_topic(&brokers, &topic, 3).await;
    let gw = TestGateway::start_with(helpers::config(
        &brokers,
        &topic,
        &[
            &format!("--kafka-group-id={group}"),
            "--lag-interval-ms=1000",
            "--redis-url=",
        ],
    ))
    .await;
    let h = health(&gw).await;
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["currentRate"], 1000.0);
    assert_eq!(h["redis"], "disabled");

    let b = brokers.clone();
    let t = topic.clone();
    tokio::task::spawn_blocking(move || backlog(&b, &t, 60_000))
        .await
        .unwrap();
    let filled = Instant::now();

    // Within two lag intervals (1 s each, plus the query's own time): critical at 100/s.
    let critical = test_support::wait_until(Duration::from_secs(3), || async {
        let h = health(&gw).await;
        h["status"] == "critical" && h["consumerLag"].as_u64() >= Some(60_000)
    })
    .await;
    assert!(
        critical,
        "not critical {:?} after the backlog: {}",
        filled.elapsed(),
        health(&gw).await
    );
    let h = health(&gw).await;
    assert_eq!(h["currentRate"], 100.0);
    assert!(h["consumerLag"].as_u64().unwrap() >= 60_000, "{h}");
    assert!(h["lagAgeSeconds"].as_f64().unwrap() < 3.0);

    // INFO is shed with 429 + Retry-After + RateLimit headers.
    let resp = gw.post_json("/api/logs", &event("info", 1)).await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_eq!(resp.headers()["ratelimit-limit"], "100");
    assert!(resp.headers().contains_key("ratelimit-remaining"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "shed_severity");
    assert_eq!(body["details"][0]["status"], "critical");

    // WARN uses the general pool: once it is spent, plain rate limiting.
    let mut warn_statuses = Vec::new();
    for _ in 0..4 {
        let batch: Vec<Value> = (0..50).map(|i| event("warn", i)).collect();
        let resp = gw.post_json("/api/logs/batch", &json!(batch)).await;
        warn_statuses.push(resp.status().as_u16());
    }
    assert!(warn_statuses.contains(&202), "{warn_statuses:?}");
    assert!(
        warn_statuses.contains(&429),
        "100/s must limit 200 quick WARNs: {warn_statuses:?}"
    );

    // ERROR still gets 202 from the reserved share while WARN is limited.
    let mut error_ok = 0;
    for i in 0..5 {
        if gw.post_json("/api/logs", &event("error", i)).await.status() == 202 {
            error_ok += 1;
        }
    }
    assert_eq!(
        error_ok, 5,
        "ERROR events must get through under critical load"
    );

    // Batches are charged per event and shed as a whole when they hold low severities.
    let batch = json!([event("error", 1), event("debug", 2)]);
    assert_eq!(gw.post_json("/api/logs/batch", &batch).await.status(), 429);

    // The consumer catches up: rate back to 1000, healthy.
    let (b, g, t) = (brokers.clone(), group.clone(), topic.clone());
    tokio::task::spawn_blocking(move || commit_to_end(&b, &g, &t))
        .await
        .unwrap();
    let healthy = test_support::wait_until(Duration::from_secs(5), || async {
        let h = health(&gw).await;
        h["status"] == "healthy" && h["currentRate"] == 1000.0
    })
    .await;
    assert!(healthy, "did not recover: {}", health(&gw).await);
    assert_eq!(
        gw.post_json("/api/logs", &event("info", 2)).await.status(),
        202
    );

    let metrics = gw
        .client
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "rate_limiter_rejected_total{reason=\"shed_severity\"}",
        "rate_limiter_rejected_total{reason=\"rate_limited\"}",
        "http_requests_total{route=\"/api/logs\",method=\"POST\",status=\"429\"}",
        "kafka_consumer_lag{partition=\"0\"}",
        "rate_limiter_rate",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
    gw.stop().await;
}

/// Sends batches of 10 INFO events as fast as `clients` connections allow for `window`;
/// returns the events accepted.
async fn hammer(gw: &TestGateway, clients: usize, window: Duration) -> u64 {
    let accepted = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + window;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = gw.client.clone();
        let url = gw.url("/api/logs/batch");
        let accepted = accepted.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let batch: Vec<Value> = (0..10).map(|i| event("info", c * 1000 + i)).collect();
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(json!(batch).to_string())
                    .send()
                    .await
                    .unwrap();
                if resp.status() == 202 {
                    accepted.fetch_add(10, Ordering::Relaxed);
                } else {
                    assert_eq!(resp.status(), 429);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    accepted.load(Ordering::Relaxed)
}

/// A private redis-server on a free port, killed when dropped.
pub(crate) struct RedisServer {
    child: Child,
    pub(crate) url: String,
}

impl RedisServer {
    pub(crate) fn start() -> RedisServer {
        let port = test_support::free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let url = format!("redis://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisServer { child, url }
    }

    /// Kills the server (the gateways using it see it go).
    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn two_gateways_share_one_redis_budget_and_survive_redis_loss() {
    let mut redis = RedisServer::start();
    let brokers = test_support::broker().brokers();
    let topic = test_support::unique("shared");
    let group = test_support::unique("group");
    test_support::create_topic(&brokers, &topic, 3).await;
    let args = [
        format!("--kafka-group-id={group}"),
        format!("--redis-url={}", redis.url),
        "--rate-max=200".to_owned(),
        "--rate-min=20".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = TestGateway::start_with(helpers::config(&brokers, &topic, &args)).await;
    let b = TestGateway::start_with(helpers::config(&brokers, &topic, &args)).await;
    let both_see_two = test_support::wait_until(Duration::from_secs(10), || async {
        health(&a).await["replicas"] == 2 && health(&b).await["replicas"] == 2
    })
    .await;
    assert!(
        both_see_two,
        "replica count: {} / {}",
        health(&a).await,
        health(&b).await
    );
    assert_eq!(health(&a).await["redis"], "up");

    // 10 s window, both saturated: together no more than the budget (+ one lease each).
    let window = Duration::from_secs(10);
    let (got_a, got_b) = tokio::join!(hammer(&a, 8, window), hammer(&b, 8, window));
    let total = got_a + got_b;
    let rate = 200.0;
    let burst = 200.0;
    let lease = 10.0 + 10.0 * 2.0; // a batch may lease its need plus 5% of the rate, per gateway
    let ceiling = (rate * window.as_secs_f64() + burst + lease * 2.0) as u64;
    println!("shared budget: a={got_a} b={got_b} total={total} ceiling={ceiling}");
    assert!(total <= ceiling, "admitted {total} > {ceiling}");
    assert!(
        total as f64 >= rate * window.as_secs_f64() * 0.8,
        "admitted only {total}"
    );
    assert!(got_a > 0 && got_b > 0);

    // Redis gone: both keep serving, each at rate ÷ 2.
    redis.stop();
    let (got_a, got_b) = tokio::join!(
        hammer(&a, 4, Duration::from_secs(5)),
        hammer(&b, 4, Duration::from_secs(5))
    );
    println!("fallback: a={got_a} b={got_b}");
    assert_eq!(health(&a).await["redis"], "down");
    assert_eq!(health(&b).await["redis"], "down");
    for got in [got_a, got_b] {
        assert!(got > 0, "a gateway stopped serving without Redis");
        // rate/2 = 100/s for 5 s, plus a burst of 100 and one in-flight lease.
        assert!(got <= 100 * 5 + 100 + 40, "fallback admitted {got}");
    }
    a.stop().await;
    b.stop().await;
}

/// Requests that arrive together each find no leased permits and go to Redis for a lease;
/// the leases must not drain the shared bucket and refuse one another. 16 batches of 10 at
/// once (160 events) fit in the general pool's bucket (180 at the default 900/s), so every
/// one is admitted, round after round.
#[tokio::test]
async fn concurrent_requests_within_the_burst_are_all_admitted() {
    let redis = RedisServer::start();
    let brokers = test_support::broker().brokers();
    let topic = test_support::unique("together");
    test_support::create_topic(&brokers, &topic, 3).await;
    let group = format!("--kafka-group-id={}", test_support::unique("group"));
    let redis_url = format!("--redis-url={}", redis.url);
    let gw =
        TestGateway::start_with(helpers::config(&brokers, &topic, &[&group, &redis_url])).await;
    assert_eq!(health(&gw).await["redis"], "up");
    for round in 0..5 {
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..16 {
            let (client, url) = (gw.client.clone(), gw.url("/api/logs/batch"));
            let batch: Vec<Value> = (0..10)
                .map(|i| event("info", round * 1000 + c * 10 + i))
                .collect();
            tasks.spawn(async move {
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(json!(batch).to_string())
                    .send()
                    .await
                    .unwrap();
                (resp.status().as_u16(), resp.text().await.unwrap())
            });
        }
        let answers = tasks.join_all().await;
        let refused: Vec<_> = answers.iter().filter(|(s, _)| *s != 202).collect();
        assert!(
            refused.is_empty(),
            "round {round}: {} of 16 refused: {:?}",
            refused.len(),
            refused.first()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    gw.stop().await;
}

/// The Java original's test-backpressure.sh: 500 concurrent single events to an idle gateway
/// at the default 1 000/s. While healthy the bucket holds a second of the rate
/// (RATE_BURST_HEALTHY_MS), so every one is accepted. (A debug gateway on two shared cores
/// answers these slower than 1 000/s, so here the bucket refills as fast as it is drawn and
/// this passes with the small bucket too; the next test is the one that tells them apart.)
#[tokio::test]
async fn an_idle_gateway_accepts_500_concurrent_events() {
    let redis = RedisServer::start();
    let gw = spike_gateway(&redis, &[]).await;
    assert_eq!(health(&gw).await["status"], "healthy");
    let started = Instant::now();
    let statuses = spike(&gw, 500).await;
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    println!(
        "spike of 500 at 1000/s while healthy: {accepted} accepted in {:?}",
        started.elapsed()
    );
    assert_eq!(accepted, 500, "statuses: {statuses:?}");
    gw.stop().await;
}

/// The healthy burst is what admits a spike: at 100/s a spike of 80 fits the healthy bucket
/// (90 for INFO) and not the loaded one (50, refilled at 90/s while the spike arrives).
#[tokio::test]
async fn a_spike_within_a_second_of_the_rate_needs_the_healthy_burst() {
    let redis = RedisServer::start();
    let slow = ["--rate-max=100", "--rate-min=10"];
    let gw = spike_gateway(&redis, &slow).await;
    let healthy = spike(&gw, 80).await;
    gw.stop().await;
    let gw = spike_gateway(&redis, &[slow[0], slow[1], "--rate-burst-healthy-ms=0"]).await;
    let loaded = spike(&gw, 80).await;
    gw.stop().await;
    let count = |s: &[u16]| s.iter().filter(|s| **s == 202).count();
    println!(
        "spike of 80 at 100/s: {} accepted with the healthy burst, {} with the loaded one",
        count(&healthy),
        count(&loaded)
    );
    assert_eq!(count(&healthy), 80, "{healthy:?}");
    assert!(count(&loaded) < 75, "{loaded:?}");
    assert!(loaded.iter().all(|s| *s == 202 || *s == 429), "{loaded:?}");
}

/// A gateway on a fresh topic and group, sharing `redis`, with `extra` flags.
async fn spike_gateway(redis: &RedisServer, extra: &[&str]) -> TestGateway {
    let brokers = test_support::broker().brokers();
    let topic = test_support::unique("spike");
    test_support::create_topic(&brokers, &topic, 3).await;
    let group = format!("--kafka-group-id={}", test_support::unique("group"));
    let redis_url = format!("--redis-url={}", redis.url);
    let mut args = vec![group.as_str(), redis_url.as_str()];
    args.extend_from_slice(extra);
    TestGateway::start_with(helpers::config(&brokers, &topic, &args)).await
}

/// `n` single events sent at once, each on its own open connection; their statuses.
async fn spike(gw: &TestGateway, n: usize) -> Vec<u16> {
    let mut tasks = tokio::task::JoinSet::new();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    for i in 0..n {
        let client = reqwest::Client::new();
        let url = gw.url("/api/logs");
        let body = event("info", i).to_string();
        let start = start.clone();
        let health = gw.url("/api/logs/health");
        tasks.spawn(async move {
            // Connect first (the connection is kept alive), so the events arrive together
            // rather than as fast as 500 connections are set up.
            client.get(&health).send().await.unwrap();
            start.wait().await;
            client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    tasks.join_all().await
}
