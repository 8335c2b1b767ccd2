//! The log event: its wire format, validation at the edge, and the normalized Kafka record.
//!
//! Client JSON is validated exactly once, here, into a [`LogEvent`]. The gateway serializes
//! that into the Kafka record ([`LogEvent::to_record`]); the consumer parses the record back
//! with [`LogEvent::from_record`], which applies the same rules plus the fields the gateway
//! adds, so a foreign producer writing junk to the topic is caught as a poison message.
//! Request bodies sent with `Content-Encoding: gzip` are inflated here too ([`gunzip`], capped),
//! so everything that turns client bytes into events is pure code, fuzzed in `fuzz/`.

mod batch;
mod gzip;
mod parse;
mod severity;

use serde::Serialize;
use uuid::Uuid;

pub use batch::{parse_batch, BatchError, BatchFormat, ItemError};
pub use gzip::{gunzip, GzipError};
pub use severity::Severity;

/// Attribute map of an event: flat, string keys, string/number/bool values. Keys are kept
/// sorted so the normalized record is canonical.
pub type Attributes = serde_json::Map<String, serde_json::Value>;

/// 2000-01-01T00:00:00Z in epoch milliseconds: the earliest accepted `timestamp`.
pub const MIN_TIMESTAMP_MS: i64 = 946_684_800_000;

/// Limits applied while validating. Defaults are the documented wire-format limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Maximum `message` length in UTF-8 bytes (default 32 KiB).
    pub max_message_bytes: usize,
    /// Maximum `correlationId` / `source` length in characters (default 128).
    pub max_id_chars: usize,
    /// Maximum number of attributes (default 64).
    pub max_attributes: usize,
    /// Maximum attribute key length in characters (default 128).
    pub max_attribute_key_chars: usize,
    /// Maximum length of a string attribute value in UTF-8 bytes (default 32 KiB).
    pub max_attribute_value_bytes: usize,
    /// Maximum size of one event's JSON in bytes, in a batch as alone (default 256 KiB, the
    /// single-event body limit): far below the broker's 1 MB record limit, so an event that
    /// passes validation can always be produced.
    pub max_event_bytes: usize,
    /// How far in the future a `timestamp` may be, in milliseconds (default 24 h).
    pub max_future_skew_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 32 * 1024,
            max_id_chars: 128,
            max_attributes: 64,
            max_attribute_key_chars: 128,
            max_attribute_value_bytes: 32 * 1024,
            max_event_bytes: 256 * 1024,
            max_future_skew_ms: 24 * 60 * 60 * 1000,
        }
    }
}

/// One validated, normalized log event.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEvent {
    /// Idempotency key: client-chosen, or derived from the content ([`LogEvent::content_id`]).
    pub event_id: Uuid,
    pub correlation_id: String,
    pub severity: Severity,
    pub message: String,
    pub source: String,
    /// Event time, epoch milliseconds.
    pub timestamp: i64,
    pub attributes: Option<Attributes>,
    /// When the gateway received the event, epoch milliseconds.
    pub received_at: i64,
}

/// The namespace of content-derived event ids ([`LogEvent::content_id`]); never change it:
/// ids derived before and after must agree for retries across a deploy to be stored once.
const CONTENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c6f_6769_6e67_6573_742d_6576_656e_7431);

/// Why one field is invalid. `field` is the JSON name (`attributes.<key>` for attributes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Why a single event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The bytes are not JSON.
    #[error("malformed JSON at line {line}, column {column}: {reason}")]
    Malformed {
        line: usize,
        column: usize,
        reason: String,
    },
    /// Valid JSON, but one or more fields break the rules (every one is listed).
    #[error("invalid event:{}", list(.0))]
    Invalid(Vec<FieldError>),
}

/// " field: reason;" for each error, as the Invalid message lists them.
fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!(" {}: {};", e.field, e.reason))
        .collect()
}

/// Which rules apply: client input (no `receivedAt`, optional `eventId`) or a Kafka record
/// written by the gateway (both required).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Client,
    Record,
}

impl LogEvent {
    /// The event's idempotency key when the client sends none: a name-based UUID (v5) over
    /// a canonical form of its content (source, correlationId, timestamp, severity, message,
    /// attributes with sorted keys), so a client's retry of the same event is stored once
    /// without its cooperation. Two byte-identical events in the same millisecond are one
    /// event (Loki makes the same choice).
    pub fn content_id(&self) -> Uuid {
        // Sorted explicitly: serde_json keeps insertion order when a dependency enables
        // its preserve_order feature, and the client's key order must not matter.
        let attributes: Option<std::collections::BTreeMap<&String, &serde_json::Value>> =
            self.attributes.as_ref().map(|a| a.iter().collect());
        // A JSON array serialized straight from references: no copy of the fields (this runs
        // for every event without an id, on the request path).
        let canonical = serde_json::to_vec(&(
            &self.source,
            &self.correlation_id,
            self.timestamp,
            self.severity.as_str(),
            &self.message,
            attributes,
        ))
        .expect("strings, numbers and JSON values always serialize");
        Uuid::new_v5(&CONTENT_ID_NAMESPACE, &canonical)
    }

    /// Validates one client event. `now_ms` is the gateway's clock (epoch ms): it bounds the
    /// timestamp and becomes `receivedAt`. A missing `eventId` is derived from the content.
    pub fn parse(json: &[u8], now_ms: i64, limits: &Limits) -> Result<LogEvent, EventError> {
        parse::parse(json, now_ms, limits, Mode::Client)
    }

    /// The severity of a single-event body, without checking the rest: None unless the body
    /// is one JSON object with one `severity` naming a level. Wherever [`LogEvent::parse`]
    /// accepts a body, both agree. Lets the gateway refuse a low severity under load before
    /// paying for the full parse.
    pub fn sniff_severity(json: &[u8]) -> Option<Severity> {
        #[derive(serde::Deserialize)]
        struct Sniff<'a> {
            #[serde(borrow)]
            severity: std::borrow::Cow<'a, str>,
        }
        let sniff: Sniff = serde_json::from_slice(json).ok()?;
        Severity::parse(&sniff.severity)
    }

    /// Parses a record from the topic. The timestamp's future bound is checked against the
    /// record's own `receivedAt`, so replaying an old topic later still validates.
    pub fn from_record(json: &[u8], limits: &Limits) -> Result<LogEvent, EventError> {
        parse::parse(json, 0, limits, Mode::Record)
    }

    /// The normalized Kafka record value (compact JSON, fixed field order, upper-case
    /// severity, sorted attributes).
    pub fn to_record(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(192 + self.message.len());
        self.write_record(&mut out);
        out
    }

    /// Appends the normalized record to `out` (lets callers reuse one buffer).
    pub fn write_record(&self, out: &mut Vec<u8>) {
        let record = Record {
            event_id: self.event_id.hyphenated(),
            correlation_id: &self.correlation_id,
            severity: self.severity.as_str(),
            message: &self.message,
            source: &self.source,
            timestamp: self.timestamp,
            attributes: self.attributes.as_ref(),
            received_at: self.received_at,
        };
        // Serializing plain strings/integers into a Vec cannot fail.
        serde_json::to_writer(out, &record).expect("record serialization is infallible");
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    event_id: uuid::fmt::Hyphenated,
    correlation_id: &'a str,
    severity: &'static str,
    message: &'a str,
    source: &'a str,
    timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    attributes: Option<&'a Attributes>,
    received_at: i64,
}
