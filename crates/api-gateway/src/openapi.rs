//! `GET /openapi.json`: the OpenAPI 3.1 description of every route (tests keep it in step
//! with [`crate::ROUTES`], and with what `log_event` and the handlers really accept).
//!
//! The document is built from the running gateway's limits, so `maxItems` is its
//! `MAX_BATCH_EVENTS`, and at each request, so the timestamp's `maximum` is the bound at that
//! moment (the gateway's clock + 24 h); integration-tests/schemathesis.sh checks the two agree.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::ingest::now_ms;
use crate::{AppState, RequestLimits};

pub async fn serve(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&spec(&state.limits, now_ms())).expect("spec serializes"),
    )
        .into_response()
}

/// Strings the edge stores: PostgreSQL cannot hold U+0000, so it is refused.
const NO_NUL: &str = "^[^\\u0000]*$";

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn retry_after(description: &str) -> Value {
    json!({"required": true, "schema": {"type": "integer", "minimum": 1}, "description": description})
}

fn limited() -> Value {
    let mut r = error_response("Rate limited under backpressure by events/s (`rate_limited`) or bytes/s of decoded body (`bytes_rate_limited`, RATE_MAX_BYTES), over the API key's eventsPerSecond (`key_rate_limited`) or bytesPerSecond (`key_bytes_rate_limited`), or a severity shed while the consumer lag is critical (`shed_severity`); `budget` says which budget was hit, `events` or `bytes`");
    r["headers"] = json!({
        "Retry-After": retry_after("Whole seconds until enough permits exist"),
        "RateLimit-Limit": {"required": true, "schema": {"type": "integer", "minimum": 0}, "description": "The current rate of the budget that was hit: events/s, or bytes/s when `budget` is `bytes`"},
        "RateLimit-Remaining": {"required": true, "schema": {"type": "integer", "minimum": 0}, "description": "Permits left now"}
    });
    r
}

fn unavailable() -> Value {
    let mut r = error_response("Not acknowledged: Kafka unreachable, producer queue full or no delivery report within PRODUCE_TIMEOUT_MS (`details[0].failedEventIds` names the events); safe to retry with the same eventIds");
    r["headers"] = json!({"Retry-After": retry_after("Whole seconds before a retry is worth it")});
    r
}

/// 401 with the challenge (only with API_KEYS_FILE set).
fn unauthorized() -> Value {
    let mut r = error_response(
        "API_KEYS_FILE is set and no key, or an unknown or revoked key, was presented",
    );
    r["headers"] = json!({"WWW-Authenticate": {"schema": {"const": "Bearer"}}});
    r
}

/// An OTLP error: a `google.rpc.Status` in the request's encoding, maybe with Retry-After.
fn otlp_error(description: &str, retry_after: Option<&str>) -> Value {
    let mut r = json!({"description": description, "content": {
        "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": {"$ref": "#/components/schemas/RpcStatus"}}
    }});
    if let Some(what) = retry_after {
        r["headers"] = json!({"Retry-After": {"schema": {"type": "integer", "minimum": 1}, "description": what}});
    }
    r
}

/// Ingest takes a key as Bearer or X-API-Key when API_KEYS_FILE is set; the empty
/// requirement says it may also be open (the default).
fn ingest_security() -> Value {
    json!([{"bearer": []}, {"apiKey": []}, {}])
}

fn ingest_responses(ok: Value, limits: &RequestLimits, max_bytes: usize) -> Value {
    json!({
        "202": ok,
        "400": error_response(&format!(
            "Malformed JSON (`malformed_json`, line and column), invalid fields (`invalid_event` / `invalid_batch`, every problem listed in details, by item index), a batch of no events or of more than {} (`bad_request`), or a corrupt gzip body (`bad_request`)",
            limits.max_batch_events
        )),
        "413": error_response(&format!(
            "The body is larger than {max_bytes} bytes, before or after gzip decompression (`payload_too_large`)"
        )),
        "408": error_response("The body did not arrive whole within HTTP_BODY_READ_TIMEOUT_MS (`request_timeout`); the connection is closed"),
        "401": unauthorized(),
        "403": error_response("The API key may not write an event's source (`forbidden`, details name it)"),
        "415": error_response("Unsupported Content-Type, or a Content-Encoding other than gzip / identity (`unsupported_media_type`)"),
        "429": limited(),
        "503": unavailable()
    })
}

/// `GET /api/logs`: the parameters with the bounds `query::parse` enforces.
fn read_operation(limits: &RequestLimits) -> Value {
    use crate::read::query::{CURSOR_PATTERN, DEFAULT_LIMIT, MAX_LIMIT, MAX_TIME_MS};
    let read = &limits.read;
    let hours = read.max_range_ms / 3_600_000;
    let id = |name: &str, what: &str| {
        json!({"name": name, "in": "query", "description": what,
            "schema": {"type": "string", "minLength": 1, "maxLength": read.max_id_chars, "pattern": NO_NUL}})
    };
    let time = |name: &str, what: &str| {
        json!({"name": name, "in": "query", "description": what,
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_TIME_MS}})
    };
    let mut unavailable = error_response("`read_busy`: every read connection stayed busy for READ_ACQUIRE_TIMEOUT_MS; `read_timeout`: the query ran past READ_STATEMENT_TIMEOUT_MS (narrow it); `unavailable`: the database failed (these three carry Retry-After); `read_disabled`: DATABASE_READ_URL is not set");
    unavailable["headers"] = json!({"Retry-After": {"schema": {"type": "integer", "minimum": 1}, "description": "Whole seconds before a retry is worth it"}});
    json!({
        "summary": "Stored events, newest first, a page at a time",
        "description": format!("Filters combine with AND. Without `correlationId`, `from` is required, `to` defaults to now, and `to − from` may be at most {hours} h (READ_MAX_RANGE_HOURS); with it, both are optional. Unknown or repeated parameters are refused. Order: event time descending, then eventId descending; pass `nextCursor` as `cursor` with the same parameters for the next page."),
        "security": ingest_security(),
        "parameters": [
            id("source", "Only this source"),
            {"name": "severity", "in": "query", "style": "form", "explode": false,
                "description": "Only these severities, comma-separated (case-insensitive)",
                "schema": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]}}},
            id("correlationId", "Only this correlation id (no range needed)"),
            time("from", "Epoch milliseconds, inclusive (required without correlationId)"),
            time("to", "Epoch milliseconds, exclusive (default: now)"),
            {"name": "limit", "in": "query", "description": "Events in a page",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}},
            {"name": "cursor", "in": "query", "description": "The previous page's nextCursor, unchanged",
                "schema": {"type": "string", "pattern": CURSOR_PATTERN}}
        ],
        "responses": {
            "200": json_response("A page", json!({"$ref": "#/components/schemas/LogPage"})),
            "400": error_response(&format!("A parameter is invalid, unknown or repeated, `from` is missing without `correlationId`, `to` is not after `from`, the range is wider than {hours} h, or `limit` is outside 1..{MAX_LIMIT} (`bad_request`, every problem in details as field and reason)")),
            "401": unauthorized(),
            "503": unavailable
        }
    })
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// The spec document for a gateway with `limits`, as of `now_ms` (epoch ms).
pub fn spec(limits: &RequestLimits, now_ms: i64) -> Value {
    let event = &limits.event;
    let max_events = limits.max_batch_events;
    let batch_schema = json!({"type": "array", "items": {"$ref": "#/components/schemas/LogEvent"}, "minItems": 1, "maxItems": max_events});
    let gzip_note = "The body may be sent with `Content-Encoding: gzip` (its decompressed size is capped like the body's).";
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "api-gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Backpressure-aware log ingest: 202 means Kafka holds the event (acks=all, idempotent producer)."
        },
        "paths": {
            "/api/logs": {"get": read_operation(limits), "post": {
                "summary": "Ingest one event",
                "description": format!("Content-Type `application/json` (or any `application/*+json`). At most {} bytes. {gzip_note}", limits.max_body_bytes),
                "security": ingest_security(),
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LogEvent"}}}},
                "responses": ingest_responses(json_response("Kafka acknowledged the event", json!({"$ref": "#/components/schemas/Accepted"})), limits, limits.max_body_bytes)
            }},
            "/api/logs/batch": {"post": {
                "summary": format!("Ingest 1 to {max_events} events, all or nothing"),
                "description": format!("A JSON array (`application/json`), or NDJSON: one event per line, blank lines ignored (`application/x-ndjson`; also `application/ndjson`, `application/jsonl`). At most {} bytes. {gzip_note}", limits.max_batch_bytes),
                "security": ingest_security(),
                "requestBody": {"required": true, "content": {
                    "application/json": {"schema": batch_schema},
                    "application/x-ndjson": {"schema": batch_schema, "description": "The array's events, one JSON object per line"}
                }},
                "responses": ingest_responses(json_response("Kafka acknowledged every event", json!({"$ref": "#/components/schemas/BatchAccepted"})), limits, limits.max_batch_bytes)
            }},
            "/v1/logs": {"post": {
                "summary": "OpenTelemetry logs over OTLP/HTTP (ExportLogsServiceRequest)",
                "security": ingest_security(),
                "description": "Binary protobuf or OTLP/JSON, optionally gzip. Records that cannot be stored are counted in partialSuccess and the rest are stored; each record's id derives from its content, so a retried export is stored once. Errors are google.rpc.Status in the request's encoding.",
                "requestBody": {"required": true, "content": {
                    "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                    "application/json": {"schema": {"$ref": "#/components/schemas/OtlpLogsRequest"}}
                }},
                "responses": {
                    "200": {"description": "ExportLogsServiceResponse (partialSuccess when records were rejected)", "content": {
                        "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                        "application/json": {"schema": {"$ref": "#/components/schemas/OtlpLogsResponse"}}}},
                    "400": otlp_error("Undecodable body", None),
                    "401": otlp_error("API_KEYS_FILE is set and no valid key was presented (WWW-Authenticate: Bearer)", None),
                    "403": otlp_error("The API key may not write a record's source", None),
                    "413": otlp_error("Body, decompressed body or record count too large (OTLP_MAX_BODY_BYTES, OTLP_MAX_RECORDS)", None),
                    "415": otlp_error("Content-Type is not application/x-protobuf or application/json, or Content-Encoding is not gzip", None),
                    "429": otlp_error("Throttled by backpressure", Some("Whole seconds to wait before retrying the export")),
                    "503": otlp_error("Kafka did not acknowledge every record; retry the export", Some("Whole seconds to wait"))
                }
            }},
            "/api/logs/health": {"get": {
                "summary": "Backpressure and dependency health",
                "responses": {"200": json_response("Health document", json!({"$ref": "#/components/schemas/Health"}))}
            }},
            "/health/live": {"get": {"summary": "The process is up (on GATEWAY_OPS_ADDR when set)", "responses": {
                "200": json_response("Up", json!({"type": "object", "required": ["status"], "properties": {"status": {"const": "up"}}}))
            }}},
            "/health/ready": {"get": {"summary": "The producer has Kafka metadata for the topic (on GATEWAY_OPS_ADDR when set)", "responses": {
                "200": json_response("Ready", json!({"type": "object", "required": ["status"], "properties": {"status": {"const": "ready"}}})),
                "503": json_response("Not ready", json!({"type": "object", "required": ["status", "reason"], "properties": {"status": {"const": "not_ready"}, "reason": {"type": "string"}}}))
            }}},
            "/metrics": {"get": {"summary": "Prometheus metrics (on GATEWAY_OPS_ADDR when set)", "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": json_response("OpenAPI 3.1", json!({"type": "object"}))}}}
        },
        "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "An API key from API_KEYS_FILE (needed only when it is set)"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "The same key, for clients that cannot send Authorization"}
        },
        "schemas": {
            "LogEvent": {
                "type": "object",
                "additionalProperties": false,
                "required": ["correlationId", "severity", "message", "source", "timestamp"],
                "description": format!("At most {} bytes of JSON, alone or in a batch. `null` for an optional field is the same as leaving it out.", event.max_event_bytes),
                "properties": {
                    "eventId": {"type": ["string", "null"], "format": "uuid", "not": {"const": "00000000-0000-0000-0000-000000000000"},
                        "description": "Idempotency key (a hyphenated UUID, not the nil UUID); when absent or null it is derived from the event's content (a UUIDv5 over source, correlationId, timestamp, severity, message and attributes), so a retried event is stored once"},
                    "correlationId": {"type": "string", "minLength": 1, "maxLength": event.max_id_chars, "pattern": NO_NUL},
                    "severity": {"type": "string", "enum": ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"], "description": "Case-insensitive on input, stored upper-case"},
                    "message": {"type": "string", "minLength": 1, "pattern": NO_NUL, "description": format!("At most {} bytes of UTF-8", event.max_message_bytes)},
                    "source": {"type": "string", "minLength": 1, "maxLength": event.max_id_chars, "pattern": NO_NUL},
                    "timestamp": {"type": "integer", "minimum": log_event::MIN_TIMESTAMP_MS, "maximum": now_ms.saturating_add(event.max_future_skew_ms),
                        "description": format!("Epoch milliseconds, from 2000-01-01T00:00:00Z to {} h after the gateway's clock: `maximum` is that bound when this document was served, and it moves forward with the clock", event.max_future_skew_ms / 3_600_000)},
                    "attributes": {"type": ["object", "null"], "maxProperties": event.max_attributes,
                        "propertyNames": {"minLength": 1, "maxLength": event.max_attribute_key_chars, "pattern": NO_NUL},
                        "additionalProperties": {"type": ["string", "number", "boolean"], "pattern": NO_NUL},
                        "description": format!("Flat: string, number or boolean values; a string value is at most {} bytes of UTF-8", event.max_attribute_value_bytes)}
                }
            },
            "Accepted": {"type": "object", "required": ["status", "eventId", "partition", "offset"], "properties": {
                "status": {"const": "accepted"}, "eventId": {"type": "string", "format": "uuid"},
                "partition": {"type": "integer"}, "offset": {"type": "integer"}
            }},
            "BatchAccepted": {"type": "object", "required": ["accepted", "eventIds"], "properties": {
                "accepted": {"type": "integer", "minimum": 1}, "eventIds": {"type": "array", "items": {"type": "string", "format": "uuid"}}
            }},
            "Error": {"type": "object", "required": ["error", "message", "details"], "properties": {
                "error": {"type": "string", "enum": ["malformed_json", "invalid_event", "invalid_batch", "bad_request", "payload_too_large", "unsupported_media_type", "request_timeout", "unauthorized", "forbidden", "rate_limited", "key_rate_limited", "bytes_rate_limited", "key_bytes_rate_limited", "shed_severity", "unavailable", "read_disabled", "read_busy", "read_timeout"]},
                "budget": {"type": "string", "enum": ["events", "bytes"], "description": "On a 429: the budget that was hit"},
                "message": {"type": "string"}, "details": {"type": "array"}
            }},
            "LogPage": {"type": "object", "required": ["events", "nextCursor"], "properties": {
                "events": {"type": "array", "items": {"$ref": "#/components/schemas/StoredEvent"}},
                "nextCursor": {"type": ["string", "null"], "description": "null on the last page"}
            }},
            "StoredEvent": {"type": "object", "required": ["eventId", "correlationId", "severity", "message", "source", "timestamp", "attributes"], "properties": {
                "eventId": {"type": "string", "format": "uuid"}, "correlationId": {"type": "string"},
                "severity": {"type": "string", "enum": ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]},
                "message": {"type": "string"}, "source": {"type": "string"},
                "timestamp": {"type": "integer", "description": "Epoch milliseconds"},
                "attributes": {"type": ["object", "null"]}
            }},
            "OtlpLogsRequest": {"type": "object", "description": "OTLP/JSON ExportLogsServiceRequest (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding); unknown fields are ignored", "properties": {"resourceLogs": {"type": "array", "items": {"type": "object"}}}},
            "OtlpLogsResponse": {"type": "object", "properties": {"partialSuccess": {"type": ["object", "null"], "properties": {
                "rejectedLogRecords": {"type": ["integer", "string"]}, "errorMessage": {"type": "string"}}}}},
            "RpcStatus": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "integer"}, "message": {"type": "string"}}},
            "Health": {"type": "object", "required": ["status", "kafka", "redis"], "properties": {
                "status": {"type": "string", "enum": ["healthy", "degraded", "critical"]},
                "consumerLag": {"type": ["integer", "null"], "minimum": 0}, "lagAgeSeconds": {"type": ["number", "null"], "minimum": 0},
                "currentRate": {"type": "number"}, "availablePermissions": {"type": "number"},
                "producerQueue": {"type": "integer"}, "replicas": {"type": "integer"},
                "kafka": {"type": "string", "enum": ["up", "down"]},
                "redis": {"type": "string", "enum": ["up", "down", "disabled"]}
            }}
        }}
    })
}

/// The document against the code that enforces it: each bound the spec states is checked on
/// both sides with the parser and the error mapping the handlers use.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::StatusCode;
    use flow_control::LoadStatus;
    use log_event::{parse_batch, BatchFormat, LogEvent, MIN_TIMESTAMP_MS};

    use super::*;
    use crate::backpressure::{Limited, RefusalReason};
    use crate::error::ApiError;
    use crate::rate_limit::RateLimited;
    use crate::Config;

    const NOW: i64 = 1_763_800_000_000;

    fn limits() -> RequestLimits {
        RequestLimits::from_config(&Config::defaults())
    }

    fn event_schema(spec: &Value) -> &Value {
        &spec["components"]["schemas"]["LogEvent"]["properties"]
    }

    fn event(field: &str, value: Value) -> Vec<u8> {
        let mut e = json!({"correlationId": "c", "severity": "INFO", "message": "m", "source": "s", "timestamp": NOW});
        e[field] = value;
        serde_json::to_vec(&e).unwrap()
    }

    fn accepted(body: &[u8]) -> bool {
        LogEvent::parse(body, NOW, &limits().event).is_ok()
    }

    /// Disagreement 4: the timestamp's bounds are stated, and they are the parser's, on both
    /// sides (the upper one as of the moment the document is served).
    #[test]
    fn timestamp_bounds_are_the_parsers() {
        let spec = spec(&limits(), NOW);
        let ts = &event_schema(&spec)["timestamp"];
        let min = ts["minimum"].as_i64().unwrap();
        let max = ts["maximum"].as_i64().unwrap();
        assert_eq!(min, MIN_TIMESTAMP_MS);
        assert_eq!(max, NOW + 24 * 3_600_000);
        assert!(!accepted(&event("timestamp", json!(min - 1))));
        assert!(accepted(&event("timestamp", json!(min))));
        assert!(accepted(&event("timestamp", json!(max))));
        assert!(!accepted(&event("timestamp", json!(max + 1))));
    }

    /// Disagreement 1: `null` for an optional field means absent (clients serialize `None`
    /// as null), so the spec says nullable; required fields stay non-null, and null is refused.
    #[test]
    fn null_is_stated_for_optional_fields_and_refused_for_required_ones() {
        let spec = spec(&limits(), NOW);
        let props = event_schema(&spec);
        for optional in ["eventId", "attributes"] {
            let types = props[optional]["type"].as_array().unwrap();
            assert!(types.contains(&json!("null")), "{optional}");
            assert!(accepted(&event(optional, Value::Null)), "{optional}");
        }
        for required in [
            "correlationId",
            "severity",
            "message",
            "source",
            "timestamp",
        ] {
            assert!(props[required]["type"].is_string(), "{required}");
            assert!(!accepted(&event(required, Value::Null)), "{required}");
        }
    }

    /// The `eventId` forms: `format: uuid` is the hyphenated form only, and not the nil UUID.
    #[test]
    fn event_id_forms_are_the_specs() {
        let spec = spec(&limits(), NOW);
        let id = &event_schema(&spec)["eventId"];
        assert_eq!(id["format"], "uuid");
        let nil = id["not"]["const"].as_str().unwrap();
        assert!(!accepted(&event("eventId", json!(nil))));
        assert!(accepted(&event(
            "eventId",
            json!("0190D5C4-8C4B-7D3A-9F3E-2B7C1A2B3C4D")
        )));
        assert!(!accepted(&event(
            "eventId",
            json!("0190d5c48c4b7d3a9f3e2b7c1a2b3c4d")
        )));
    }

    /// Disagreements 2 and 3: `minItems: 1` and `maxItems: MAX_BATCH_EVENTS`, for both
    /// framings, and both sides of each answered 400 (413 is for bytes).
    #[test]
    fn batch_counts_are_the_parsers_and_answered_400() {
        let limits = limits();
        let spec = spec(&limits, NOW);
        let content = &spec["paths"]["/api/logs/batch"]["post"]["requestBody"]["content"];
        let one = String::from_utf8(event("message", json!("m"))).unwrap();
        for (media, format) in [
            ("application/json", BatchFormat::JsonArray),
            ("application/x-ndjson", BatchFormat::Ndjson),
        ] {
            let schema = &content[media]["schema"];
            let (min, max) = (
                schema["minItems"].as_u64().unwrap() as usize,
                schema["maxItems"].as_u64().unwrap() as usize,
            );
            assert_eq!((min, max), (1, limits.max_batch_events), "{media}");
            let body = |n: usize| match format {
                BatchFormat::JsonArray => format!("[{}]", vec![one.as_str(); n].join(",")),
                BatchFormat::Ndjson => vec![one.as_str(); n].join("\n"),
            };
            let parse = |n: usize| {
                parse_batch(body(n).as_bytes(), format, max, NOW, &limits.event)
                    .map_err(|e| ApiError::from(e).into_response().status())
            };
            assert_eq!(parse(min - 1).unwrap_err(), StatusCode::BAD_REQUEST);
            assert_eq!(parse(min).unwrap().len(), min);
            assert_eq!(parse(max).unwrap().len(), max);
            assert_eq!(parse(max + 1).unwrap_err(), StatusCode::BAD_REQUEST);
        }
    }

    /// Every refusal's code and budget is one the spec lists.
    #[test]
    fn every_refusal_code_and_budget_is_documented() {
        let spec = spec(&limits(), NOW);
        let error = &spec["components"]["schemas"]["Error"]["properties"];
        let listed = |field: &str, value: &str| {
            error[field]["enum"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == value)
        };
        for reason in [
            RefusalReason::RateLimited,
            RefusalReason::ShedSeverity,
            RefusalReason::KeyQuota,
            RefusalReason::BytesLimited,
            RefusalReason::KeyBytesQuota,
        ] {
            assert!(listed("error", reason.as_str()), "{}", reason.as_str());
            assert!(listed("budget", reason.budget().as_str()), "{reason:?}");
        }
    }

    /// The read API's stated bounds are `query::parse`'s, on both sides.
    #[test]
    fn read_bounds_are_the_parsers() {
        use crate::read::query::{parse, Cursor, MAX_TIME_MS};
        let limits = limits();
        let spec = spec(&limits, NOW);
        let params = spec["paths"]["/api/logs"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let schema =
            |name: &str| params.iter().find(|p| p["name"] == name).unwrap()["schema"].clone();
        let read = |pairs: &[(&str, String)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.clone()))
                .collect();
            parse(&pairs, NOW, &limits.read)
        };
        let from = ("from", (NOW - 1000).to_string());
        let max = schema("limit")["maximum"].as_u64().unwrap();
        assert!(read(&[from.clone(), ("limit", max.to_string())]).is_ok());
        assert!(read(&[from.clone(), ("limit", (max + 1).to_string())]).is_err());
        assert_eq!(schema("limit")["minimum"], 1);
        assert!(read(&[from.clone(), ("limit", "0".into())]).is_err());
        assert_eq!(schema("from")["maximum"], MAX_TIME_MS);
        let id = ("correlationId", "c".to_owned());
        assert!(read(&[id.clone(), ("to", MAX_TIME_MS.to_string())]).is_ok());
        assert!(read(&[id.clone(), ("to", (MAX_TIME_MS + 1).to_string())]).is_err());
        let chars = schema("source")["maxLength"].as_u64().unwrap() as usize;
        assert!(read(&[id.clone(), ("source", "s".repeat(chars))]).is_ok());
        assert!(read(&[id.clone(), ("source", "s".repeat(chars + 1))]).is_err());
        let cursor = Cursor {
            time_us: 5,
            event_id: uuid::Uuid::max(),
        }
        .encode();
        let pattern = schema("cursor")["pattern"].as_str().unwrap().to_owned();
        assert_eq!(pattern, format!("^0100[0-9a-f]{{{}}}$", cursor.len() - 4));
        assert!(cursor.starts_with("0100"));
        assert!(read(&[id, ("cursor", cursor)]).is_ok());
        let hours = limits.read.max_range_ms / 3_600_000;
        let described = spec["paths"]["/api/logs"]["get"]["description"]
            .as_str()
            .unwrap();
        assert!(
            described.contains(&format!("at most {hours} h")),
            "{described}"
        );
    }

    /// Every status an ingest request can be answered with is documented, with the headers
    /// it always carries.
    #[test]
    fn every_ingest_status_and_header_is_documented() {
        let limited = Limited {
            reason: RefusalReason::RateLimited,
            retry_after: Duration::from_millis(1500),
            limit: 100.0,
            remaining: 0.0,
            status: LoadStatus::Degraded,
        };
        let answers = [
            ApiError::BadRequest("x".into()).into_response(),
            ApiError::PayloadTooLarge("x".into()).into_response(),
            ApiError::UnsupportedMediaType("x".into()).into_response(),
            RateLimited(limited).into_response(),
            ApiError::PartialDelivery {
                failed: 1,
                total: 1,
                failed_ids: vec![],
                retry_after: 2,
            }
            .into_response(),
        ];
        let spec = spec(&limits(), NOW);
        for path in ["/api/logs", "/api/logs/batch"] {
            let responses = &spec["paths"][path]["post"]["responses"];
            assert!(responses["202"].is_object());
            for answer in &answers {
                let documented = &responses[answer.status().as_str()];
                assert!(documented.is_object(), "{path} {}", answer.status());
                let headers = documented["headers"].as_object();
                for (name, header) in headers.into_iter().flatten() {
                    assert_eq!(header["required"], true, "{name}");
                    assert!(answer.headers().contains_key(name.as_str()), "{name}");
                }
            }
        }
    }
}
