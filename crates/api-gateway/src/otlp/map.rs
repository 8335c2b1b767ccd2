//! OTLP log records → this project's events, without I/O. The table in the README
//! ("OpenTelemetry (OTLP) logs") is the contract:
//!
//! | OTLP | event |
//! |---|---|
//! | `severity_number` (1–4 TRACE, 5–8 DEBUG, 9–12 INFO, 13–16 WARN, 17–20 ERROR, 21–24 FATAL); unset: `severity_text`; neither: INFO | `severity` |
//! | `body` (a string as is; any other value as JSON; empty: `event_name`) | `message` |
//! | resource attribute `service.name` (else `unknown_service`) | `source` |
//! | `trace_id` (32 hex digits) (else the record attribute `OTLP_CORRELATION_ATTRIBUTE`, else `none`) | `correlationId` |
//! | `time_unix_nano` (else `observed_time_unix_nano`, else the time of receipt), in ms | `timestamp` |
//! | record attributes as is; resource attributes as `resource.<key>`, scope attributes as `scope.<key>`, `scope.name`, `scope.version`, `span_id`, `event_name`, `severity_text` (when it says more than the severity) | `attributes` |
//!
//! Every event then passes the same validation as a JSON event (sizes, NUL, timestamp bounds),
//! and gets a deterministic id (UUIDv5 over its content and both nanosecond times), so an
//! exporter's retry of the same export is stored once.

use std::collections::BTreeMap;

use log_event::{Attributes, EventError, Limits, LogEvent, Severity};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// Namespace of OTLP record ids; never change it (retries across a deploy must agree).
const OTLP_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f74_6c70_2d6c_6f67_2d72_6563_6f72_6431);

/// `source` when the resource names no `service.name` (the OpenTelemetry default).
pub const UNKNOWN_SERVICE: &str = "unknown_service";
/// `correlationId` when there is neither a trace id nor the correlation attribute.
pub const NO_CORRELATION: &str = "none";

/// The events of one export and what was refused.
#[derive(Debug, Default)]
pub struct Mapped {
    pub events: Vec<LogEvent>,
    /// Records refused (they are counted in `partial_success.rejected_log_records`).
    pub rejected: usize,
    /// The first few refusals, for `partial_success.error_message`.
    pub errors: Vec<String>,
}

/// How many refusals `error_message` spells out.
const ERRORS_SHOWN: usize = 3;

/// The number of log records in an export.
pub fn count(request: &ExportLogsServiceRequest) -> usize {
    request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum()
}

/// Maps and validates every record of `request`; `now_ms` is the time of receipt.
pub fn map_request(
    request: &ExportLogsServiceRequest,
    now_ms: i64,
    limits: &Limits,
    correlation_attribute: &str,
) -> Mapped {
    let mut out = Mapped::default();
    for (r, resource_logs) in request.resource_logs.iter().enumerate() {
        let resource_attrs = resource_logs
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        let source = resource_attrs
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) if !s.is_empty() => Some(s.as_str()),
                _ => None,
            })
            .unwrap_or(UNKNOWN_SERVICE);
        let mut shared = Map::new();
        flatten(&mut shared, "resource.", resource_attrs);
        for (s, scope_logs) in resource_logs.scope_logs.iter().enumerate() {
            let mut scoped = shared.clone();
            if let Some(scope) = &scope_logs.scope {
                flatten(&mut scoped, "scope.", &scope.attributes);
                if !scope.name.is_empty() {
                    scoped.insert("scope.name".into(), Value::String(scope.name.clone()));
                }
                if !scope.version.is_empty() {
                    scoped.insert("scope.version".into(), Value::String(scope.version.clone()));
                }
            }
            for (i, record) in scope_logs.log_records.iter().enumerate() {
                let context = Context {
                    source,
                    attributes: &scoped,
                    now_ms,
                    correlation_attribute,
                };
                match map_record(record, &context, limits) {
                    Ok(event) => out.events.push(event),
                    Err(reason) => {
                        out.rejected += 1;
                        if out.errors.len() < ERRORS_SHOWN {
                            out.errors.push(format!(
                                "resource_logs[{r}].scope_logs[{s}].log_records[{i}]: {reason}"
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

impl Mapped {
    /// `partial_success.error_message`: how many were refused and the first reasons.
    pub fn error_message(&self) -> String {
        let total = self.rejected + self.events.len();
        let more = self.rejected.saturating_sub(self.errors.len());
        let mut msg = format!(
            "{} of {} log records rejected: {}",
            self.rejected,
            total,
            self.errors.join("; ")
        );
        if more > 0 {
            msg.push_str(&format!("; and {more} more"));
        }
        msg
    }
}

/// What the records of one scope share.
struct Context<'a> {
    source: &'a str,
    /// Resource and scope attributes, already prefixed.
    attributes: &'a Map<String, Value>,
    now_ms: i64,
    correlation_attribute: &'a str,
}

fn map_record(record: &LogRecord, cx: &Context<'_>, limits: &Limits) -> Result<LogEvent, String> {
    let severity = severity(record.severity_number, &record.severity_text);
    let message = match record.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) if !s.is_empty() => s.clone(),
        Some(any_value::Value::StringValue(_)) | None if !record.event_name.is_empty() => {
            record.event_name.clone()
        }
        Some(any_value::Value::StringValue(_)) | None => {
            return Err("message: the body is empty (and there is no event_name)".into())
        }
        Some(other) => any_json(other).to_string(),
    };
    let mut attributes = cx.attributes.clone();
    if !record.span_id.is_empty() {
        attributes.insert("span_id".into(), Value::String(hex(&record.span_id)));
    }
    if !record.event_name.is_empty() {
        attributes.insert(
            "event_name".into(),
            Value::String(record.event_name.clone()),
        );
    }
    if !record.severity_text.is_empty()
        && !record.severity_text.eq_ignore_ascii_case(severity.as_str())
    {
        attributes.insert(
            "severity_text".into(),
            Value::String(record.severity_text.clone()),
        );
    }
    flatten(&mut attributes, "", &record.attributes); // the record's own win
    let correlation_id = if record.trace_id.iter().any(|b| *b != 0) {
        hex(&record.trace_id)
    } else {
        match attributes.get(cx.correlation_attribute) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(v @ Value::Number(_)) => v.to_string(),
            _ => NO_CORRELATION.to_owned(),
        }
    };
    let nanos = if record.time_unix_nano > 0 {
        record.time_unix_nano
    } else {
        record.observed_time_unix_nano
    };
    let timestamp = if nanos > 0 {
        (nanos / 1_000_000) as i64
    } else {
        cx.now_ms
    };
    let sorted: BTreeMap<&String, &Value> = attributes.iter().collect();
    let canonical = serde_json::to_vec(&(
        cx.source,
        &correlation_id,
        severity.as_str(),
        &message,
        &sorted,
        record.time_unix_nano,
        record.observed_time_unix_nano,
    ))
    .expect("strings, numbers and JSON values always serialize");
    let event_id = Uuid::new_v5(&OTLP_ID_NAMESPACE, &canonical);
    let mut event = json!({
        "eventId": event_id,
        "correlationId": correlation_id,
        "severity": severity.as_str(),
        "message": message,
        "source": cx.source,
        "timestamp": timestamp,
    });
    if !attributes.is_empty() {
        event["attributes"] = Value::Object(attributes);
    }
    let json = serde_json::to_vec(&event).expect("a JSON value always serializes");
    // The same rules as a JSON event: sizes, NUL, timestamp bounds, attribute limits.
    LogEvent::parse(&json, cx.now_ms, limits).map_err(|e| match e {
        EventError::Invalid(fields) => fields
            .iter()
            .map(|f| format!("{}: {}", f.field, f.reason))
            .collect::<Vec<_>>()
            .join(", "),
        EventError::Malformed { reason, .. } => reason,
    })
}

/// The OpenTelemetry severity number ranges; an unset number falls back to the text.
pub fn severity(number: i32, text: &str) -> Severity {
    match number {
        1..=4 => Severity::Trace,
        5..=8 => Severity::Debug,
        9..=12 => Severity::Info,
        13..=16 => Severity::Warn,
        17..=20 => Severity::Error,
        21..=24 => Severity::Fatal,
        _ => Severity::parse(text).unwrap_or_else(|| match text.to_ascii_uppercase().as_str() {
            "WARNING" => Severity::Warn,
            "ERR" | "SEVERE" => Severity::Error,
            "CRITICAL" | "CRIT" | "ALERT" | "EMERGENCY" | "PANIC" => Severity::Fatal,
            _ => Severity::Info,
        }),
    }
}

/// Flat attributes: scalars as they are, arrays, maps and bytes as JSON text (the event's
/// attributes hold strings, numbers and booleans only).
fn flatten(into: &mut Attributes, prefix: &str, attributes: &[KeyValue]) {
    for kv in attributes {
        let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            None => continue,
            Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
            Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
            Some(any_value::Value::IntValue(i)) => Value::from(*i),
            Some(v @ any_value::Value::DoubleValue(_)) => any_json(v), // a number, or "NaN"
            Some(any_value::Value::BytesValue(b)) => Value::String(hex(b)),
            Some(other) => Value::String(any_json(other).to_string()),
        };
        into.insert(format!("{prefix}{}", kv.key), value);
    }
}

/// An OTLP value as JSON (non-finite doubles as strings, bytes as hex).
fn any_json(value: &any_value::Value) -> Value {
    match value {
        any_value::Value::StringValue(s) => Value::String(s.clone()),
        any_value::Value::BoolValue(b) => Value::Bool(*b),
        any_value::Value::IntValue(i) => Value::from(*i),
        any_value::Value::DoubleValue(d) => serde_json::Number::from_f64(*d)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(d.to_string())),
        any_value::Value::BytesValue(b) => Value::String(hex(b)),
        any_value::Value::ArrayValue(a) => Value::Array(a.values.iter().map(any_opt).collect()),
        any_value::Value::KvlistValue(kv) => Value::Object(
            kv.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value.as_ref().map_or(Value::Null, any_opt),
                    )
                })
                .collect(),
        ),
        #[allow(unreachable_patterns)] // newer protocol versions add variants
        _ => Value::Null,
    }
}

fn any_opt(v: &AnyValue) -> Value {
    v.value.as_ref().map_or(Value::Null, any_json)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope};
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    const NOW: i64 = 1_796_000_000_000;

    fn s(v: &str) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        })
    }

    fn kv(key: &str, value: Option<AnyValue>) -> KeyValue {
        KeyValue {
            key: key.into(),
            value,
            ..Default::default()
        }
    }

    fn request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("checkout")), kv("host.name", s("h1"))],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "app.orders".into(),
                        version: "1.2".into(),
                        ..Default::default()
                    }),
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn record(body: &str) -> LogRecord {
        LogRecord {
            time_unix_nano: (NOW as u64 - 5_000) * 1_000_000 + 123,
            observed_time_unix_nano: (NOW as u64 - 4_000) * 1_000_000,
            severity_number: 17,
            severity_text: "ERROR".into(),
            body: s(body),
            trace_id: vec![0xab; 16],
            span_id: vec![0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08],
            attributes: vec![kv(
                "order.id",
                Some(AnyValue {
                    value: Some(any_value::Value::IntValue(42)),
                }),
            )],
            ..Default::default()
        }
    }

    fn map(req: &ExportLogsServiceRequest) -> Mapped {
        map_request(req, NOW, &Limits::default(), "correlation_id")
    }

    #[test]
    fn fields_map_as_documented() {
        let m = map(&request(vec![record("payment failed")]));
        assert_eq!((m.events.len(), m.rejected), (1, 0));
        let e = &m.events[0];
        assert_eq!(e.severity, Severity::Error);
        assert_eq!(e.message, "payment failed");
        assert_eq!(e.source, "checkout");
        assert_eq!(e.correlation_id, "ab".repeat(16));
        assert_eq!(e.timestamp, NOW - 5_000);
        assert_eq!(e.received_at, NOW);
        let a = e.attributes.as_ref().unwrap();
        assert_eq!(a["order.id"], 42);
        assert_eq!(a["resource.service.name"], "checkout");
        assert_eq!(a["resource.host.name"], "h1");
        assert_eq!(a["scope.name"], "app.orders");
        assert_eq!(a["scope.version"], "1.2");
        assert_eq!(a["span_id"], "0102030405060708");
        assert!(!a.contains_key("severity_text"), "ERROR says nothing more");
    }

    #[test]
    fn ids_are_deterministic_and_tell_records_apart() {
        let req = request(vec![record("a"), record("b")]);
        let (first, again) = (map(&req), map(&req));
        assert_eq!(first.events[0].event_id, again.events[0].event_id);
        assert_eq!(first.events[1].event_id, again.events[1].event_id);
        assert_ne!(first.events[0].event_id, first.events[1].event_id);
        // Same text, another nanosecond: another record.
        let mut later = record("a");
        later.time_unix_nano += 1;
        assert_ne!(
            map(&request(vec![later])).events[0].event_id,
            first.events[0].event_id
        );
    }

    #[test]
    fn severities_follow_the_number_ranges_then_the_text() {
        let cases = [
            (1, "", Severity::Trace),
            (8, "", Severity::Debug),
            (9, "", Severity::Info),
            (13, "", Severity::Warn),
            (20, "", Severity::Error),
            (24, "", Severity::Fatal),
            (0, "warning", Severity::Warn),
            (0, "Critical", Severity::Fatal),
            (0, "error", Severity::Error),
            (0, "", Severity::Info),
            (99, "nonsense", Severity::Info),
        ];
        for (n, text, want) in cases {
            assert_eq!(severity(n, text), want, "{n} {text:?}");
        }
    }

    #[test]
    fn fallbacks_for_missing_fields() {
        let mut r = record("x");
        r.trace_id.clear();
        r.time_unix_nano = 0;
        r.observed_time_unix_nano = 0;
        r.attributes.push(kv("correlation_id", s("req-7")));
        let mut req = request(vec![r.clone()]);
        req.resource_logs[0].resource = None;
        let e = &map(&req).events[0];
        assert_eq!(e.source, UNKNOWN_SERVICE);
        assert_eq!(e.correlation_id, "req-7");
        assert_eq!(e.timestamp, NOW, "receipt time");
        r.attributes.pop();
        r.observed_time_unix_nano = (NOW as u64 - 1) * 1_000_000;
        let e = &map(&request(vec![r])).events[0];
        assert_eq!(e.correlation_id, NO_CORRELATION);
        assert_eq!(e.timestamp, NOW - 1, "observed time");
    }

    #[test]
    fn structured_bodies_and_values_become_json_text() {
        let mut r = record("");
        r.body = Some(AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![
                    s("a").unwrap(),
                    AnyValue {
                        value: Some(any_value::Value::DoubleValue(1.5)),
                    },
                ],
            })),
        });
        r.attributes.push(kv(
            "raw",
            Some(AnyValue {
                value: Some(any_value::Value::BytesValue(vec![0xff, 0x00])),
            }),
        ));
        r.attributes.push(kv(
            "nan",
            Some(AnyValue {
                value: Some(any_value::Value::DoubleValue(f64::NAN)),
            }),
        ));
        let e = &map(&request(vec![r])).events[0];
        assert_eq!(e.message, r#"["a",1.5]"#);
        let a = e.attributes.as_ref().unwrap();
        assert_eq!(a["raw"], "ff00");
        assert_eq!(a["nan"], "NaN");
    }

    #[test]
    fn invalid_records_are_rejected_one_by_one_with_reasons() {
        let mut empty = record("");
        empty.event_name = String::new();
        let mut named = record("");
        named.event_name = "user.login".into();
        let mut nul = record("a\0b");
        nul.severity_number = 9;
        let mut ancient = record("old");
        ancient.time_unix_nano = 1_000_000; // 1970
        let huge = record(&"x".repeat(40 * 1024));
        let m = map(&request(vec![
            empty,
            record("fine"),
            named,
            nul,
            ancient,
            huge,
        ]));
        assert_eq!(m.events.len(), 2, "{:?}", m.errors);
        assert_eq!(m.events[1].message, "user.login");
        assert_eq!(m.rejected, 4);
        let msg = m.error_message();
        assert!(msg.starts_with("4 of 6 log records rejected: "), "{msg}");
        assert!(
            msg.contains("log_records[0]: message: the body is empty"),
            "{msg}"
        );
        assert!(
            msg.contains("log_records[3]: message: must not contain U+0000"),
            "{msg}"
        );
        assert!(
            msg.contains("log_records[4]: timestamp: must not be before 2000"),
            "{msg}"
        );
        assert!(msg.ends_with("; and 1 more"), "{msg}");
        assert_eq!(count(&request(vec![record("a"), record("b")])), 2);
    }
}
