//! Benchmark (ignored by default): the consumer's batch insert against psql `\copy` of the
//! same rows into an identical table. Goal: at least 0.7× COPY's rows/s.
//!
//! Run: `cargo test -p log-consumer --release --test consumer insert_benchmark -- --ignored --nocapture`
//! (`BENCH_ROWS` sets the row count, default 200 000; needs `psql` on PATH).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log_consumer::db::{Db, Row};
use log_event::{LogEvent, Severity};
use serde_json::json;
use uuid::Uuid;

const BATCH: usize = 500;
const WRITERS: usize = 4;

fn rows(n: usize) -> Vec<Row> {
    (0..n)
        .map(|i| {
            let event = LogEvent {
                event_id: Uuid::now_v7(),
                correlation_id: format!("corr-{}", i % 997),
                severity: Severity::ALL[i % 6],
                message: format!("request {i} handled in {} ms by worker {}", i % 250, i % 16),
                source: format!("svc-{}", i % 7),
                timestamp: 1_763_800_000_000 + i as i64,
                attributes: (i % 3 == 0).then(|| {
                    let mut m = serde_json::Map::new();
                    m.insert("status".into(), json!(200 + i % 5));
                    m.insert("path".into(), json!("/api/orders"));
                    m
                }),
                received_at: 1_763_800_000_500 + i as i64,
            };
            let raw = event.to_record();
            Row {
                event,
                partition: (i % 3) as i32,
                offset: (i / 3) as i64,
                raw,
            }
        })
        .collect()
}

fn psql(url: &str, command: &str) -> Duration {
    let started = Instant::now();
    let status = Command::new("psql")
        .args([url, "-q", "-v", "ON_ERROR_STOP=1", "-c", command])
        .status()
        .expect("psql on PATH");
    assert!(status.success(), "psql {command}");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly, in release mode"]
async fn batch_insert_reaches_seventy_percent_of_copy() {
    let n: usize = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let url = test_support::fresh_database().await;
    let db = Db::connect(&url, 20, Duration::from_secs(5), Duration::from_secs(60))
        .await
        .unwrap();
    let rows = Arc::new(rows(n));

    // The consumer's way: batches of 500, four at a time, through `Db::insert_batch`.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let (db, rows, next) = (db.clone(), rows.clone(), next.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) * BATCH;
                if i >= rows.len() {
                    return;
                }
                let end = (i + BATCH).min(rows.len());
                db.insert_batch(&rows[i..end]).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let unnest = started.elapsed();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM log_events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, n as i64);

    // COPY's way: the same rows, exported by PostgreSQL itself, into an identical table.
    let csv = std::env::temp_dir().join(format!("{}.csv", test_support::unique("bench")));
    let csv = csv.display();
    // A query, not the table: COPY TO refuses a partitioned table.
    psql(
        &url,
        &format!("\\copy (SELECT * FROM log_events) TO '{csv}' CSV"),
    );
    sqlx::query("CREATE TABLE log_events_copy (LIKE log_events INCLUDING ALL)")
        .execute(&db.pool)
        .await
        .unwrap();
    let copy = psql(&url, &format!("\\copy log_events_copy FROM '{csv}' CSV"));
    let _ = std::fs::remove_file(csv.to_string());

    let unnest_rate = n as f64 / unnest.as_secs_f64();
    let copy_rate = n as f64 / copy.as_secs_f64();
    let ratio = unnest_rate / copy_rate;
    println!(
        "{n} rows: insert_batch {unnest_rate:.0} rows/s ({unnest:.2?}), \\copy {copy_rate:.0} rows/s ({copy:.2?}), ratio {ratio:.2}"
    );
    assert!(ratio >= 0.7, "batch insert at {ratio:.2}× COPY");
}
