//! The whole pipeline (gateway → Apache Kafka → consumer → PostgreSQL) while brokers fail:
//! a one-node broker stopped and restarted under load, and a three-node cluster losing a
//! partition leader and then its quorum. Clients choose their eventIds, so every
//! acknowledged event can be looked for in `log_events`: each must be there exactly once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use sqlx::PgPool;
use test_support::{Kafka, Signal};
use uuid::Uuid;

/// One request's fate, as the client saw it.
#[derive(Debug, Clone)]
struct Attempt {
    id: Uuid,
    sent: Instant,
    answered: Instant,
    status: u16,
    retry_after: bool,
    partition: Option<i64>,
}

/// Clients posting single events back to back, each recording every attempt.
struct Load {
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(gateway: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let tasks = (0..clients)
            .map(|c| {
                let (stop, attempts, http) = (stop.clone(), attempts.clone(), http.clone());
                let url = format!("{gateway}/api/logs");
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let id = Uuid::new_v4();
                        let body = json!({
                            "eventId": id, "correlationId": format!("client-{c}-{}", i % 7),
                            "severity": "INFO", "message": format!("event {i} of client {c}"),
                            "source": "broker-faults", "timestamp": now_ms(),
                        });
                        let sent = Instant::now();
                        let resp = http.post(&url).json(&body).send().await;
                        let answered = Instant::now();
                        let attempt = match resp {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                let retry_after = r.headers().contains_key("retry-after");
                                let body: Value = r.json().await.unwrap_or(Value::Null);
                                Attempt {
                                    id,
                                    sent,
                                    answered,
                                    status,
                                    retry_after,
                                    partition: body["partition"].as_i64(),
                                }
                            }
                            // Unknown outcome (timeout, reset): never counted as acknowledged.
                            Err(_) => Attempt {
                                id,
                                sent,
                                answered,
                                status: 0,
                                retry_after: false,
                                partition: None,
                            },
                        };
                        let pause = attempt.status != 202;
                        attempts.lock().unwrap().push(attempt);
                        if pause {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            attempts,
            tasks,
        }
    }

    fn snapshot(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }

    /// Waits until some request sent at or after `since` matches `pred`; returns when it was
    /// answered.
    async fn wait_for(
        &self,
        since: Instant,
        timeout: Duration,
        pred: impl Fn(&Attempt) -> bool,
    ) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let hit = self
                .snapshot()
                .iter()
                .filter(|a| a.sent >= since && pred(a))
                .map(|a| a.answered)
                .min();
            if hit.is_some() || Instant::now() >= deadline {
                return hit;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn finish(self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(self.attempts)
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A gateway (in process) and a consumer (its binary) on `topic` of `kafka`, and a database.
struct Pipeline {
    gateway: String,
    stop_gateway: tokio::sync::oneshot::Sender<()>,
    gateway_task: tokio::task::JoinHandle<Result<(), api_gateway::ServeError>>,
    consumer: KillOnDrop,
    pool: PgPool,
}

impl Pipeline {
    async fn start(kafka: &Kafka, topic: &str, produce_timeout_ms: u64) -> Pipeline {
        let brokers = kafka.brokers();
        let group = test_support::unique("group");
        let db_url = test_support::fresh_database().await;
        let gw_cfg = api_gateway::Config::parse_from([
            "api-gateway".to_owned(),
            "--addr=127.0.0.1:0".to_owned(),
            format!("--kafka-brokers={brokers}"),
            format!("--kafka-topic={topic}"),
            format!("--kafka-group-id={group}"),
            format!("--produce-timeout-ms={produce_timeout_ms}"),
            // Flow control is not under test here: no 429 may hide a broker outcome.
            "--rate-max=1000000".to_owned(),
            "--rate-min=1000000".to_owned(),
            "--redis-url=".to_owned(),
            "--log-format=text".to_owned(),
        ]);
        let gw = api_gateway::Application::build(gw_cfg).await.unwrap();
        let gateway = format!("http://{}", gw.local_addr());
        let (stop_gateway, rx) = tokio::sync::oneshot::channel::<()>();
        let gateway_task = tokio::spawn(gw.run_until_stopped(async move {
            let _ = rx.await;
        }));

        // The consumer runs as its own process: each service installs the process-wide
        // metrics recorder.
        let consumer = std::process::Command::new(env!("CARGO_BIN_EXE_log-consumer"))
            .env(
                "CONSUMER_ADDR",
                format!("127.0.0.1:{}", test_support::free_port()),
            )
            .env("KAFKA_BROKERS", &brokers)
            .env("KAFKA_TOPIC", topic)
            .env("KAFKA_GROUP_ID", &group)
            .env("DATABASE_URL", &db_url)
            .env("LOG_FORMAT", "text")
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(KillOnDrop)
            .unwrap();
        let pool = PgPool::connect(&db_url).await.unwrap();
        let http = reqwest::Client::new();
        let ready = test_support::wait_until(Duration::from_secs(30), || async {
            matches!(http.get(format!("{gateway}/health/ready")).send().await, Ok(r) if r.status() == 200)
        })
        .await;
        assert!(ready, "gateway never became ready");
        Pipeline {
            gateway,
            stop_gateway,
            gateway_task,
            consumer,
            pool,
        }
    }

    /// How many times each of `ids` is stored.
    async fn stored(&self, ids: &[Uuid]) -> HashMap<Uuid, i64> {
        sqlx::query_as::<_, (Uuid, i64)>(
            "SELECT event_id, count(*) FROM log_events WHERE event_id = ANY($1) GROUP BY event_id",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
    }

    /// Waits until every acknowledged id is stored, then asserts each is stored exactly
    /// once and that no row exists for an event nobody attempted.
    async fn assert_exactly_once(&self, attempts: &[Attempt]) {
        let acked: Vec<Uuid> = attempts
            .iter()
            .filter(|a| a.status == 202)
            .map(|a| a.id)
            .collect();
        assert!(!acked.is_empty(), "nothing was acknowledged");
        let drained = test_support::wait_until(Duration::from_secs(90), || async {
            self.stored(&acked).await.len() == acked.len()
        })
        .await;
        let stored = self.stored(&acked).await;
        let lost: Vec<_> = acked.iter().filter(|id| !stored.contains_key(id)).collect();
        assert!(
            drained && lost.is_empty(),
            "{} of {} acknowledged events not stored: {:?}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(5)]
        );
        let twice = stored.values().filter(|&&n| n != 1).count();
        assert_eq!(twice, 0, "acknowledged events stored more than once");
        let attempted: HashSet<Uuid> = attempts.iter().map(|a| a.id).collect();
        let rows: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM log_events")
            .fetch_all(&self.pool)
            .await
            .unwrap();
        assert!(
            rows.iter().all(|id| attempted.contains(id)),
            "a row for an event nobody attempted"
        );
        println!(
            "{} attempts, {} acknowledged, all stored once ({} rows)",
            attempts.len(),
            acked.len(),
            rows.len()
        );
    }

    async fn stop(mut self) {
        let _ = self.stop_gateway.send(());
        self.gateway_task.await.unwrap().unwrap();
        let pid = self.consumer.0.id().to_string();
        let term = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        assert!(term.unwrap().success());
        let exit = blocking(|| self.consumer.0.wait()).unwrap();
        assert!(exit.success(), "log-consumer exited with {exit}");
    }
}

/// The consumer's process, killed should the test fail before stopping it (a panicking test
/// must not leave it running).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a blocking script call (a broker stop or start) without stalling the runtime's
/// other tasks: the load, the gateway and the consumer run on it.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn count(attempts: &[Attempt], pred: impl Fn(&Attempt) -> bool) -> usize {
    attempts.iter().filter(|a| pred(a)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_broker_restarted_under_load_answers_503_then_202_and_stores_acks_once() {
    let kafka = test_support::dedicated_broker();
    let topic = test_support::unique("restart");
    test_support::create_topic(&kafka.brokers(), &topic, 3).await;
    test_support::create_topic(&kafka.brokers(), &format!("{topic}.dlq"), 3).await;
    // librdkafka gives up on a record 1.5 s before the HTTP deadline (message.timeout.ms).
    let pipeline = Pipeline::start(&kafka, &topic, 4000).await;
    let load = Load::start(&pipeline.gateway, 4);
    assert!(
        load.wait_for(Instant::now(), Duration::from_secs(20), |a| a.status == 202)
            .await
            .is_some(),
        "no 202 before the broker stopped"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    let stop_began = Instant::now();
    blocking(|| kafka.stop());
    let down = Instant::now();
    println!("broker stopped in {:?}", down - stop_began);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let restart = Instant::now();
    blocking(|| kafka.start());
    let up = Instant::now();
    println!("broker restarted in {:?}", up - restart);

    let back = load
        .wait_for(up, Duration::from_secs(30), |a| a.status == 202)
        .await;
    let back = back.expect("no 202 within 30 s of the broker's restart");
    println!("first 202 {:?} after the broker answered again", back - up);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let attempts = load.finish().await;

    // While it was down (sent after it stopped, answered before it was started): never a
    // 2xx; 503 with Retry-After.
    let during: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.sent >= down && a.answered < restart)
        .collect();
    assert!(
        during.len() >= 4,
        "too few answers while down: {}",
        during.len()
    );
    for a in &during {
        assert!(
            a.status == 503 && a.retry_after,
            "while the broker was down: {a:?}"
        );
    }
    println!(
        "while down: {} answers, all 503 with Retry-After; in all: {} × 202, {} × 503, {} other",
        during.len(),
        count(&attempts, |a| a.status == 202),
        count(&attempts, |a| a.status == 503),
        count(&attempts, |a| a.status != 202 && a.status != 503)
    );

    pipeline.assert_exactly_once(&attempts).await;
    // An event answered 503 while the broker was down had never left the gateway, and
    // librdkafka abandoned it before the answer: it must not be delivered behind the
    // client's back once the broker is back.
    let refused: Vec<Uuid> = during.iter().map(|a| a.id).collect();
    let late = pipeline.stored(&refused).await;
    assert!(
        late.is_empty(),
        "{} events answered 503 were stored after the restart",
        late.len()
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_lose_a_leader_then_their_quorum_and_store_acks_once() {
    let kafka = blocking(test_support::three_node_cluster);
    let topic = test_support::unique("cluster");
    test_support::create_replicated_topic(&kafka.brokers(), &topic, 3, 3, 2).await;
    test_support::create_replicated_topic(&kafka.brokers(), &format!("{topic}.dlq"), 3, 3, 2).await;
    let pipeline = Pipeline::start(&kafka, &topic, 6000).await;
    let load = Load::start(&pipeline.gateway, 4);
    let started = Instant::now();
    assert!(
        load.wait_for(started, Duration::from_secs(20), |a| a.status == 202
            && a.partition == Some(0))
            .await
            .is_some(),
        "partition 0 never acknowledged"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // kill -9 the leader of partition 0: writes to it resume once another replica leads.
    let leader = test_support::partition_leader(&kafka.brokers(), &topic, 0).expect("a leader");
    blocking(|| kafka.kill_node(leader, Signal::Kill));
    // From here the old leader is dead: a 202 on partition 0 needs a new one.
    let killed = Instant::now();
    let back = load
        .wait_for(killed, Duration::from_secs(60), |a| {
            a.status == 202 && a.partition == Some(0)
        })
        .await
        .expect("partition 0 never acknowledged again after its leader was killed");
    println!(
        "leader {leader} of partition 0 killed; a 202 on partition 0 again after {:?}",
        back - killed
    );
    // The broker answering the metadata request may lag the election by a moment.
    let moved = test_support::wait_until(Duration::from_secs(10), || async {
        let now = test_support::partition_leader(&kafka.brokers(), &topic, 0);
        now.is_some() && now != Some(leader)
    })
    .await;
    assert!(
        moved,
        "metadata still names the killed node {leader} as leader"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A second node down: one of three left, below min.insync.replicas (and the controller
    // quorum): acks=all cannot be met, so nothing may be acknowledged.
    let second = (1..=3).find(|&n| n != leader).unwrap();
    blocking(|| kafka.kill_node(second, Signal::Kill));
    let two_down = Instant::now();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let heal = Instant::now();
    let during: Vec<Attempt> = load
        .snapshot()
        .into_iter()
        .filter(|a| a.sent >= two_down && a.answered < heal)
        .collect();
    assert!(
        during.len() >= 4,
        "too few answers with two nodes down: {}",
        during.len()
    );
    for a in &during {
        assert!(
            a.status == 503 && a.retry_after,
            "with two of three nodes down: {a:?}"
        );
    }
    println!(
        "two of three nodes down: {} answers, all 503 with Retry-After",
        during.len()
    );

    blocking(|| kafka.restart_node(leader));
    blocking(|| kafka.restart_node(second));
    let healed = Instant::now();
    let back = load
        .wait_for(healed, Duration::from_secs(60), |a| a.status == 202)
        .await
        .expect("no 202 after both nodes came back");
    println!("both nodes back: first 202 after {:?}", back - healed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let attempts = load.finish().await;
    println!(
        "in all: {} × 202, {} × 503, {} other",
        count(&attempts, |a| a.status == 202),
        count(&attempts, |a| a.status == 503),
        count(&attempts, |a| a.status != 202 && a.status != 503)
    );
    pipeline.assert_exactly_once(&attempts).await;
    pipeline.stop().await;
}
