//! PostgreSQL: pool, migrations, the idempotent batch write (binary COPY, or one
//! `ON CONFLICT DO NOTHING` insert when the batch holds a duplicate), dead letters, and the
//! transient/permanent error split that decides between retry and dead-letter.

mod copy;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log_event::LogEvent;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, PgConnection, PgPool, Postgres};
use uuid::Uuid;

use crate::Error;

/// One row to store, with where it came from.
#[derive(Debug, Clone)]
pub struct Row {
    pub event: LogEvent,
    pub partition: i32,
    pub offset: i64,
    /// The record as read (for the dead-letter table).
    pub raw: Vec<u8>,
}

/// A database failure, classified.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Worth retrying: the database, network or pool is unwell.
    #[error("transient database error: {0}")]
    Transient(String),
    /// The data itself is refused (SQLSTATE class 22 or 23): retrying cannot help.
    #[error("database refused the data: {0}")]
    Permanent(String),
}

/// Splits errors: only data exceptions (22) and integrity violations (23) are permanent;
/// everything else (connection, shutdown, permissions, missing table...) is an outage.
pub fn classify(e: sqlx::Error) -> DbError {
    if let sqlx::Error::Database(db) = &e {
        let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
        let reason = format!("{code}: {}", db.message());
        if is_data_error(&code) {
            return DbError::Permanent(reason);
        }
        return DbError::Transient(reason);
    }
    DbError::Transient(e.to_string())
}

/// SQLSTATE classes that blame the row, not the database: 22 (data exception: a NUL byte,
/// an out-of-range timestamp, invalid JSON) and 23 (integrity constraint violation).
/// Anything else, known (08 connection, 53 resources, 57P shutdown) or not (42 a renamed
/// table or a revoked privilege, 40 serialization), is retried: when in doubt, an outage
/// to wait out is safer than a row dead-lettered by mistake.
pub fn is_data_error(sqlstate: &str) -> bool {
    sqlstate.starts_with("22") || sqlstate.starts_with("23")
}

/// How a batch reaches `log_events`. All three store each (event_id, event_time) once and
/// are durable when they return; they differ in speed only (bench/optimisations.md, "The
/// consumer's write path"; `cargo run --release -p log-consumer --example write_paths`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePath {
    /// One `INSERT … SELECT FROM UNNEST(arrays) ON CONFLICT DO NOTHING`.
    Unnest,
    /// Binary COPY into a session's temporary table, then `INSERT … SELECT … ON CONFLICT DO
    /// NOTHING` from it, in one transaction.
    StagedCopy,
    /// Binary COPY straight into `log_events`; the primary key refuses a batch holding a
    /// row already stored (23505, nothing of the batch lands), which is then written again
    /// by [`WritePath::Unnest`]. Duplicates are rare (redelivery after a crash or a
    /// rebalance, client retries), so the common batch pays COPY's cost only.
    CopyThenUnnest,
}

impl WritePath {
    pub const ALL: [WritePath; 3] = [
        WritePath::Unnest,
        WritePath::StagedCopy,
        WritePath::CopyThenUnnest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WritePath::Unnest => "unnest",
            WritePath::StagedCopy => "staged-copy",
            WritePath::CopyThenUnnest => "copy-then-unnest",
        }
    }
}

/// The write path [`Db::insert_batch`] takes: the fastest measured at every batch size.
pub const WRITE_PATH: WritePath = WritePath::CopyThenUnnest;

/// A pooled connection that is closed, not returned to the pool, if dropped while a
/// COPY is under way (a write cancelled by its timeout): sqlx leaves such a connection
/// in a state that fails its next use.
struct CopyConn(Option<PoolConnection<Postgres>>);

impl CopyConn {
    fn conn(&mut self) -> &mut PgConnection {
        self.0.as_mut().expect("taken only by done()")
    }

    /// The COPY ended and the connection is ready for the next statement.
    fn done(mut self) {
        drop(self.0.take());
    }
}

impl Drop for CopyConn {
    fn drop(&mut self) {
        if let Some(conn) = self.0.as_mut() {
            conn.close_on_drop();
        }
    }
}

/// The `attributes` column of a batch as JSON text: every map serialized into one buffer
/// and sliced, rather than one String per row.
struct AttributesColumn {
    json: String,
    spans: Vec<Option<(usize, usize)>>,
}

impl AttributesColumn {
    fn build(rows: &[Row]) -> AttributesColumn {
        let mut buf = Vec::new();
        let mut spans = Vec::with_capacity(rows.len());
        for r in rows {
            let Some(map) = &r.event.attributes else {
                spans.push(None);
                continue;
            };
            let start = buf.len();
            serde_json::to_writer(&mut buf, map).expect("a JSON map serializes into memory");
            spans.push(Some((start, buf.len())));
        }
        let json = String::from_utf8(buf).expect("serde_json writes UTF-8");
        AttributesColumn { json, spans }
    }

    fn column(&self) -> Vec<Option<&str>> {
        self.spans
            .iter()
            .map(|s| s.map(|(a, b)| &self.json[a..b]))
            .collect()
    }
}

/// The pool plus a count of tasks waiting to acquire from it.
#[derive(Clone)]
pub struct Db {
    pub pool: PgPool,
    /// Where the pool connects, for creating the database and migrating.
    options: PgConnectOptions,
    waiting: Arc<AtomicUsize>,
    max: u32,
}

impl Db {
    /// A pool that connects lazily (a database not up yet is an outage to ride out, not a
    /// crash at start), its connections carrying `statement_timeout` (a write the client
    /// gave up on must not keep running, and holding a connection, on the server). Only a
    /// malformed URL fails here; [`Db::prepare`] then waits for the server.
    pub fn new(
        url: &str,
        max: u32,
        acquire_timeout: Duration,
        statement_timeout: Duration,
    ) -> Result<Db, Error> {
        let options: PgConnectOptions = url.parse()?;
        let timeout_ms = statement_timeout.as_millis().to_string();
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .min_connections(0)
            .acquire_timeout(acquire_timeout)
            .connect_lazy_with(
                options
                    .clone()
                    .options([("statement_timeout", timeout_ms.as_str())]),
            );
        Ok(Db {
            pool,
            options,
            waiting: Arc::new(AtomicUsize::new(0)),
            max,
        })
    }

    /// Creates the database if missing and applies the migrations, on a connection of their
    /// own without the writers' statement timeout.
    pub async fn prepare(&self) -> Result<(), Error> {
        create_database_if_missing(&self.options).await?;
        // A one-connection pool: running the migrator on a bare connection makes the future
        // not `Send` (sqlx's Acquire is not general enough over lifetimes).
        let migrations = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(self.options.clone())
            .await?;
        let result = sqlx::migrate!("../../migrations").run(&migrations).await;
        migrations.close().await;
        result?;
        Ok(())
    }

    /// [`Db::new`] then [`Db::prepare`], for callers that need the database now.
    pub async fn connect(
        url: &str,
        max: u32,
        acquire_timeout: Duration,
        statement_timeout: Duration,
    ) -> Result<Db, Error> {
        let db = Db::new(url, max, acquire_timeout, statement_timeout)?;
        db.prepare().await?;
        Ok(db)
    }

    /// (size, idle, waiting, max) for metrics and health.
    pub fn usage(&self) -> (u32, usize, usize, u32) {
        (
            self.pool.size(),
            self.pool.num_idle(),
            self.waiting.load(Ordering::Relaxed),
            self.max,
        )
    }

    async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, DbError> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let conn = self.pool.acquire().await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        conn.map_err(classify)
    }

    /// Stores the rows once each; duplicates are skipped. Returns how many rows were new.
    /// Durable when it returns: offsets may be committed.
    ///
    /// The key is (event_id, event_time): PostgreSQL requires a partitioned table's unique
    /// key to contain the partition key. A duplicate still cannot land twice, in one
    /// partition or two: event_time is part of the event's content, the same in every
    /// redelivery of the Kafka record and in every client retry (content-derived ids hash
    /// the timestamp too). A client reusing an eventId with another timestamp sends another
    /// event, and both are stored (docs/ARCHITECTURE.md, "A row once").
    pub async fn insert_batch(&self, rows: &[Row]) -> Result<u64, DbError> {
        self.insert_batch_via(WRITE_PATH, rows).await
    }

    /// [`Db::insert_batch`] by the given path (the benchmark compares them).
    pub async fn insert_batch_via(&self, path: WritePath, rows: &[Row]) -> Result<u64, DbError> {
        match path {
            WritePath::Unnest => self.insert_unnest(rows).await,
            WritePath::StagedCopy => self.insert_staged_copy(rows).await,
            WritePath::CopyThenUnnest => match self.copy_batch(rows).await {
                // A duplicate (23505) or a row PostgreSQL refuses: the insert that skips
                // duplicates either stores the batch or reports the bad data, as before.
                Err(DbError::Permanent(_)) => self.insert_unnest(rows).await,
                result => result,
            },
        }
    }

    /// Binary COPY of the whole batch into `log_events`: all rows or none.
    async fn copy_batch(&self, rows: &[Row]) -> Result<u64, DbError> {
        let data = copy::encode(rows);
        let mut guard = CopyConn(Some(self.acquire().await?));
        let result = copy_in(
            guard.conn(),
            &format!(
                "COPY log_events ({}) FROM STDIN (FORMAT binary)",
                copy::COLUMNS
            ),
            &data,
        )
        .await;
        // An error PostgreSQL sent (a duplicate, a bad row) ends the COPY cleanly; any
        // other leaves the connection unusable, and the guard closes it.
        if matches!(result, Ok(_) | Err(sqlx::Error::Database(_))) {
            guard.done();
        }
        result.map_err(classify)
    }

    /// Binary COPY into a temporary table, then one insert that skips duplicates, in one
    /// transaction (the temporary table empties itself at commit).
    async fn insert_staged_copy(&self, rows: &[Row]) -> Result<u64, DbError> {
        let data = copy::encode(rows);
        let mut guard = CopyConn(Some(self.acquire().await?));
        let inserted = staged_copy(guard.conn(), &data).await.map_err(classify)?;
        guard.done();
        Ok(inserted)
    }

    async fn insert_unnest(&self, rows: &[Row]) -> Result<u64, DbError> {
        let n = rows.len();
        let mut ids: Vec<Uuid> = Vec::with_capacity(n);
        let mut correlation: Vec<&str> = Vec::with_capacity(n);
        let mut severity: Vec<&str> = Vec::with_capacity(n);
        let mut message: Vec<&str> = Vec::with_capacity(n);
        let mut source: Vec<&str> = Vec::with_capacity(n);
        let mut event_ms: Vec<i64> = Vec::with_capacity(n);
        let mut received_ms: Vec<i64> = Vec::with_capacity(n);
        let mut partitions: Vec<i32> = Vec::with_capacity(n);
        let mut offsets: Vec<i64> = Vec::with_capacity(n);
        for r in rows {
            let e = &r.event;
            ids.push(e.event_id);
            correlation.push(&e.correlation_id);
            severity.push(e.severity.as_str());
            message.push(&e.message);
            source.push(&e.source);
            event_ms.push(e.timestamp);
            received_ms.push(e.received_at);
            partitions.push(r.partition);
            offsets.push(r.offset);
        }
        let attributes_json = AttributesColumn::build(rows);
        let attributes = attributes_json.column();
        let mut conn = self.acquire().await?;
        let result = sqlx::query(
            "INSERT INTO log_events (event_id, correlation_id, severity, message, source, \
                 event_time, received_at, attributes, kafka_partition, kafka_offset) \
             SELECT u.id, u.cid, u.sev, u.msg, u.src, \
                 timestamptz 'epoch' + u.ts * interval '1 millisecond', \
                 timestamptz 'epoch' + u.rx * interval '1 millisecond', \
                 u.attrs::jsonb, u.p, u.o \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
                 $6::int8[], $7::int8[], $8::text[], $9::int4[], $10::int8[]) \
                 AS u(id, cid, sev, msg, src, ts, rx, attrs, p, o) \
             ON CONFLICT (event_id, event_time) DO NOTHING",
        )
        .bind(&ids)
        .bind(&correlation)
        .bind(&severity)
        .bind(&message)
        .bind(&source)
        .bind(&event_ms)
        .bind(&received_ms)
        .bind(&attributes)
        .bind(&partitions)
        .bind(&offsets)
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
        Ok(result.rows_affected())
    }

    /// Stores a record PostgreSQL refused, with the reason.
    pub async fn insert_dead_letter(
        &self,
        topic: &str,
        row: &Row,
        reason: &str,
    ) -> Result<(), DbError> {
        let mut conn = self.acquire().await?;
        sqlx::query(
            "INSERT INTO dead_letters (payload, reason, kafka_topic, kafka_partition, kafka_offset) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&row.raw)
        .bind(reason)
        .bind(topic)
        .bind(row.partition)
        .bind(row.offset)
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
        Ok(())
    }

    /// The partitions attached to `log_events`, with their upper bound (`None` for DEFAULT).
    pub async fn partitions(&self) -> Result<Vec<Partition>, sqlx::Error> {
        let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
            "SELECT c.relname::text, \
                 (extract(epoch FROM (regexp_match(pg_get_expr(c.relpartbound, c.oid), \
                     'TO \\(''([^'']+)''\\)'))[1]::timestamptz) * 1000)::int8 \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'log_events'::regclass \
             ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, upper_ms)| Partition { name, upper_ms })
            .collect())
    }

    /// Creates one partition `[start_ms, end_ms)`. `name` is ours (`partitions::Range`), never
    /// user input; quoted anyway.
    pub async fn create_partition(
        &self,
        name: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF log_events \
             FOR VALUES FROM (to_timestamp({start_ms}::float8 / 1000)) \
             TO (to_timestamp({end_ms}::float8 / 1000))",
            quote_ident(name)
        );
        sqlx::query(&sql).execute(&self.pool).await?;
        Ok(())
    }

    /// Drops one whole partition: no row-by-row delete, no vacuum debt. Detached first, under
    /// a short lock timeout so that a long query holding the table delays retention rather
    /// than queueing the writers behind the lock.
    pub async fn drop_partition(&self, name: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL lock_timeout = '5s'")
            .execute(&mut *tx)
            .await?;
        let quoted = quote_ident(name);
        sqlx::query(&format!("ALTER TABLE log_events DETACH PARTITION {quoted}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("DROP TABLE {quoted}"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Cheap liveness probe.
    pub async fn ping(&self) -> bool {
        match self.acquire().await {
            Ok(mut c) => c.ping().await.is_ok(),
            Err(_) => false,
        }
    }
}

/// The future is boxed as `Send` for a named lifetime: left to inference, sqlx's
/// executor bounds make the writer's spawned task "not general enough" to be `Send`.
type SendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'a>>;

fn copy_in<'a>(
    conn: &'a mut PgConnection,
    statement: &'a str,
    data: &'a [u8],
) -> SendFuture<'a, u64> {
    Box::pin(async move {
        let mut copy = conn.copy_in_raw(statement).await?;
        copy.send(data).await?;
        copy.finish().await
    })
}

/// Four round trips: BEGIN with the table, COPY (start, data), the insert with COMMIT.
/// On an error the caller closes the connection, whose transaction may be left open.
fn staged_copy<'a>(conn: &'a mut PgConnection, data: &'a [u8]) -> SendFuture<'a, u64> {
    Box::pin(async move {
        conn.execute(
            "BEGIN; CREATE TEMP TABLE IF NOT EXISTS log_events_stage \
             (LIKE log_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
        )
        .await?;
        let statement = format!(
            "COPY log_events_stage ({}) FROM STDIN (FORMAT binary)",
            copy::COLUMNS
        );
        copy_in(conn, &statement, data).await?;
        let sql = format!(
            "INSERT INTO log_events ({0}) SELECT {0} FROM log_events_stage \
         ON CONFLICT (event_id, event_time) DO NOTHING; COMMIT",
            copy::COLUMNS
        );
        Ok(conn.execute(sql.as_str()).await?.rows_affected())
    })
}

/// A partition of `log_events`.
#[derive(Debug, Clone)]
pub struct Partition {
    pub name: String,
    /// Exclusive upper bound in epoch milliseconds; `None` for the DEFAULT partition.
    pub upper_ms: Option<i64>,
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn create_database_if_missing(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let admin = options.clone().database("postgres");
    let mut conn = admin.connect().await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        if let Err(e) = sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut conn)
            .await
        {
            // Another consumer may have created it a moment ago.
            tracing::debug!(error = %e, "create database");
        } else {
            tracing::info!(database = %name, "created database");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_classes_22_and_23_blame_the_row() {
        for code in ["22021", "22P05", "22008", "22P02", "23502", "23514"] {
            assert!(is_data_error(code), "{code}");
        }
        for code in [
            "08006", "08001", "57P01", "57P03", "53300", "42P01", "42501", "40001", "",
        ] {
            assert!(!is_data_error(code), "{code}");
        }
    }

    fn row(attributes: Option<serde_json::Map<String, serde_json::Value>>) -> Row {
        let event = LogEvent {
            event_id: Uuid::nil(),
            correlation_id: "c".into(),
            severity: log_event::Severity::ALL[0],
            message: "m".into(),
            source: "s".into(),
            timestamp: 0,
            attributes,
            received_at: 0,
        };
        Row {
            raw: event.to_record(),
            event,
            partition: 0,
            offset: 0,
        }
    }

    #[test]
    fn attributes_become_one_json_text_per_row_and_null_when_absent() {
        let mut a = serde_json::Map::new();
        a.insert("k".into(), serde_json::json!("v \"q\" \u{e9}"));
        a.insert("n".into(), serde_json::json!(1.5));
        let mut b = serde_json::Map::new();
        b.insert("ok".into(), serde_json::json!(true));
        let rows = [
            row(Some(a.clone())),
            row(None),
            row(Some(b.clone())),
            row(None),
        ];
        let col = AttributesColumn::build(&rows);
        let texts = col.column();
        assert_eq!(texts.len(), 4);
        assert!(texts[1].is_none() && texts[3].is_none());
        let parsed =
            |t: Option<&str>| serde_json::from_str::<serde_json::Value>(t.unwrap()).unwrap();
        assert_eq!(parsed(texts[0]), serde_json::Value::Object(a));
        assert_eq!(parsed(texts[2]), serde_json::Value::Object(b));
    }

    #[test]
    fn an_empty_batch_has_an_empty_attributes_column() {
        assert!(AttributesColumn::build(&[]).column().is_empty());
    }

    #[test]
    fn only_data_errors_are_permanent() {
        assert!(matches!(
            classify(sqlx::Error::PoolTimedOut),
            DbError::Transient(_)
        ));
        assert!(matches!(
            classify(sqlx::Error::Io(std::io::Error::other("refused"))),
            DbError::Transient(_)
        ));
    }
}
