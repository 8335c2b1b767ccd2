//! The consumer's write paths side by side against psql `\copy` of the same rows (issue 20,
//! P4): each batch size, each path in turn, repetitions alternating, medians printed.
//!
//! Run: `cargo run --release -p log-consumer --example write_paths`
//! Env: `ROWS` (default 100 000), `BATCHES` (default `500,2000,5000`), `REPS` (default 3),
//! `WRITERS` (default 4, the consumer's `DB_CONCURRENCY`). Needs PostgreSQL
//! (`TEST_DATABASE_ADMIN_URL`) and `psql` on PATH; works in a fresh database, dropped at the end.
//!
//! "replay" rows: the same batches written a second time (every row a duplicate, as after
//! a consumer crash), rows/s of batches that store nothing.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log_consumer::db::{Db, Row, WritePath};
use log_consumer::partitions::{self, Interval};
use log_event::{LogEvent, Severity};
use serde_json::json;
use uuid::Uuid;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Rows like the gateway's: today's timestamps (so they land in a daily partition), a third
/// with attributes.
fn rows(n: usize, now_ms: i64) -> Vec<Row> {
    (0..n)
        .map(|i| {
            let event = LogEvent {
                event_id: Uuid::now_v7(),
                correlation_id: format!("corr-{}", i % 997),
                severity: Severity::ALL[i % 6],
                message: format!("request {i} handled in {} ms by worker {}", i % 250, i % 16),
                source: format!("svc-{}", i % 7),
                timestamp: now_ms - 60_000 + (i % 60_000) as i64,
                attributes: (i % 3 == 0).then(|| {
                    let mut m = serde_json::Map::new();
                    m.insert("status".into(), json!(200 + i % 5));
                    m.insert("path".into(), json!("/api/orders"));
                    m
                }),
                received_at: now_ms,
            };
            Row {
                raw: event.to_record(),
                event,
                partition: (i % 3) as i32,
                offset: (i / 3) as i64,
            }
        })
        .collect()
}

/// Writes all rows in batches of `batch`, `writers` at once; returns rows/s and rows stored.
async fn write(
    db: &Db,
    path: WritePath,
    rows: &Arc<Vec<Row>>,
    batch: usize,
    writers: usize,
) -> (f64, u64) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (db, rows, next) = (db.clone(), rows.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut stored = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) * batch;
                if i >= rows.len() {
                    return stored;
                }
                let end = (i + batch).min(rows.len());
                stored += db.insert_batch_via(path, &rows[i..end]).await.unwrap();
            }
        }));
    }
    let mut stored = 0;
    for t in tasks {
        stored += t.await.unwrap();
    }
    (rows.len() as f64 / started.elapsed().as_secs_f64(), stored)
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

async fn execute(db: &Db, sql: &str) {
    sqlx::query(sql).execute(&db.pool).await.unwrap();
}

async fn count(db: &Db) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM log_events")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = env_or("ROWS", 100_000);
    let reps: usize = env_or("REPS", 3);
    let writers: usize = env_or("WRITERS", 4);
    let batches: Vec<usize> = env_or("BATCHES", "500,2000,5000".to_owned())
        .split(',')
        .map(|b| b.trim().parse().expect("BATCHES: comma-separated sizes"))
        .collect();
    let url = test_support::fresh_database().await;
    let db = Db::connect(&url, 20, Duration::from_secs(5), Duration::from_secs(120))
        .await
        .unwrap();
    let now = partitions::now_ms();
    partitions::maintain(&db, now, Interval::Day, 7)
        .await
        .unwrap();
    execute(
        &db,
        "CREATE TABLE log_events_plain (LIKE log_events INCLUDING ALL)",
    )
    .await;
    let rows = Arc::new(rows(n, now));
    let csv = std::env::temp_dir().join(format!("{}.csv", test_support::unique("write-paths")));
    let csv = csv.display().to_string();
    let cols = "event_id, correlation_id, severity, message, source, event_time, received_at, \
                attributes, kafka_partition, kafka_offset";

    // (name, batch size) → rows/s per repetition; and \copy into log_events per repetition.
    let mut results: Vec<(String, usize, Vec<f64>)> = Vec::new();
    let mut record = |name: String, batch: usize, rate: f64| match results
        .iter_mut()
        .find(|r| r.0 == name && r.1 == batch)
    {
        Some(r) => r.2.push(rate),
        None => results.push((name, batch, vec![rate])),
    };
    let copy_into = |table: &str| {
        let t = psql(&url, &format!("\\copy {table} ({cols}) FROM '{csv}' CSV"));
        n as f64 / t.as_secs_f64()
    };
    println!("{n} rows, {writers} writers, batches {batches:?}, {reps} repetitions");
    for rep in 0..reps {
        for &batch in &batches {
            // Rotate the order each repetition so no path always runs right after another.
            let mut order = WritePath::ALL.to_vec();
            order.rotate_left(rep % WritePath::ALL.len());
            for path in order {
                execute(&db, "TRUNCATE log_events").await;
                let (rate, stored) = write(&db, path, &rows, batch, writers).await;
                assert_eq!(stored as usize, n, "{}", path.as_str());
                assert_eq!(count(&db).await, n as i64);
                let (replay, again) = write(&db, path, &rows, batch, writers).await;
                assert_eq!(again, 0, "{}: a replay stored rows", path.as_str());
                assert_eq!(count(&db).await, n as i64);
                println!(
                    "rep {rep} batch {batch:>5} {:<17} {rate:>9.0} rows/s, replay {replay:>9.0}",
                    path.as_str()
                );
                record(path.as_str().to_owned(), batch, rate);
                record(format!("{} replay", path.as_str()), batch, replay);
            }
            if !std::path::Path::new(&csv).exists() {
                psql(
                    &url,
                    &format!("\\copy (SELECT {cols} FROM log_events) TO '{csv}' CSV"),
                );
            }
            execute(&db, "TRUNCATE log_events_plain").await;
            let plain = copy_into("log_events_plain");
            execute(&db, "TRUNCATE log_events").await;
            let partitioned = copy_into("log_events");
            println!("rep {rep} batch {batch:>5} \\copy plain {plain:>9.0}, \\copy log_events {partitioned:>9.0}");
            record("\\copy plain table".to_owned(), batch, plain);
            record("\\copy log_events".to_owned(), batch, partitioned);
        }
    }
    let _ = std::fs::remove_file(&csv);

    // Ratios per round, then their median: the machine's drift between rounds cancels out.
    let rates = |name: &str, batch: usize| {
        let r = results.iter().find(|r| r.0 == name && r.1 == batch);
        r.expect("measured").2.clone()
    };
    println!("\nmedian rows/s (median of the per-round ratios to \\copy into log_events)");
    print!("| path |");
    for b in &batches {
        print!(" batch {b} |");
    }
    println!("\n|---|{}", "---:|".repeat(batches.len()));
    let mut names: Vec<String> = Vec::new();
    for r in &results {
        if !names.contains(&r.0) {
            names.push(r.0.clone());
        }
    }
    for name in names {
        print!("| {name} |");
        for &b in &batches {
            let (ours, copy) = (rates(&name, b), rates("\\copy log_events", b));
            let ratios = ours.iter().zip(&copy).map(|(o, c)| o / c).collect();
            print!(" {:.0} ({:.2}) |", median(ours), median(ratios));
        }
        println!();
    }

    db.pool.close().await;
    let name = url.rsplit('/').next().unwrap();
    psql(
        &test_support::database_admin_url(),
        &format!("DROP DATABASE {name}"),
    );
}
