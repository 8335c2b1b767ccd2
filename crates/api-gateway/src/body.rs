//! Reads a request body under the size and time limits: Content-Type, Content-Length and gzip
//! checks happen before any parsing, decompression is capped so a zip bomb costs nothing, and
//! the whole body must arrive before a deadline.
//!
//! By hand rather than tower-http's layers: `RequestBodyLimitLayer` answers its own 413 (not
//! our error body) and cannot cap the *decompressed* size, and `RequestBodyTimeoutLayer` only
//! bounds the gap between two chunks, so a client trickling a byte a second never times out.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use log_event::BatchFormat;

use crate::error::ApiError;

/// What the body must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// One event: `application/json`.
    Single,
    /// A batch: `application/json` (array) or `application/x-ndjson`.
    Batch,
}

/// Checks the Content-Type and returns the framing it implies.
pub fn content_format(headers: &HeaderMap, expect: Expect) -> Result<BatchFormat, ApiError> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_json =
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"));
    match (expect, mime.as_str()) {
        _ if is_json => Ok(BatchFormat::JsonArray),
        (Expect::Batch, "application/x-ndjson" | "application/ndjson" | "application/jsonl") => {
            Ok(BatchFormat::Ndjson)
        }
        (Expect::Single, _) => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type must be application/json, got {:?}",
            raw
        ))),
        (Expect::Batch, _) => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type must be application/json or application/x-ndjson, got {:?}",
            raw
        ))),
    }
}

/// Reads the whole body, gunzipping it when `Content-Encoding: gzip`, refusing anything
/// over `limit` bytes (compressed or not) with 413 and a body not all there within
/// `deadline` with 408.
pub async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::PayloadTooLarge(format!("the body exceeds {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let gzip = match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str()) {
        None => false,
        Some(Ok(enc)) if enc.trim().eq_ignore_ascii_case("identity") => false,
        Some(Ok(enc)) if enc.trim().eq_ignore_ascii_case("gzip") => true,
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Encoding must be gzip or identity, got {:?}",
                other.unwrap_or("<binary>")
            )))
        }
    };
    let read = tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await;
    let bytes = match read {
        Err(_elapsed) => return Err(ApiError::BodyTimeout(deadline.as_millis())),
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) if is_length_limit(&e) => return Err(too_large()),
        Ok(Err(e)) => {
            return Err(ApiError::BadRequest(format!(
                "could not read the body: {e}"
            )))
        }
    };
    if !gzip {
        return Ok(bytes);
    }
    gunzip(&bytes, limit)
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Decompresses at most `limit` bytes; one byte more means the body is too large
/// (`log_event::gunzip`, the pure function the fuzz targets exercise).
pub fn gunzip(compressed: &[u8], limit: usize) -> Result<Bytes, ApiError> {
    Ok(Bytes::from(log_event::gunzip(compressed, limit)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn content_types() {
        let ok = [
            ("application/json", Expect::Single, BatchFormat::JsonArray),
            (
                "application/json; charset=utf-8",
                Expect::Single,
                BatchFormat::JsonArray,
            ),
            ("Application/JSON", Expect::Batch, BatchFormat::JsonArray),
            ("application/x-ndjson", Expect::Batch, BatchFormat::Ndjson),
            (
                "application/vnd.api+json",
                Expect::Single,
                BatchFormat::JsonArray,
            ),
        ];
        for (ct, expect, format) in ok {
            assert_eq!(
                content_format(&headers(&[("content-type", ct)]), expect).unwrap(),
                format,
                "{ct}"
            );
        }
        for (ct, expect) in [
            ("text/plain", Expect::Single),
            ("application/x-ndjson", Expect::Single),
            ("application/x-www-form-urlencoded", Expect::Batch),
        ] {
            assert!(
                content_format(&headers(&[("content-type", ct)]), expect).is_err(),
                "{ct}"
            );
        }
        assert!(content_format(&HeaderMap::new(), Expect::Single).is_err());
    }

    #[test]
    fn gunzip_caps_output() {
        let data = vec![b'a'; 1000];
        assert_eq!(gunzip(&gz(&data), 1000).unwrap().len(), 1000);
        assert!(matches!(
            gunzip(&gz(&data), 999),
            Err(ApiError::PayloadTooLarge(_))
        ));
        assert!(matches!(
            gunzip(b"not gzip", 1000),
            Err(ApiError::BadRequest(_))
        ));
    }

    const SOON: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn read_enforces_limits_and_encodings() {
        let body = || Body::from(vec![b'x'; 100]);
        assert_eq!(
            read(&HeaderMap::new(), body(), 100, SOON)
                .await
                .unwrap()
                .len(),
            100
        );
        assert!(matches!(
            read(&HeaderMap::new(), body(), 99, SOON).await,
            Err(ApiError::PayloadTooLarge(_))
        ));
        let declared = headers(&[("content-length", "1000")]);
        assert!(matches!(
            read(&declared, body(), 500, SOON).await,
            Err(ApiError::PayloadTooLarge(_))
        ));
        let br = headers(&[("content-encoding", "br")]);
        assert!(matches!(
            read(&br, body(), 500, SOON).await,
            Err(ApiError::UnsupportedMediaType(_))
        ));
        let gzh = headers(&[("content-encoding", "gzip")]);
        let bomb = gz(&vec![0u8; 10 * 1024 * 1024]);
        assert!(bomb.len() < 20_000);
        assert!(matches!(
            read(&gzh, Body::from(bomb), 1024 * 1024, SOON).await,
            Err(ApiError::PayloadTooLarge(_))
        ));
    }

    /// A body whose next byte never comes.
    struct Stalled;

    impl axum::body::HttpBody for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_body_not_all_there_by_the_deadline_is_408() {
        let body = Body::new(Stalled);
        let read = read(&HeaderMap::new(), body, 100, Duration::from_millis(50)).await;
        assert!(matches!(read, Err(ApiError::BodyTimeout(50))));
    }
}
