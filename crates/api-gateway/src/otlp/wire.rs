//! OTLP/HTTP encodings: a request is binary protobuf or OTLP/JSON, and every answer (the
//! export response or a `google.rpc.Status` error) goes back in the request's encoding.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use prost::Message;

/// The request's (and so the answer's) encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Protobuf,
    Json,
}

pub const PROTOBUF: &str = "application/x-protobuf";
pub const JSON: &str = "application/json";

impl Wire {
    /// From `Content-Type`: `application/x-protobuf` (or `application/protobuf`) or
    /// `application/json`; None for anything else.
    pub fn from_headers(headers: &HeaderMap) -> Option<Wire> {
        let raw = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let mime = raw.split(';').next()?.trim().to_ascii_lowercase();
        match mime.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Wire::Protobuf),
            "application/json" => Some(Wire::Json),
            _ => None,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Wire::Protobuf => PROTOBUF,
            Wire::Json => JSON,
        }
    }

    /// Decodes an export; the error says why (for a 400).
    pub fn decode(self, bytes: &[u8]) -> Result<ExportLogsServiceRequest, String> {
        match self {
            Wire::Protobuf => ExportLogsServiceRequest::decode(bytes)
                .map_err(|e| format!("not an ExportLogsServiceRequest in protobuf: {e}")),
            // Unknown fields are ignored, as the OTLP/JSON mapping requires. serde's derived
            // structs would also take a JSON array (their "sequence form"): only an object is
            // an OTLP/JSON message.
            Wire::Json => decode_json(bytes)
                .map_err(|e| format!("not an ExportLogsServiceRequest in OTLP/JSON: {e}")),
        }
    }

    /// 200 with an `ExportLogsServiceResponse`; `partial_success` only when records were
    /// rejected.
    pub fn success(self, rejected: usize, error_message: String) -> Response {
        let response = ExportLogsServiceResponse {
            partial_success: (rejected > 0).then_some(ExportLogsPartialSuccess {
                rejected_log_records: rejected as i64,
                error_message,
            }),
        };
        let body = match self {
            Wire::Protobuf => response.encode_to_vec(),
            // All accepted: `{}` (the serde mapping would write `"partialSuccess": null`).
            Wire::Json if response.partial_success.is_none() => b"{}".to_vec(),
            Wire::Json => serde_json::to_vec(&response).expect("the response serializes"),
        };
        self.respond(StatusCode::OK, body, None)
    }

    /// An error status with a `google.rpc.Status` body (and `Retry-After` when given).
    pub fn error(self, status: StatusCode, message: String, retry_after: Option<u64>) -> Response {
        let rpc = Status {
            code: rpc_code(status),
            message,
            details: Vec::new(),
        };
        let body = match self {
            Wire::Protobuf => rpc.encode_to_vec(),
            Wire::Json => serde_json::to_vec(&serde_json::json!({
                "code": rpc.code,
                "message": rpc.message,
            }))
            .expect("the status serializes"),
        };
        self.respond(status, body, retry_after)
    }

    fn respond(self, status: StatusCode, body: Vec<u8>, retry_after: Option<u64>) -> Response {
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type()),
        );
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// OTLP/JSON. serde's derived structs would also take a JSON array (their "sequence form"),
/// so the message and each `resourceLogs` item must be JSON objects first.
fn decode_json(bytes: &[u8]) -> Result<ExportLogsServiceRequest, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if !value.is_object() {
        return Err("the body must be a JSON object".into());
    }
    if let Some(items) = value.get("resourceLogs").and_then(|v| v.as_array()) {
        if items.iter().any(|item| !item.is_object()) {
            return Err("each resourceLogs item must be a JSON object".into());
        }
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// `google.rpc.Status`, the body of every OTLP/HTTP error (not among the generated OTLP
/// messages): code, message, details.
#[derive(Clone, PartialEq, Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types_any::Any>,
}

/// `google.protobuf.Any`, for `Status.details` (always empty here).
pub mod prost_types_any {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
}

/// The gRPC code matching an HTTP status (google.rpc.Code).
fn rpc_code(status: StatusCode) -> i32 {
    match status.as_u16() {
        400 | 413 | 415 => 3, // INVALID_ARGUMENT
        401 => 16,            // UNAUTHENTICATED
        403 => 7,             // PERMISSION_DENIED
        429 => 8,             // RESOURCE_EXHAUSTED
        503 => 14,            // UNAVAILABLE
        _ => 2,               // UNKNOWN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        h
    }

    #[test]
    fn content_types() {
        assert_eq!(
            Wire::from_headers(&headers("application/x-protobuf")),
            Some(Wire::Protobuf)
        );
        assert_eq!(
            Wire::from_headers(&headers("application/protobuf")),
            Some(Wire::Protobuf)
        );
        assert_eq!(
            Wire::from_headers(&headers("Application/JSON; charset=utf-8")),
            Some(Wire::Json)
        );
        assert_eq!(Wire::from_headers(&headers("text/plain")), None);
        assert_eq!(Wire::from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn otlp_json_decodes_hex_ids_string_int64_and_ignores_unknown_fields() {
        let body = br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
          "scopeLogs":[{"scope":{"name":"s"},"logRecords":[{"timeUnixNano":"1796000000000000000",
          "severityNumber":17,"body":{"stringValue":"hi"},"traceId":"5b8efff798038103d269b633813fc60c",
          "spanId":"eee19b7ec3c1b174","attributes":[{"key":"n","value":{"intValue":"7"}}],"someFutureField":1}]}]}]}"#;
        let req = Wire::Json.decode(body).unwrap();
        let r = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(r.time_unix_nano, 1_796_000_000_000_000_000);
        assert_eq!(r.severity_number, 17);
        assert_eq!(r.trace_id.len(), 16);
        assert_eq!(
            r.span_id,
            vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]
        );
        assert!(Wire::Json.decode(b"[1,2]").is_err());
        // Found by schemathesis: serde takes a struct from an array; OTLP/JSON does not.
        assert!(Wire::Json.decode(b" []").is_err());
        assert!(Wire::Json.decode(b"null").is_err());
        assert!(Wire::Json.decode(br#"{"resourceLogs":[[]]}"#).is_err());
        assert!(Wire::Json.decode(b"{}").unwrap().resource_logs.is_empty());
        assert!(Wire::Protobuf.decode(b"\xff\xff\xff").is_err());
    }

    #[test]
    fn answers_use_the_request_encoding() {
        let all = Wire::Json.success(0, String::new());
        assert_eq!(all.headers()[header::CONTENT_TYPE], JSON);
        let ok = Wire::Protobuf.success(2, "2 of 3 log records rejected".into());
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[header::CONTENT_TYPE], PROTOBUF);
        let throttled =
            Wire::Json.error(StatusCode::TOO_MANY_REQUESTS, "slow down".into(), Some(3));
        assert_eq!(throttled.headers()[header::RETRY_AFTER], "3");
        assert_eq!(throttled.headers()[header::CONTENT_TYPE], JSON);
        let status = Status::decode(
            Status {
                code: 8,
                message: "m".into(),
                details: vec![],
            }
            .encode_to_vec()
            .as_slice(),
        )
        .unwrap();
        assert_eq!(status.code, 8);
    }
}
