//! Single-event parsing: one pass to split the object into borrowed raw fields, then each
//! field is checked on its own so that *every* problem is reported, not just the first.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::{
    Attributes, EventError, FieldError, Limits, LogEvent, Mode, Severity, MIN_TIMESTAMP_MS,
};

/// Known top-level keys, matched without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    EventId,
    CorrelationId,
    Severity,
    Message,
    Source,
    Timestamp,
    Attributes,
    ReceivedAt,
}

impl Key {
    const ALL: [Key; 8] = [
        Key::EventId,
        Key::CorrelationId,
        Key::Severity,
        Key::Message,
        Key::Source,
        Key::Timestamp,
        Key::Attributes,
        Key::ReceivedAt,
    ];

    fn name(self) -> &'static str {
        match self {
            Key::EventId => "eventId",
            Key::CorrelationId => "correlationId",
            Key::Severity => "severity",
            Key::Message => "message",
            Key::Source => "source",
            Key::Timestamp => "timestamp",
            Key::Attributes => "attributes",
            Key::ReceivedAt => "receivedAt",
        }
    }

    fn from_name(name: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.name() == name)
    }
}

enum AnyKey {
    Known(Key),
    Unknown(String),
}

impl<'de> Deserialize<'de> for AnyKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = AnyKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AnyKey, E> {
                Ok(match Key::from_name(v) {
                    Some(k) => AnyKey::Known(k),
                    None => AnyKey::Unknown(v.to_owned()),
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The object split into raw fields; problems with keys are collected, not raised.
#[derive(Default)]
struct RawObject<'a> {
    fields: [Option<&'a RawValue>; 8],
    key_errors: Vec<FieldError>,
}

impl<'de: 'a, 'a> Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ObjVisitor<'a> {
            type Value = RawObject<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<RawObject<'a>, M::Error> {
                let mut obj = RawObject::default();
                while let Some(key) = map.next_key::<AnyKey>()? {
                    let value: &'de RawValue = map.next_value()?;
                    match key {
                        AnyKey::Known(k) => {
                            let slot = &mut obj.fields[k as usize];
                            if slot.is_some() {
                                obj.key_errors
                                    .push(FieldError::new(k.name(), "duplicate field"));
                            }
                            *slot = Some(value);
                        }
                        AnyKey::Unknown(name) => {
                            obj.key_errors.push(FieldError::new(name, "unknown field"));
                        }
                    }
                }
                Ok(obj)
            }
        }
        d.deserialize_map(ObjVisitor(std::marker::PhantomData))
    }
}

impl<'a> RawObject<'a> {
    /// The raw value, treating JSON `null` as absent.
    fn get(&self, key: Key) -> Option<&'a RawValue> {
        self.fields[key as usize].filter(|v| v.get() != "null")
    }
}

pub(crate) fn parse(
    json: &[u8],
    now_ms: i64,
    limits: &Limits,
    mode: Mode,
) -> Result<LogEvent, EventError> {
    let raw: RawObject<'_> = match serde_json::from_slice(json) {
        Ok(raw) => raw,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return Err(EventError::Invalid(vec![FieldError::new(
                "$",
                "must be a JSON object",
            )]))
        }
        Err(e) => return Err(malformed(&e)),
    };
    let mut errors = raw.key_errors.clone();
    if mode == Mode::Client && json.len() > limits.max_event_bytes {
        // Checked before anything is produced: Kafka could never take it.
        errors.push(FieldError::new(
            "$",
            format!(
                "the event is {} bytes of JSON; at most {} bytes are allowed",
                json.len(),
                limits.max_event_bytes
            ),
        ));
    }
    let mut check = Checker {
        raw: &raw,
        errors: &mut errors,
        mode,
    };

    let event_id = match mode {
        Mode::Client => check.event_id(false),
        Mode::Record => check.event_id(true),
    };
    let correlation_id = check.bounded_string(Key::CorrelationId, limits.max_id_chars);
    let severity = check.severity();
    let message = check.message(limits.max_message_bytes);
    let source = check.bounded_string(Key::Source, limits.max_id_chars);
    let received_at = match mode {
        Mode::Client => {
            if raw.fields[Key::ReceivedAt as usize].is_some() {
                check
                    .errors
                    .push(FieldError::new("receivedAt", "is set by the gateway"));
            }
            Some(now_ms)
        }
        Mode::Record => check.epoch_ms(Key::ReceivedAt),
    };
    let timestamp = check.timestamp(received_at, limits.max_future_skew_ms);
    let attributes = check.attributes(limits);

    if !errors.is_empty() {
        return Err(EventError::Invalid(errors));
    }
    // Every `None` above pushed an error, so all are present here.
    const CHECKED: &str = "a missing field always records an error";
    let mut event = LogEvent {
        event_id: Uuid::nil(),
        correlation_id: correlation_id.expect(CHECKED),
        severity: severity.expect(CHECKED),
        message: message.expect(CHECKED),
        source: source.expect(CHECKED),
        timestamp: timestamp.expect(CHECKED),
        attributes: attributes.expect(CHECKED),
        received_at: received_at.expect(CHECKED),
    };
    event.event_id = event_id
        .expect(CHECKED)
        .unwrap_or_else(|| event.content_id());
    Ok(event)
}

pub(crate) fn malformed(e: &serde_json::Error) -> EventError {
    let text = e.to_string();
    // serde_json appends " at line L column C"; the position is reported separately.
    let reason = match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    };
    EventError::Malformed {
        line: e.line(),
        column: e.column(),
        reason,
    }
}

struct Checker<'r, 'a> {
    raw: &'r RawObject<'a>,
    errors: &'r mut Vec<FieldError>,
    mode: Mode,
}

/// PostgreSQL's text and jsonb cannot hold U+0000: an event carrying one could be
/// acknowledged but never stored, so the edge refuses it.
const NUL: &str = "must not contain U+0000 (NUL): PostgreSQL cannot store it";

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`: the only UUID form an `eventId` may take.
const HYPHENATED_UUID_LEN: usize = 36;

impl Checker<'_, '_> {
    fn fail<T>(&mut self, key: Key, reason: impl Into<String>) -> Option<T> {
        self.errors.push(FieldError::new(key.name(), reason));
        None
    }

    fn required(&mut self, key: Key) -> Option<&RawValue> {
        match self.raw.get(key) {
            Some(v) => Some(v),
            None => self.fail(key, "is required"),
        }
    }

    fn string(&mut self, key: Key) -> Option<String> {
        let raw = self.required(key)?;
        match serde_json::from_str::<String>(raw.get()) {
            Ok(s) if self.mode == Mode::Client && s.contains('\0') => self.fail(key, NUL),
            Ok(s) => Some(s),
            Err(_) => self.fail(key, "must be a string"),
        }
    }

    fn bounded_string(&mut self, key: Key, max_chars: usize) -> Option<String> {
        let s = self.string(key)?;
        if s.is_empty() {
            return self.fail(key, "must not be empty");
        }
        // Cheap byte check first: a string of at most max_chars bytes has at most max_chars chars.
        if s.len() > max_chars && s.chars().count() > max_chars {
            return self.fail(key, format!("must be at most {max_chars} characters"));
        }
        Some(s)
    }

    fn message(&mut self, max_bytes: usize) -> Option<String> {
        let s = self.string(Key::Message)?;
        if s.is_empty() {
            return self.fail(Key::Message, "must not be empty");
        }
        if s.len() > max_bytes {
            return self.fail(
                Key::Message,
                format!("must be at most {max_bytes} bytes (UTF-8), got {}", s.len()),
            );
        }
        Some(s)
    }

    fn severity(&mut self) -> Option<Severity> {
        let s = self.string(Key::Severity)?;
        match Severity::parse(&s) {
            Some(level) => Some(level),
            None => self.fail(
                Key::Severity,
                "must be one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL",
            ),
        }
    }

    fn epoch_ms(&mut self, key: Key) -> Option<i64> {
        let client = self.mode == Mode::Client;
        let raw = self.required(key)?.get();
        if let Ok(ms) = serde_json::from_str::<i64>(raw) {
            return Some(ms);
        }
        // JSON has one number type, and JSON Schema's `integer` (the spec's) is any number
        // with no fractional part: a client's `1700000000000.0` or `1.7e12` is an integer
        // too. Out of i64's range saturates, so the bounds below name the real problem.
        // Records are written by the gateway as plain integers, and held to that.
        if client {
            if let Ok(ms) = serde_json::from_str::<f64>(raw) {
                if ms.fract() == 0.0 {
                    return Some(ms as i64);
                }
            }
        }
        self.fail(key, "must be an integer (epoch milliseconds)")
    }

    fn timestamp(&mut self, received_at: Option<i64>, max_skew_ms: i64) -> Option<i64> {
        let ms = self.epoch_ms(Key::Timestamp)?;
        if ms < MIN_TIMESTAMP_MS {
            return self.fail(
                Key::Timestamp,
                "must not be before 2000-01-01T00:00:00Z (946684800000)",
            );
        }
        // Without a trustworthy receivedAt there is no clock to compare against.
        let received_at = received_at?;
        if ms > received_at.saturating_add(max_skew_ms) {
            return self.fail(
                Key::Timestamp,
                format!(
                    "must not be more than {} h in the future",
                    max_skew_ms / 3_600_000
                ),
            );
        }
        Some(ms)
    }

    /// `Some(None)` = absent (a fresh id is assigned), `Some(Some(id))` = given.
    fn event_id(&mut self, required: bool) -> Option<Option<Uuid>> {
        let Some(raw) = self.raw.get(Key::EventId) else {
            return if required {
                self.fail(Key::EventId, "is required")
            } else {
                Some(None)
            };
        };
        let Ok(s) = serde_json::from_str::<&str>(raw.get()) else {
            return self.fail(Key::EventId, "must be a UUID string");
        };
        // Only the hyphenated form (any case), as the spec's `format: uuid` says: the braced,
        // URN and bare-hex forms `Uuid::try_parse` would also take are refused.
        if s.len() != HYPHENATED_UUID_LEN {
            return self.fail(Key::EventId, "must be a UUID string");
        }
        match Uuid::try_parse(s) {
            Ok(id) if id.is_nil() => self.fail(Key::EventId, "must not be the nil UUID"),
            Ok(id) => Some(Some(id)),
            Err(_) => self.fail(Key::EventId, "must be a UUID string"),
        }
    }

    /// `Some(None)` = absent; attribute problems are reported as `attributes.<key>`.
    fn attributes(&mut self, limits: &Limits) -> Option<Option<Attributes>> {
        let Some(raw) = self.raw.get(Key::Attributes) else {
            return Some(None);
        };
        let Ok(map) = serde_json::from_str::<Attributes>(raw.get()) else {
            return self.fail(Key::Attributes, "must be a flat JSON object");
        };
        let mut ok = true;
        if map.len() > limits.max_attributes {
            ok = false;
            self.errors.push(FieldError::new(
                "attributes",
                format!(
                    "must have at most {} keys, got {}",
                    limits.max_attributes,
                    map.len()
                ),
            ));
        }
        for (key, value) in &map {
            let field = || format!("attributes.{key}");
            if key.is_empty() {
                ok = false;
                self.errors
                    .push(FieldError::new("attributes", "keys must not be empty"));
            } else if key.chars().count() > limits.max_attribute_key_chars {
                ok = false;
                self.errors.push(FieldError::new(
                    "attributes",
                    format!(
                        "keys must be at most {} characters",
                        limits.max_attribute_key_chars
                    ),
                ));
            }
            use serde_json::Value;
            if self.mode == Mode::Client
                && (key.contains('\0') || matches!(value, Value::String(v) if v.contains('\0')))
            {
                ok = false;
                self.errors.push(FieldError::new(field(), NUL));
            }
            if matches!(value, Value::String(v) if v.len() > limits.max_attribute_value_bytes) {
                ok = false;
                self.errors.push(FieldError::new(
                    field(),
                    format!(
                        "must be at most {} bytes (UTF-8)",
                        limits.max_attribute_value_bytes
                    ),
                ));
            }
            if !matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                ok = false;
                self.errors.push(FieldError::new(
                    field(),
                    "must be a string, number or boolean",
                ));
            }
        }
        ok.then_some(Some(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_763_800_000_000; // 2025-11-22
    const DAY: i64 = 86_400_000;

    fn valid() -> serde_json::Value {
        json!({
            "correlationId": "req-1",
            "severity": "info",
            "message": "hello",
            "source": "svc",
            "timestamp": NOW - 1000
        })
    }

    fn with(field: &str, value: serde_json::Value) -> Vec<u8> {
        let mut v = valid();
        v[field] = value;
        serde_json::to_vec(&v).unwrap()
    }

    fn without(field: &str) -> Vec<u8> {
        let mut v = valid();
        v.as_object_mut().unwrap().remove(field);
        serde_json::to_vec(&v).unwrap()
    }

    fn parse_client(bytes: &[u8]) -> Result<LogEvent, EventError> {
        LogEvent::parse(bytes, NOW, &Limits::default())
    }

    fn field_errors(bytes: &[u8]) -> Vec<(String, String)> {
        match parse_client(bytes) {
            Err(EventError::Invalid(errs)) => {
                errs.into_iter().map(|e| (e.field, e.reason)).collect()
            }
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    fn assert_field_rejected(bytes: &[u8], field: &str) {
        let errs = field_errors(bytes);
        assert!(
            errs.iter().any(|(f, _)| f == field),
            "expected an error on {field}, got {errs:?}"
        );
    }

    #[test]
    fn valid_event_is_normalized() {
        let e = parse_client(&with("severity", json!("wArN"))).unwrap();
        assert_eq!(e.severity, Severity::Warn);
        assert_eq!(e.correlation_id, "req-1");
        assert_eq!(e.received_at, NOW);
        assert_eq!(e.event_id.get_version_num(), 5, "derived from the content");
        assert_eq!(e.attributes, None);
    }

    #[test]
    fn every_required_field_is_required() {
        for field in [
            "correlationId",
            "severity",
            "message",
            "source",
            "timestamp",
        ] {
            assert_eq!(
                field_errors(&without(field)),
                vec![(field.to_owned(), "is required".to_owned())]
            );
            assert_eq!(
                field_errors(&with(field, json!(null))),
                vec![(field.to_owned(), "is required".to_owned())]
            );
        }
    }

    #[test]
    fn string_fields_reject_other_types() {
        for field in ["correlationId", "severity", "message", "source"] {
            for bad in [json!(1), json!(true), json!(["a"]), json!({"a": 1})] {
                assert_eq!(
                    field_errors(&with(field, bad)),
                    vec![(field.to_owned(), "must be a string".to_owned())]
                );
            }
        }
    }

    #[test]
    fn id_fields_are_bounded_by_characters_on_both_sides() {
        for field in ["correlationId", "source"] {
            assert_field_rejected(&with(field, json!("")), field);
            assert!(parse_client(&with(field, json!("a"))).is_ok());
            assert!(parse_client(&with(field, json!("a".repeat(128)))).is_ok());
            assert_field_rejected(&with(field, json!("a".repeat(129))), field);
            // 128 multi-byte characters are 128 characters, not 384 bytes.
            assert!(parse_client(&with(field, json!("é".repeat(128)))).is_ok());
            assert_field_rejected(&with(field, json!("é".repeat(129))), field);
        }
    }

    #[test]
    fn message_is_bounded_in_bytes_on_both_sides() {
        assert_field_rejected(&with("message", json!("")), "message");
        assert!(parse_client(&with("message", json!("x"))).is_ok());
        assert!(parse_client(&with("message", json!("x".repeat(32 * 1024)))).is_ok());
        assert_field_rejected(
            &with("message", json!("x".repeat(32 * 1024 + 1))),
            "message",
        );
        // A 2-byte character pushing the byte count over the limit.
        let mut s = "x".repeat(32 * 1024 - 1);
        s.push('é');
        assert_field_rejected(&with("message", json!(s)), "message");
        // Escapes count as the bytes they decode to.
        let escaped = format!("{{\"correlationId\":\"c\",\"severity\":\"INFO\",\"message\":\"{}\",\"source\":\"s\",\"timestamp\":{}}}", "\\n".repeat(32 * 1024), NOW);
        assert!(parse_client(escaped.as_bytes()).is_ok());
    }

    #[test]
    fn severity_accepts_only_the_six_levels() {
        for ok in ["trace", "DEBUG", "Info", "warn", "ERROR", "fatal"] {
            assert!(parse_client(&with("severity", json!(ok))).is_ok(), "{ok}");
        }
        for bad in ["", "WARNING", "CRITICAL", "info "] {
            assert_field_rejected(&with("severity", json!(bad)), "severity");
        }
        let e = parse_client(&with("severity", json!("fatal"))).unwrap();
        assert_eq!(e.severity.as_str(), "FATAL");
    }

    #[test]
    fn timestamp_edges() {
        let cases = [
            (json!(MIN_TIMESTAMP_MS - 1), false),
            (json!(MIN_TIMESTAMP_MS), true),
            (json!(NOW + DAY), true),
            (json!(NOW + DAY + 1), false),
            (json!(0), false),
            (json!(-5), false),
            (json!(1.5e12 + 0.5), false),
            (json!("1763800000000"), false),
            (json!(u64::MAX), false),
        ];
        for (value, ok) in cases {
            let r = parse_client(&with("timestamp", value.clone()));
            assert_eq!(r.is_ok(), ok, "timestamp {value}: {r:?}");
        }
    }

    /// JSON Schema's `integer` (the spec's type for `timestamp`) is any number without a
    /// fractional part: `1.5e12` and `1763799999000.0` are integers; a fraction is not, and
    /// an integer out of i64's range is judged by the bounds, not refused as "not an integer".
    #[test]
    fn timestamp_integers_written_as_json_floats() {
        let raw = |ts: &str| {
            format!(
                r#"{{"correlationId":"c","severity":"INFO","message":"m","source":"s","timestamp":{ts}}}"#
            )
        };
        for ok in [
            "1.5e12",
            "1763799999000.0",
            "1763799999000",
            "17637999990e2",
        ] {
            assert!(parse_client(raw(ok).as_bytes()).is_ok(), "{ok}");
        }
        assert_eq!(
            parse_client(raw("1.5e12").as_bytes()).unwrap().timestamp,
            1_500_000_000_000
        );
        let errors = |ts: &str| match parse_client(raw(ts).as_bytes()) {
            Err(EventError::Invalid(errs)) => {
                errs.into_iter().map(|e| e.reason).collect::<Vec<_>>()
            }
            other => panic!("{ts}: {other:?}"),
        };
        assert_eq!(
            errors("1763799999000.5"),
            vec!["must be an integer (epoch milliseconds)"]
        );
        assert!(errors("304584929390235654029312000")[0].contains("in the future"));
        assert!(errors("-1e30")[0].contains("before 2000"));
        // Records hold the gateway's plain integers.
        let record = LogEvent::parse(raw("1.5e12").as_bytes(), NOW, &Limits::default())
            .unwrap()
            .to_record();
        let text = String::from_utf8(record).unwrap();
        assert!(text.contains(r#""timestamp":1500000000000,"#), "{text}");
        let float_record = text.replace(r#""timestamp":1500000000000,"#, r#""timestamp":1.5e12,"#);
        assert!(LogEvent::from_record(float_record.as_bytes(), &Limits::default()).is_err());
    }

    #[test]
    fn event_id_optional_but_must_be_a_uuid() {
        let id = "0190d5c4-8c4b-7d3a-9f3e-2b7c1a2b3c4d";
        let e = parse_client(&with("eventId", json!(id))).unwrap();
        assert_eq!(e.event_id.to_string(), id);
        let upper = parse_client(&with("eventId", json!(id.to_uppercase()))).unwrap();
        assert_eq!(upper.event_id.to_string(), id, "stored lower-case");
        let v4 = "c0a80101-0000-4000-8000-000000000001";
        assert!(parse_client(&with("eventId", json!(v4))).is_ok());
        for bad in [
            json!("not-a-uuid"),
            json!(""),
            json!(12),
            json!("00000000-0000-0000-0000-000000000000"),
            // Forms the spec's `format: uuid` refuses, though the uuid crate parses them.
            json!("0190d5c48c4b7d3a9f3e2b7c1a2b3c4d"),
            json!("{0190d5c4-8c4b-7d3a-9f3e-2b7c1a2b3c4d}"),
            json!("urn:uuid:0190d5c4-8c4b-7d3a-9f3e-2b7c1a2b3c4d"),
        ] {
            assert_field_rejected(&with("eventId", bad), "eventId");
        }
        // Absent or null: the id is derived from the content, the same for both.
        let a = parse_client(&without("eventId")).unwrap();
        let b = parse_client(&with("eventId", json!(null))).unwrap();
        assert_eq!(a.event_id, b.event_id);
        assert_eq!(a.event_id, a.content_id());
    }

    /// Hole 2 of the reliability issue: a client retrying an event without an eventId (after
    /// a timeout or a 503) must get the same id, so the event is stored once.
    #[test]
    fn without_an_event_id_a_retry_gets_the_same_id_and_other_content_another() {
        let body = |attributes: serde_json::Value, message: &str| {
            let mut v = valid();
            v["attributes"] = attributes;
            v["message"] = json!(message);
            serde_json::to_vec(&v).unwrap()
        };
        let first = parse_client(&body(json!({"a": 1, "b": "x"}), "m")).unwrap();
        let retry = parse(
            &body(json!({"a": 1, "b": "x"}), "m"),
            NOW + 5_000,
            &Limits::default(),
            Mode::Client,
        )
        .unwrap();
        assert_eq!(
            first.event_id, retry.event_id,
            "receipt time is not part of it"
        );
        let reordered = parse_client(&body(json!({"b": "x", "a": 1}), "m")).unwrap();
        assert_eq!(
            first.event_id, reordered.event_id,
            "attribute order is not part of it"
        );
        for other in [
            body(json!({"a": 2, "b": "x"}), "m"),
            body(json!({"a": 1, "b": "x"}), "m2"),
            with("severity", json!("ERROR")),
            with("timestamp", json!(NOW - 1)),
        ] {
            assert_ne!(parse_client(&other).unwrap().event_id, first.event_id);
        }
        let given = "0192b1a4-7e6a-7c3e-9a0f-2d9c1e4b5a6f";
        let chosen = parse_client(&with("eventId", json!(given))).unwrap();
        assert_eq!(chosen.event_id.to_string(), given, "a client's own id wins");
    }

    /// Hole 3 of the reliability issue: an event too large for the broker was answered
    /// "retry later" forever. Attribute values and whole events are bounded at the edge.
    #[test]
    fn attribute_values_and_whole_events_are_bounded() {
        let limits = Limits::default();
        let at = "x".repeat(limits.max_attribute_value_bytes);
        assert!(parse_client(&with("attributes", json!({ "k": at }))).is_ok());
        let over = "x".repeat(limits.max_attribute_value_bytes + 1);
        assert_field_rejected(&with("attributes", json!({ "k": over })), "attributes.k");
        let mut attributes = serde_json::Map::new();
        for i in 0..10 {
            attributes.insert(format!("k{i}"), json!("y".repeat(30_000)));
        }
        let big = with("attributes", json!(attributes));
        assert!(big.len() > limits.max_event_bytes);
        assert_field_rejected(&big, "$");
    }

    /// Hole 1 of the reliability issue: PostgreSQL cannot store U+0000, so an event holding
    /// one was acknowledged and then dead-lettered. The edge refuses it, naming the field.
    #[test]
    fn nul_characters_are_refused_at_the_edge_naming_the_field() {
        for field in ["message", "source", "correlationId"] {
            assert_field_rejected(&with(field, json!("a\u{0}b")), field);
        }
        assert_field_rejected(&with("attributes", json!({"k": "a\u{0}b"})), "attributes.k");
        assert_field_rejected(
            &with("attributes", json!({"k\u{0}": 1})),
            "attributes.k\u{0}",
        );
        let errors = field_errors(&with("message", json!("a\u{0}b")));
        assert!(errors[0].1.contains("U+0000"), "{errors:?}");
        // Records (written by the gateway) are not re-judged: a row PostgreSQL refuses
        // still reaches the consumer's dead-letter path.
        let mut record = LogEvent::parse(
            &serde_json::to_vec(&valid()).unwrap(),
            NOW,
            &Limits::default(),
        )
        .unwrap();
        record.message = "a\u{0}b".into();
        assert!(LogEvent::from_record(&record.to_record(), &Limits::default()).is_ok());
    }

    #[test]
    fn attributes_edges() {
        let mut map = serde_json::Map::new();
        for i in 0..64 {
            map.insert(format!("k{i}"), json!(i));
        }
        assert!(parse_client(&with("attributes", json!(map.clone()))).is_ok());
        map.insert("k64".into(), json!(1));
        assert_field_rejected(&with("attributes", json!(map)), "attributes");

        let ok = json!({"s": "x", "n": 1.5, "i": -3, "b": false});
        let e = parse_client(&with("attributes", ok)).unwrap();
        assert_eq!(e.attributes.unwrap().len(), 4);

        assert_field_rejected(
            &with("attributes", json!({"nested": {"a": 1}})),
            "attributes.nested",
        );
        assert_field_rejected(&with("attributes", json!({"list": [1]})), "attributes.list");
        assert_field_rejected(&with("attributes", json!({"nil": null})), "attributes.nil");
        assert_field_rejected(&with("attributes", json!({"": 1})), "attributes");
        assert!(parse_client(&with("attributes", json!({"k".repeat(128): 1}))).is_ok());
        assert_field_rejected(
            &with("attributes", json!({"k".repeat(129): 1})),
            "attributes",
        );
        assert_field_rejected(&with("attributes", json!([1, 2])), "attributes");
        assert_field_rejected(&with("attributes", json!("a=b")), "attributes");
        assert!(parse_client(&with("attributes", json!({}))).is_ok());
    }

    #[test]
    fn unknown_duplicate_and_gateway_fields_are_rejected() {
        assert_eq!(
            field_errors(&with("sevrity", json!("INFO"))),
            vec![("sevrity".to_owned(), "unknown field".to_owned())]
        );
        let dup = br#"{"correlationId":"a","correlationId":"b","severity":"INFO","message":"m","source":"s","timestamp":1763800000000}"#;
        assert_field_rejected(dup, "correlationId");
        assert_field_rejected(&with("receivedAt", json!(NOW)), "receivedAt");
    }

    #[test]
    fn every_bad_field_is_listed() {
        let body = json!({"correlationId": "", "severity": "LOUD", "message": 5, "timestamp": 1, "extra": 1});
        let fields: Vec<String> = field_errors(&serde_json::to_vec(&body).unwrap())
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            vec![
                "extra",
                "correlationId",
                "severity",
                "message",
                "source",
                "timestamp"
            ]
        );
    }

    #[test]
    fn malformed_json_reports_position() {
        match parse_client(b"{\n  \"message\": \"x\",\n  oops\n}") {
            Err(EventError::Malformed { line, column, .. }) => {
                assert_eq!(line, 3);
                assert!(column > 0);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_client(b""),
            Err(EventError::Malformed { .. })
        ));
        assert!(matches!(
            parse_client(b"{\"a\":"),
            Err(EventError::Malformed { .. })
        ));
        assert!(matches!(
            parse_client(&[0xff, 0xfe]),
            Err(EventError::Malformed { .. })
        ));
    }

    #[test]
    fn non_objects_are_invalid_not_malformed() {
        for body in [&b"[]"[..], b"42", b"\"s\"", b"null"] {
            assert_eq!(
                field_errors(body),
                vec![("$".to_owned(), "must be a JSON object".to_owned())]
            );
        }
    }

    #[test]
    fn record_round_trips_byte_for_byte() {
        let body = with("attributes", json!({"zeta": 1, "alpha": "a", "flag": true}));
        let e = parse_client(&body).unwrap();
        let record = e.to_record();
        let back = LogEvent::from_record(&record, &Limits::default()).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.to_record(), record);
        let text = String::from_utf8(record).unwrap();
        assert!(text.starts_with(&format!(
            "{{\"eventId\":\"{}\",\"correlationId\":\"req-1\",\"severity\":\"INFO\"",
            e.event_id
        )));
        assert!(
            text.contains(r#""attributes":{"alpha":"a","flag":true,"zeta":1}"#),
            "{text}"
        );
        assert!(text.ends_with(&format!(",\"receivedAt\":{NOW}}}")));
    }

    #[test]
    fn record_mode_requires_gateway_fields() {
        let e = parse_client(&valid().to_string().into_bytes()).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&e.to_record()).unwrap();
        v.as_object_mut().unwrap().remove("eventId");
        v.as_object_mut().unwrap().remove("receivedAt");
        match LogEvent::from_record(&serde_json::to_vec(&v).unwrap(), &Limits::default()) {
            Err(EventError::Invalid(errs)) => {
                let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
                assert_eq!(fields, vec!["eventId", "receivedAt"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(LogEvent::from_record(b"not json", &Limits::default()).is_err());
    }

    #[test]
    fn the_sniffed_severity_is_the_parsed_one_or_none() {
        for level in ["trace", "Debug", "INFO", "wArN", "error", "FATAL"] {
            let body = with("severity", json!(level));
            let parsed = parse_client(&body).unwrap().severity;
            assert_eq!(LogEvent::sniff_severity(&body), Some(parsed), "{level}");
        }
        // Escaped, among unknown fields, nested objects with their own `severity`.
        let body =
            br#"{"attributes":{"severity":"FATAL"},"severity":"\u0045RROR","x":[1,{"a":2}]}"#;
        assert_eq!(LogEvent::sniff_severity(body), Some(Severity::Error));
        for bad in [
            with("severity", json!("LOUD")),
            with("severity", json!(3)),
            without("severity"),
            br#"{"severity":"INFO","severity":"ERROR"}"#.to_vec(),
            br#"[{"severity":"INFO"}]"#.to_vec(),
            b"not json".to_vec(),
            br#"{"severity":"INFO"} trailing"#.to_vec(),
        ] {
            assert_eq!(
                LogEvent::sniff_severity(&bad),
                None,
                "{}",
                String::from_utf8_lossy(&bad)
            );
        }
    }
}
