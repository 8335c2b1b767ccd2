//! Time partitions and retention against real Apache Kafka and PostgreSQL: partitions made
//! ahead of need, expired ones dropped whole while the consumer writes, and the migration
//! from the unpartitioned table keeping every row.

use std::time::{Duration, Instant};

use clap::Parser;
use log_consumer::partitions::{now_ms, Interval};
use log_consumer::{Application, Config};
use log_event::{LogEvent, Severity};
use sqlx::PgPool;
use uuid::Uuid;

const DAY_MS: i64 = 86_400_000;

fn event(timestamp: i64, received_at: i64) -> LogEvent {
    LogEvent {
        event_id: Uuid::now_v7(),
        correlation_id: format!("corr-{}", timestamp % 13),
        severity: Severity::ALL[(timestamp % 6) as usize],
        message: format!("event at {timestamp}"),
        source: "svc".into(),
        timestamp,
        attributes: None,
        received_at,
    }
}

struct Setup {
    brokers: String,
    topic: String,
    group: String,
    db_url: String,
    pool: PgPool,
}

async fn setup(db_url: Option<String>) -> Setup {
    let brokers = test_support::broker().brokers();
    let topic = test_support::unique("logs");
    test_support::create_topic(&brokers, &topic, 3).await;
    test_support::create_topic(&brokers, &format!("{topic}.dlq"), 3).await;
    let db_url = match db_url {
        Some(u) => u,
        None => test_support::fresh_database().await,
    };
    let pool = PgPool::connect(&db_url).await.unwrap();
    Setup {
        brokers,
        topic,
        group: test_support::unique("group"),
        db_url,
        pool,
    }
}

struct Running {
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), log_consumer::Error>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Setup {
    async fn start(&self, extra: &[&str]) -> Running {
        let mut args = vec![
            "log-consumer".to_owned(),
            "--addr=127.0.0.1:0".to_owned(),
            format!("--kafka-brokers={}", self.brokers),
            format!("--kafka-topic={}", self.topic),
            format!("--kafka-group-id={}", self.group),
            format!("--database-url={}", self.db_url),
            "--log-format=text".to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let app = Application::build(Config::parse_from(args)).await.unwrap();
        let base = format!("http://{}", app.http_addr());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        let ready = test_support::wait_until(Duration::from_secs(30), || async {
            matches!(reqwest::get(format!("{base}/health/ready")).await, Ok(r) if r.status() == 200)
        })
        .await;
        assert!(ready, "consumer never became ready");
        Running {
            base,
            stop: tx,
            task,
        }
    }

    async fn send(&self, evs: Vec<LogEvent>) {
        let (b, t) = (self.brokers.clone(), self.topic.clone());
        tokio::task::spawn_blocking(move || {
            test_support::produce(
                &b,
                &t,
                evs.iter()
                    .map(|e| (e.correlation_id.as_bytes().to_vec(), e.to_record())),
            )
        })
        .await
        .unwrap();
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    async fn wait_rows(&self, n: i64) -> bool {
        test_support::wait_until(Duration::from_secs(60), || async {
            self.count("SELECT count(*) FROM log_events").await >= n
        })
        .await
    }

    async fn partition_names(&self) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'log_events'::regclass ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}

fn day_partition(ts: i64) -> String {
    let start = Interval::Day.floor(ts);
    log_consumer::partitions::Range {
        start_ms: start,
        end_ms: start + DAY_MS,
    }
    .table_name()
}

#[tokio::test]
async fn partitions_exist_ahead_and_a_day_ahead_event_lands_in_its_own_partition() {
    let s = setup(None).await;
    let consumer = s.start(&[]).await;
    let now = now_ms();

    let names = s.partition_names().await;
    for ts in [now - 7 * DAY_MS, now, now + DAY_MS, now + 2 * DAY_MS] {
        assert!(names.contains(&day_partition(ts)), "{ts}: {names:?}");
    }
    assert!(names.contains(&"log_events_default".to_owned()));

    // 23 h 59 min ahead (the gateway's limit is 24 h), one from 2001, and a redelivery.
    let ahead = event(now + DAY_MS - 60_000, now);
    let old = event(978_307_200_000, now);
    s.send(vec![ahead.clone(), old.clone(), ahead.clone()])
        .await;
    assert!(s.wait_rows(2).await);
    tokio::time::sleep(Duration::from_millis(500)).await; // a late duplicate would show
    assert_eq!(s.count("SELECT count(*) FROM log_events").await, 2);
    let home: String =
        sqlx::query_scalar("SELECT tableoid::regclass::text FROM log_events WHERE event_id = $1")
            .bind(ahead.event_id)
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert_eq!(home, day_partition(ahead.timestamp));
    let home: String =
        sqlx::query_scalar("SELECT tableoid::regclass::text FROM log_events WHERE event_id = $1")
            .bind(old.event_id)
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert_eq!(
        home, "log_events_default",
        "older than the window: the safety net"
    );
    assert!(consumer.metrics().await.contains("consumer_partitions "));
    consumer.stop().await;
}

#[tokio::test]
async fn retention_drops_exactly_the_expired_partitions_while_the_consumer_writes() {
    let s = setup(None).await;
    let now = now_ms();
    // 100 events on each of the last 6 days, plus 50 in 2001 (DEFAULT partition).
    let mut evs = Vec::new();
    for d in 0..6 {
        for i in 0..100 {
            evs.push(event(now - d * DAY_MS - i * 1000, now));
        }
    }
    evs.extend((0..50).map(|i| event(978_307_200_000 + i, now)));
    let first = s.start(&["--log-retention-days=10"]).await;
    s.send(evs.clone()).await;
    assert!(s.wait_rows(650).await);
    first.stop().await;
    let before = s.partition_names().await;

    let consumer = s
        .start(&["--log-retention-days=3", "--partition-maintenance-secs=1"])
        .await;
    let fresh: Vec<LogEvent> = (0..300)
        .map(|i| event(now_ms() - i * 10, now_ms()))
        .collect();
    s.send(fresh.clone()).await;
    assert!(s.wait_rows(1).await);

    // Expired: the partitions ending at or before now − 3 days, and nothing else.
    let cutoff = now_ms() - 3 * DAY_MS;
    let expired: Vec<String> = before
        .iter()
        .filter(|n| n.as_str() != "log_events_default")
        .filter(|n| {
            let start = (-3..12)
                .map(|d| Interval::Day.floor(now - d * DAY_MS))
                .find(|&st| &day_partition(st) == *n)
                .expect("a day partition of the window");
            start + DAY_MS <= cutoff
        })
        .cloned()
        .collect();
    assert!(
        expired.len() >= 7,
        "retention 10 → 3 expires about 7 days: {expired:?}"
    );
    let after = s.partition_names().await;
    for n in &before {
        assert_eq!(!after.contains(n), expired.contains(n), "{n}: {after:?}");
    }
    // Kept: the DEFAULT partition's rows (2001) and those of unexpired partitions.
    let in_default = |e: &&LogEvent| e.timestamp < 1_000_000_000_000;
    let kept_old = evs
        .iter()
        .filter(|e| in_default(e) || Interval::Day.floor(e.timestamp) + DAY_MS > cutoff)
        .count() as i64;
    let want = kept_old + fresh.len() as i64;
    assert!(
        test_support::wait_until(Duration::from_secs(60), || async {
            s.count("SELECT count(*) FROM log_events").await == want
        })
        .await,
        "rows {} != {want}",
        s.count("SELECT count(*) FROM log_events").await
    );
    assert_eq!(
        s.count("SELECT count(*) FROM log_events_default").await,
        50,
        "DEFAULT rows are kept"
    );
    let dropped: f64 = consumer
        .metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("consumer_partitions_dropped_total "))
        .expect("the counter is exported")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(dropped as usize, expired.len());
    consumer.stop().await;
}

#[tokio::test]
async fn migrating_a_filled_table_keeps_every_row_and_the_consumer_writes_on() {
    // Arrange: a database at the first migration only, 50 000 rows over six days.
    let db_url = test_support::fresh_database().await;
    let dir = std::env::temp_dir().join(test_support::unique("migrations"));
    std::fs::create_dir_all(&dir).unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
    let first = "20261122000001_log_events.sql";
    std::fs::copy(format!("{root}/{first}"), dir.join(first)).unwrap();
    let pool = PgPool::connect(&db_url).await.unwrap();
    sqlx::migrate::Migrator::new(dir.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let n: i64 = 50_000;
    sqlx::query(
        "INSERT INTO log_events (event_id, correlation_id, severity, message, source, \
             event_time, received_at, attributes, kafka_partition, kafka_offset) \
         SELECT gen_random_uuid(), 'corr-' || i % 97, 'INFO', 'message ' || i, 'svc', \
             now() - interval '6 days' + i * interval '10 seconds', now(), \
             CASE WHEN i % 3 = 0 THEN jsonb_build_object('i', i) END, i % 3, i \
         FROM generate_series(1, $1) i",
    )
    .bind(n)
    .execute(&pool)
    .await
    .unwrap();
    let fingerprint = "SELECT count(*)::text || ':' || md5(string_agg(\
        event_id::text || event_time::text || message || coalesce(attributes::text, '') \
        || kafka_offset, ',' ORDER BY event_id)) FROM log_events";
    let before: String = sqlx::query_scalar(fingerprint)
        .fetch_one(&pool)
        .await
        .unwrap();

    // Act: the consumer's own start-up migrates.
    let started = Instant::now();
    log_consumer::db::Db::connect(&db_url, 2, Duration::from_secs(5), Duration::from_secs(60))
        .await
        .unwrap();
    println!("migrated {n} rows in {:.2?}", started.elapsed());

    // Assert: every row, field for field, none in DEFAULT; then the consumer writes on.
    let after: String = sqlx::query_scalar(fingerprint)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(after, before);
    let s = setup(Some(db_url)).await;
    assert_eq!(s.count("SELECT count(*) FROM log_events_default").await, 0);
    assert_eq!(
        s.count("SELECT count(*) FROM pg_class WHERE relname = 'log_events_unpartitioned'")
            .await,
        0
    );
    let consumer = s.start(&[]).await;
    let fresh: Vec<LogEvent> = (0..500).map(|i| event(now_ms() - i, now_ms())).collect();
    s.send(fresh).await;
    assert!(s.wait_rows(n + 500).await);
    consumer.stop().await;
}

#[tokio::test]
async fn retention_drops_partitions_under_a_steady_stream_of_writes() {
    // Arrange: 100 rows on each of the last 6 days, stored by a consumer keeping 10 days.
    let s = setup(None).await;
    let now = now_ms();
    let old: Vec<LogEvent> = (0..6)
        .flat_map(|d| (0..100).map(move |i| event(now - d * DAY_MS - i * 1000, now)))
        .collect();
    let consumer = s.start(&["--log-retention-days=10"]).await;
    s.send(old.clone()).await;
    assert!(s.wait_rows(600).await);
    let before = s.partition_names().await;

    // Act: while 20 rounds of 100 fresh events flow through the same running consumer, a
    // maintenance round with 3 days of retention runs beside it (as the consumer's own loop
    // would after a restart with LOG_RETENTION_DAYS=3).
    let stream = {
        let (brokers, topic) = (s.brokers.clone(), s.topic.clone());
        tokio::spawn(async move {
            let mut sent = 0;
            for _ in 0..20 {
                let evs: Vec<LogEvent> = (0..100).map(|_| event(now_ms(), now_ms())).collect();
                let (b, t) = (brokers.clone(), topic.clone());
                tokio::task::spawn_blocking(move || {
                    test_support::produce(
                        &b,
                        &t,
                        evs.iter()
                            .map(|e| (e.correlation_id.as_bytes().to_vec(), e.to_record())),
                    )
                })
                .await
                .unwrap();
                sent += 100;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            sent
        })
    };
    let db = log_consumer::db::Db::connect(
        &s.db_url,
        2,
        Duration::from_secs(5),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    // Wait until the stream is being written, then expire.
    assert!(
        test_support::wait_until(Duration::from_secs(30), || async {
            s.count("SELECT count(*) FROM log_events").await > 600
        })
        .await
    );
    let round = log_consumer::partitions::maintain(&db, now_ms(), Interval::Day, 3)
        .await
        .unwrap();
    let sent = stream.await.unwrap();

    // Assert: exactly the partitions ending by now − 3 days went, every streamed event and
    // every unexpired old row is stored, nothing was dead-lettered.
    let cutoff = now_ms() - 3 * DAY_MS;
    let after = s.partition_names().await;
    let mut dropped = 0;
    for n in &before {
        let start = (-3..12)
            .map(|d| Interval::Day.floor(now - d * DAY_MS))
            .find(|&st| &day_partition(st) == n);
        let expired = start.is_some_and(|st| st + DAY_MS <= cutoff);
        assert_eq!(!after.contains(n), expired, "{n}: {after:?}");
        dropped += usize::from(expired);
    }
    assert_eq!(round.dropped, dropped);
    assert!(
        dropped >= 7,
        "retention 10 → 3 expires about 7 days: {dropped}"
    );
    let kept_old = old
        .iter()
        .filter(|e| Interval::Day.floor(e.timestamp) + DAY_MS > cutoff)
        .count() as i64;
    let want = kept_old + sent;
    assert!(
        test_support::wait_until(Duration::from_secs(60), || async {
            s.count("SELECT count(*) FROM log_events").await == want
        })
        .await,
        "rows {} != {want}",
        s.count("SELECT count(*) FROM log_events").await
    );
    assert_eq!(s.count("SELECT count(*) FROM dead_letters").await, 0);
    consumer.stop().await;
}
