//! `GET /api/logs`: the stored events, newest first, a page at a time. [`query`] validates
//! the parameters and owns the cursor (pure), [`store`] owns the read-only pool and the SQL;
//! this file is the handler and the read boundary's error, mapped to a response in one place.

pub mod query;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;

use crate::{metrics, AppState, Config};
use query::{ParamError, ReadLimits};
use store::{ReadStore, StoreError, StoredEvent};

/// The read pool `cfg` asks for: None without DATABASE_READ_URL, an error for a bad URL.
pub fn store_from_config(cfg: &Config) -> Result<Option<ReadStore>, sqlx::Error> {
    let Some(url) = cfg.database_read_url.as_deref().filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let store = ReadStore::new(
        url,
        cfg.read_pool_size,
        Duration::from_millis(cfg.read_acquire_timeout_ms),
        Duration::from_millis(cfg.read_statement_timeout_ms),
    )?;
    metrics::read_pool(0, cfg.read_pool_size);
    Ok(Some(store))
}

/// The bounds `cfg` sets (in [`crate::RequestLimits`]; the OpenAPI document states them).
pub fn read_limits(cfg: &Config) -> ReadLimits {
    ReadLimits {
        max_range_ms: (cfg.read_max_range_hours * 3_600_000) as i64,
        max_id_chars: log_event::Limits::default().max_id_chars,
    }
}

/// Everything a read can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the query is invalid")]
    BadParams(Vec<ParamError>),
    #[error("the query string could not be read: {0}")]
    BadQueryString(String),
    #[error("the read API is disabled (set DATABASE_READ_URL)")]
    Disabled,
    #[error("every read connection is busy; retry shortly")]
    Busy,
    #[error("the query ran past READ_STATEMENT_TIMEOUT_MS; narrow it (a shorter range, a source or a severity)")]
    Timeout,
    #[error("the database is unavailable")]
    Unavailable,
}

impl ReadError {
    pub fn code(&self) -> &'static str {
        match self {
            ReadError::BadParams(_) | ReadError::BadQueryString(_) => "bad_request",
            ReadError::Disabled => "read_disabled",
            ReadError::Busy => "read_busy",
            ReadError::Timeout => "read_timeout",
            ReadError::Unavailable => "unavailable",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ReadError::BadParams(_) | ReadError::BadQueryString(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Busy => ReadError::Busy,
            StoreError::Timeout => ReadError::Timeout,
            StoreError::Failed(cause) => {
                tracing::warn!(error = %cause, "read query failed");
                ReadError::Unavailable
            }
        }
    }
}

impl IntoResponse for ReadError {
    fn into_response(self) -> Response {
        metrics::read_finished(self.code(), None);
        let details = match &self {
            ReadError::BadParams(errors) => json!(errors),
            _ => json!([]),
        };
        let body = json!({"error": self.code(), "message": self.to_string(), "details": details});
        let mut response = (self.status(), Json(body)).into_response();
        if matches!(
            self,
            ReadError::Busy | ReadError::Timeout | ReadError::Unavailable
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
        }
        response
    }
}

/// One page.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    pub events: Vec<StoredEvent>,
    /// Pass as `cursor` with the same parameters for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// `GET /api/logs?source=&severity=&correlationId=&from=&to=&limit=&cursor=`.
pub async fn read_logs(
    State(state): State<Arc<AppState>>,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Page>, ReadError> {
    let Query(pairs) = params.map_err(|e| ReadError::BadQueryString(e.body_text()))?;
    let Some(store) = &state.reader else {
        return Err(ReadError::Disabled);
    };
    let q = query::parse(&pairs, crate::ingest::now_ms(), &state.limits.read)
        .map_err(ReadError::BadParams)?;
    let started = Instant::now();
    let fetched = store.fetch(&q).await;
    let (open, max) = store.connections();
    metrics::read_pool(open, max);
    let mut events = fetched?;
    let next_cursor = if events.len() > q.limit as usize {
        events.truncate(q.limit as usize);
        events.last().map(|e| e.cursor().encode())
    } else {
        None
    };
    metrics::read_finished("ok", Some(started.elapsed()));
    Ok(Json(Page {
        events,
        next_cursor,
    }))
}
