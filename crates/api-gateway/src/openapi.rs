//! `GET /openapi.json`: the OpenAPI 3.1 description of every route (tests keep it in step
//! with [`crate::ROUTES`]).

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// The spec document.
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(build)
}

pub async fn serve() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(spec()).expect("spec serializes"),
    )
        .into_response()
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn limited(description: &str) -> Value {
    let mut r = error_response(description);
    r["headers"] = json!({
        "Retry-After": {"schema": {"type": "integer", "minimum": 1}, "description": "Whole seconds until enough permits exist"},
        "RateLimit-Limit": {"schema": {"type": "integer"}},
        "RateLimit-Remaining": {"schema": {"type": "integer"}}
    });
    r
}

fn unavailable() -> Value {
    let mut r = error_response("Kafka unreachable, producer queue full or delivery timed out; safe to retry with the same eventIds");
    r["headers"] = json!({"Retry-After": {"schema": {"type": "integer", "minimum": 1}}});
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

fn build() -> Value {
    let ingest_errors = |ok: Value| {
        json!({
            "202": ok,
            "400": error_response("Malformed JSON or invalid fields (every problem listed in details)"),
            "408": error_response("The body did not arrive whole within HTTP_BODY_READ_TIMEOUT_MS; the connection is closed"),
            "413": error_response("Body, decompressed body or batch too large"),
            "401": unauthorized(),
            "403": error_response("The API key may not write an event's source (details name it)"),
            "415": error_response("Unsupported Content-Type or Content-Encoding"),
            "429": limited("Rate limited under backpressure"),
            "503": unavailable()
        })
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "api-gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Backpressure-aware log ingest: 202 means Kafka holds the event (acks=all, idempotent producer)."
        },
        "paths": {
            "/api/logs": {"post": {
                "summary": "Ingest one event",
                "security": ingest_security(),
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LogEvent"}}}},
                "responses": ingest_errors(json!({"description": "Kafka acknowledged the event", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}}))
            }},
            "/api/logs/batch": {"post": {
                "summary": "Ingest up to 1000 events, all or nothing",
                "security": ingest_security(),
                "requestBody": {"required": true, "content": {
                    "application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/LogEvent"}, "maxItems": 1000}},
                    "application/x-ndjson": {"schema": {"type": "string", "description": "One LogEvent JSON object per line"}}
                }},
                "responses": ingest_errors(json!({"description": "Kafka acknowledged every event", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchAccepted"}}}}))
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
                "responses": {"200": {"description": "Health document", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}}}
            }},
            "/health/live": {"get": {"summary": "The process is up (on GATEWAY_OPS_ADDR when set)", "responses": {"200": {"description": "Up"}}}},
            "/health/ready": {"get": {"summary": "The producer has Kafka metadata for the topic (on GATEWAY_OPS_ADDR when set)", "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (on GATEWAY_OPS_ADDR when set)", "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}}}
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
                "properties": {
                    "eventId": {"type": "string", "format": "uuid", "description": "Idempotency key; when absent it is derived from the event's content (a UUIDv5 over source, correlationId, timestamp, severity, message and attributes), so a retried event is stored once"},
                    "correlationId": {"type": "string", "minLength": 1, "maxLength": 128},
                    "severity": {"type": "string", "enum": ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"], "description": "Case-insensitive on input"},
                    "message": {"type": "string", "minLength": 1, "description": "At most 32 KiB of UTF-8"},
                    "source": {"type": "string", "minLength": 1, "maxLength": 128},
                    "timestamp": {"type": "integer", "minimum": 946684800000i64, "description": "Epoch ms; at most 24 h in the future"},
                    "attributes": {"type": "object", "maxProperties": 64, "additionalProperties": {"type": ["string", "number", "boolean"]}}
                }
            },
            "Accepted": {"type": "object", "required": ["status", "eventId", "partition", "offset"], "properties": {
                "status": {"const": "accepted"}, "eventId": {"type": "string", "format": "uuid"},
                "partition": {"type": "integer"}, "offset": {"type": "integer"}
            }},
            "BatchAccepted": {"type": "object", "required": ["accepted", "eventIds"], "properties": {
                "accepted": {"type": "integer"}, "eventIds": {"type": "array", "items": {"type": "string", "format": "uuid"}}
            }},
            "Error": {"type": "object", "required": ["error", "message", "details"], "properties": {
                "error": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "array"}
            }},
            "OtlpLogsRequest": {"type": "object", "description": "OTLP/JSON ExportLogsServiceRequest (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding); unknown fields are ignored", "properties": {"resourceLogs": {"type": "array", "items": {"type": "object"}}}},
            "OtlpLogsResponse": {"type": "object", "properties": {"partialSuccess": {"type": ["object", "null"], "properties": {
                "rejectedLogRecords": {"type": ["integer", "string"]}, "errorMessage": {"type": "string"}}}}},
            "RpcStatus": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "integer"}, "message": {"type": "string"}}},
            "Health": {"type": "object", "required": ["status", "kafka"], "properties": {
                "status": {"type": "string", "enum": ["healthy", "degraded", "critical"]},
                "consumerLag": {"type": "integer"}, "lagAgeSeconds": {"type": "number"},
                "currentRate": {"type": "number"}, "availablePermissions": {"type": "number"},
                "kafka": {"type": "string", "enum": ["up", "down"]},
                "redis": {"type": "string", "enum": ["up", "down", "disabled"]}
            }}
        }}
    })
}
