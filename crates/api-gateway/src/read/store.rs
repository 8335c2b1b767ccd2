//! The read pool and the one read query. The pool is the gateway's own (never the consumer's),
//! small (`READ_POOL_SIZE`), quick to give up (`READ_ACQUIRE_TIMEOUT_MS`: excess reads are
//! refused, not queued) and its sessions are read-only with a `statement_timeout`, so a read
//! can neither write nor hold a connection, or PostgreSQL's time, for long.

use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::query::{Cursor, ReadQuery};

/// `application_name` of every read session (find them in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "api-gateway-read";

/// Why a read found no answer in the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Every read connection was busy for the whole acquire timeout.
    #[error("every read connection is busy")]
    Busy,
    /// PostgreSQL cancelled the query at `statement_timeout` (SQLSTATE 57014).
    #[error("the query ran past READ_STATEMENT_TIMEOUT_MS")]
    Timeout,
    /// The database could not be reached or failed otherwise.
    #[error("the database failed: {0}")]
    Failed(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut => StoreError::Busy,
            sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => {
                StoreError::Timeout
            }
            _ => StoreError::Failed(e),
        }
    }
}

/// One stored event as the API returns it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    pub event_id: Uuid,
    pub correlation_id: String,
    pub severity: String,
    pub message: String,
    pub source: String,
    /// event_time, epoch milliseconds.
    pub timestamp: i64,
    /// As stored, passed through unparsed: jsonb keeps numbers no f64 holds (`1e400`, which
    /// a client may send in attributes), and decoding one would fail the whole page.
    pub attributes: Option<Box<RawValue>>,
    #[serde(skip)]
    time_us: i64,
}

impl StoredEvent {
    /// This row's place in the order (for the next page's cursor).
    pub fn cursor(&self) -> Cursor {
        Cursor {
            time_us: self.time_us,
            event_id: self.event_id,
        }
    }
}

/// The read pool.
#[derive(Clone)]
pub struct ReadStore {
    pool: PgPool,
    max: u32,
}

impl ReadStore {
    /// A lazily connecting pool (the database may come up after the gateway): only a
    /// malformed URL fails here.
    pub fn new(
        url: &str,
        max: u32,
        acquire_timeout: Duration,
        statement_timeout: Duration,
    ) -> Result<ReadStore, sqlx::Error> {
        let options: PgConnectOptions = url.parse()?;
        let timeout_ms = statement_timeout.as_millis().to_string();
        let options = options.application_name(APPLICATION_NAME).options([
            ("default_transaction_read_only", "on"),
            ("statement_timeout", timeout_ms.as_str()),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .min_connections(0)
            .acquire_timeout(acquire_timeout)
            .connect_lazy_with(options);
        Ok(ReadStore { pool, max })
    }

    /// Connections open now and the most there may be.
    pub fn connections(&self) -> (u32, u32) {
        (self.pool.size(), self.max)
    }

    /// Up to `q.limit + 1` rows, newest first (the extra row says whether a next page exists).
    pub async fn fetch(&self, q: &ReadQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let mut sql = select(q);
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(event)
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)
    }
}

/// The query for `q`: only the conditions it has, so each one can use its index and the
/// time bounds prune partitions. One severity is an equality (the index then returns rows
/// already in order); several are `= ANY`.
fn select(q: &ReadQuery) -> QueryBuilder<'static, Postgres> {
    let mut b = QueryBuilder::new(
        "SELECT event_id, correlation_id, severity, message, source, attributes::text AS attributes, \
         (extract(epoch FROM event_time) * 1000000)::int8 AS time_us \
         FROM log_events WHERE true",
    );
    if let Some(source) = &q.source {
        b.push(" AND source = ").push_bind(source.clone());
    }
    if let Some(id) = &q.correlation_id {
        b.push(" AND correlation_id = ").push_bind(id.clone());
    }
    match q.severities.as_slice() {
        [] => {}
        [one] => {
            b.push(" AND severity = ").push_bind(one.as_str());
        }
        many => {
            let names: Vec<&'static str> = many.iter().map(|s| s.as_str()).collect();
            b.push(" AND severity = ANY(").push_bind(names).push(")");
        }
    }
    if let Some(from) = q.from_ms {
        b.push(" AND event_time >= ");
        push_time(&mut b, from.saturating_mul(1000));
    }
    if let Some(to) = q.to_ms {
        b.push(" AND event_time < ");
        push_time(&mut b, to.saturating_mul(1000));
    }
    if let Some(c) = q.after {
        b.push(" AND (event_time, event_id) < (");
        push_time(&mut b, c.time_us);
        b.push(", ").push_bind(c.event_id).push(")");
    }
    b.push(" ORDER BY event_time DESC, event_id DESC LIMIT ")
        .push_bind(i64::from(q.limit) + 1);
    b
}

/// Epoch microseconds as a timestamptz, exactly: whole seconds and microseconds apart, since
/// a bigint times an interval goes through float8.
fn push_time(b: &mut QueryBuilder<'static, Postgres>, micros: i64) {
    b.push("(timestamptz 'epoch' + ")
        .push_bind(micros.div_euclid(1_000_000))
        .push(" * interval '1 second' + ")
        .push_bind(micros.rem_euclid(1_000_000))
        .push(" * interval '1 microsecond')");
}

fn event(row: &PgRow) -> Result<StoredEvent, sqlx::Error> {
    let time_us: i64 = row.try_get("time_us")?;
    Ok(StoredEvent {
        event_id: row.try_get("event_id")?,
        correlation_id: row.try_get("correlation_id")?,
        severity: row.try_get("severity")?,
        message: row.try_get("message")?,
        source: row.try_get("source")?,
        timestamp: time_us.div_euclid(1000),
        attributes: row
            .try_get::<Option<String>, _>("attributes")?
            .map(RawValue::from_string)
            .transpose()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        time_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use log_event::Severity;

    fn query() -> ReadQuery {
        ReadQuery {
            source: None,
            severities: vec![],
            correlation_id: None,
            from_ms: None,
            to_ms: None,
            limit: 100,
            after: None,
        }
    }

    #[test]
    fn only_the_conditions_asked_for_are_in_the_sql() {
        let sql = select(&query()).into_sql();
        assert!(!sql.contains("source ="), "{sql}");
        assert!(
            sql.ends_with("ORDER BY event_time DESC, event_id DESC LIMIT $1"),
            "{sql}"
        );
        let sql = select(&ReadQuery {
            source: Some("s".into()),
            severities: vec![Severity::Error],
            from_ms: Some(1),
            to_ms: Some(2),
            ..query()
        })
        .into_sql();
        assert!(
            sql.contains("AND source = $1 AND severity = $2 AND event_time >= "),
            "{sql}"
        );
        let sql = select(&ReadQuery {
            severities: vec![Severity::Error, Severity::Fatal],
            after: Some(Cursor {
                time_us: 1,
                event_id: Uuid::nil(),
            }),
            ..query()
        })
        .into_sql();
        assert!(sql.contains("severity = ANY($1)"), "{sql}");
        assert!(sql.contains("(event_time, event_id) < ("), "{sql}");
    }
}
