//! Optional API keys (`API_KEYS_FILE`): who may write. The key comes as
//! `Authorization: Bearer …` or `X-API-Key`; its sha256 is looked up in the key file
//! ([`keys`], constant time); the file is re-read on SIGHUP and when it changes
//! ([`reload`]). The secret is never stored, logged or used as a label: the key's name is.

pub mod keys;
pub mod quota;
pub mod reload;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::otlp::wire::Wire;
use crate::{metrics, AppState};
pub use keys::{ApiKey, KeyFileError, KeySet};

/// Why a key file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("could not read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Invalid { path: PathBuf, source: KeyFileError },
}

/// The key file's identity at the last read: a rewrite changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

/// The keys in force and the file they come from.
pub struct ApiKeys {
    path: PathBuf,
    current: RwLock<Arc<KeySet>>,
    stamp: RwLock<Option<Stamp>>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

fn read(path: &Path) -> Result<KeySet, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    KeySet::parse(&text).map_err(|source| LoadError::Invalid {
        path: path.to_owned(),
        source,
    })
}

impl ApiKeys {
    /// Reads the file; a missing or invalid file at start-up is an error (no silent open door).
    pub fn load(path: PathBuf) -> Result<Arc<ApiKeys>, LoadError> {
        let before = stamp(&path);
        let set = read(&path)?;
        tracing::info!(path = %path.display(), keys = set.len(), "API keys loaded");
        metrics::api_keys_loaded(&set);
        Ok(Arc::new(ApiKeys {
            path,
            current: RwLock::new(Arc::new(set)),
            stamp: RwLock::new(before),
        }))
    }

    /// Re-reads the file when `force` (SIGHUP) or when it changed since the last read. A bad
    /// file keeps the keys in force and is logged. Returns whether new keys took effect.
    pub fn reload(&self, force: bool) -> bool {
        let now = stamp(&self.path);
        let last = *self.stamp.read().unwrap_or_else(|e| e.into_inner());
        if !force && now == last {
            return false;
        }
        *self.stamp.write().unwrap_or_else(|e| e.into_inner()) = now;
        match read(&self.path) {
            Ok(set) => {
                tracing::info!(path = %self.path.display(), keys = set.len(), "API keys reloaded");
                metrics::api_keys_loaded(&set);
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "API key file refused; the previous keys stay in force");
                metrics::api_keys_reload_failed();
                false
            }
        }
    }

    /// The key presented in `headers`, if it is one of ours.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<ApiKey>, ApiError> {
        let Some(presented) = presented(headers) else {
            return Err(ApiError::Unauthorized(
                "an API key is required: send Authorization: Bearer <key> (or X-API-Key)",
            ));
        };
        let set = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        set.find(presented)
            .ok_or(ApiError::Unauthorized("the API key is not valid"))
    }
}

/// `Authorization: Bearer <key>` (scheme case-insensitive), else `X-API-Key: <key>`.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?.trim();
        let (scheme, key) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let key = key.trim();
        return (!key.is_empty()).then_some(key);
    }
    let key = headers.get("x-api-key")?.to_str().ok()?.trim();
    (!key.is_empty()).then_some(key)
}

/// The authenticated caller, in the request's extensions for the handlers.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<ApiKey>);

impl Caller {
    /// 403 unless every event's source is one this key may write.
    pub fn check_sources<'a>(
        &self,
        mut sources: impl Iterator<Item = &'a str>,
    ) -> Result<(), ApiError> {
        match sources.find(|s| !self.0.allows(s)) {
            None => Ok(()),
            Some(source) => {
                metrics::api_key_events(&self.0.name, "forbidden", 1);
                Err(ApiError::Forbidden {
                    key: self.0.name.clone(),
                    event_source: source.to_owned(),
                })
            }
        }
    }
}

/// Middleware of `/api/logs` and `/api/logs/batch`: 401 (JSON error body) without a valid
/// key; the caller goes into the request's extensions. A no-op without `API_KEYS_FILE`.
pub async fn require_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    guard(&state, request, next, |e| e.into_response()).await
}

/// Middleware of `/v1/logs`: the same, the 401 a `google.rpc.Status` in the request's
/// encoding.
pub async fn require_key_otlp(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let wire = Wire::from_headers(request.headers()).unwrap_or(Wire::Json);
    guard(&state, request, next, move |e| {
        metrics::event_rejected(e.code());
        let mut response = wire.error(StatusCode::UNAUTHORIZED, e.to_string(), None);
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    })
    .await
}

async fn guard(
    state: &AppState,
    mut request: Request,
    next: Next,
    refuse: impl FnOnce(ApiError) -> Response,
) -> Response {
    let Some(keys) = &state.api_keys else {
        return next.run(request).await;
    };
    match keys.authenticate(request.headers()) {
        Ok(key) => {
            request.extensions_mut().insert(Caller(key));
            next.run(request).await
        }
        Err(e) => refuse(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_key_comes_from_bearer_or_x_api_key() {
        assert_eq!(
            presented(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            presented(&headers(&[("authorization", "bearer  abc ")])),
            Some("abc")
        );
        assert_eq!(presented(&headers(&[("x-api-key", "xyz")])), Some("xyz"));
        assert_eq!(presented(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(presented(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(presented(&headers(&[])), None);
    }

    #[test]
    fn a_rewritten_file_is_reloaded_and_a_bad_one_keeps_the_old_keys() {
        let dir = std::env::temp_dir().join(format!("keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.json");
        let entry = |name: &str, key: &str| {
            format!(
                r#"{{"name":"{name}","sha256":"{}"}}"#,
                keys::hex(&keys::digest(key))
            )
        };
        std::fs::write(&path, format!(r#"{{"keys":[{}]}}"#, entry("a", "ka"))).unwrap();
        let store = ApiKeys::load(path.clone()).unwrap();
        let bearer = |k: &str| headers(&[("authorization", format!("Bearer {k}").as_str())]);
        assert!(store.authenticate(&bearer("ka")).is_ok());
        assert!(!store.reload(false), "unchanged file: nothing to do");

        std::fs::write(&path, format!(r#"{{"keys":[{}]}}"#, entry("bb", "kb"))).unwrap();
        assert!(store.reload(true));
        assert!(store.authenticate(&bearer("ka")).is_err(), "revoked");
        assert_eq!(store.authenticate(&bearer("kb")).unwrap().name, "bb");

        std::fs::write(&path, "{ not json").unwrap();
        assert!(!store.reload(true));
        assert!(
            store.authenticate(&bearer("kb")).is_ok(),
            "previous keys kept"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
