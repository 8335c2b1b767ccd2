//! Baselines for `bench/run.sh`: programs that do the least work the real services do, so
//! the benchmark can report ratios instead of absolute numbers.
//!
//! * `bare-axum`: POST /api/logs → serde into [`WireEvent`] → 202.
//! * `bare-producer`: a `BaseProducer` loop with the gateway's producer settings.
//! * `bare-consumer`: reads a backlog and stores nothing.
//! * `loadgen`: the one HTTP load generator (bench, integration-tests/test-backpressure.sh).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The client event with the same fields as the gateway's wire format (no validation).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WireEvent {
    pub correlation_id: String,
    pub severity: String,
    pub message: String,
    pub source: String,
    pub timestamp: i64,
    #[serde(default)]
    pub event_id: Option<uuid::Uuid>,
    #[serde(default)]
    pub attributes: Option<BTreeMap<String, serde_json::Value>>,
}

/// The normalized Kafka record, same shape as `log_event::LogEvent::to_record`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record<'a> {
    pub event_id: uuid::fmt::Hyphenated,
    pub correlation_id: &'a str,
    pub severity: &'a str,
    pub message: &'a str,
    pub source: &'a str,
    pub timestamp: i64,
    pub attributes: BTreeMap<&'a str, serde_json::Value>,
    pub received_at: i64,
}

/// One generated record (key, value) shaped like the gateway's records for the bench body.
pub fn generated_record(i: u64, now_ms: i64) -> (String, Vec<u8>) {
    let correlation_id = format!("bench-{}", i % 1024);
    let mut attributes = BTreeMap::new();
    attributes.insert("userId", serde_json::Value::from(i % 10_000));
    attributes.insert("region", serde_json::Value::from("eu-west-1"));
    let record = Record {
        event_id: uuid::Uuid::now_v7().hyphenated(),
        correlation_id: &correlation_id,
        severity: "INFO",
        message: "user logged in from a benchmark client with a moderately long message",
        source: "bench-service",
        timestamp: now_ms,
        attributes,
        received_at: now_ms,
    };
    let value = serde_json::to_vec(&record).expect("record serialization is infallible");
    (correlation_id, value)
}

/// A request body of `batch` fresh events (one JSON object when `batch` is 1, else an
/// array), each with its own eventId and correlationId, and those ids: `loadgen`'s body when
/// it is given no `--body`, so that every accepted event can be found in the database.
pub fn fresh_events(batch: usize, severity: &str, now_ms: i64) -> (Bytes, Vec<uuid::Uuid>) {
    let ids: Vec<uuid::Uuid> = (0..batch.max(1)).map(|_| uuid::Uuid::new_v4()).collect();
    let events: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| {
            serde_json::json!({
                "eventId": id, "correlationId": format!("loadgen-{}", id.simple()),
                "severity": severity, "message": "scenario event", "source": "loadgen",
                "timestamp": now_ms,
            })
        })
        .collect();
    let body = match events.as_slice() {
        [one] => serde_json::to_vec(one),
        many => serde_json::to_vec(many),
    };
    (body.expect("JSON values serialize").into(), ids)
}

/// Latency summary of samples in µs (sorted in place): mean and nearest-rank p50/p90/p99/max,
/// in ms; `null` when there are none. Shared by `loadgen` and `bare-producer --in-flight`.
pub fn percentiles(v: &mut [u32]) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::Value::Null;
    }
    v.sort_unstable();
    let at =
        |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1000.0;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64 / 1000.0;
    serde_json::json!({
        "p50_ms": at(0.50), "p90_ms": at(0.90), "p99_ms": at(0.99), "max_ms": at(1.0),
        "mean_ms": mean, "n": v.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_in_ms() {
        let mut v: Vec<u32> = (1..=100).rev().map(|i| i * 1000).collect();
        let p = percentiles(&mut v);
        assert_eq!(p["p50_ms"], 50.0);
        assert_eq!(p["p99_ms"], 99.0);
        assert_eq!(p["max_ms"], 100.0);
        assert_eq!(p["mean_ms"], 50.5);
        assert!(percentiles(&mut []).is_null());
    }

    #[test]
    fn wire_event_parses_the_bench_body() {
        let body = r#"{"correlationId":"c","severity":"info","message":"m","source":"s",
            "timestamp":1763800000000,"attributes":{"userId":7}}"#;
        let ev: WireEvent = serde_json::from_str(body).unwrap();
        assert_eq!(ev.correlation_id, "c");
        assert!(serde_json::from_str::<WireEvent>(r#"{"nope":1}"#).is_err());
    }

    #[test]
    fn fresh_events_are_an_object_or_an_array_with_their_ids() {
        let (one, ids) = fresh_events(1, "ERROR", 1_763_800_000_000);
        let ev: WireEvent = serde_json::from_slice(&one).unwrap();
        assert_eq!((ev.event_id, ev.severity.as_str()), (Some(ids[0]), "ERROR"));
        let (many, ids) = fresh_events(3, "INFO", 1_763_800_000_000);
        let evs: Vec<WireEvent> = serde_json::from_slice(&many).unwrap();
        let got: Vec<_> = evs.iter().map(|e| e.event_id.unwrap()).collect();
        assert_eq!(got, ids);
        assert_ne!(ids[0], ids[1]);
    }

    #[test]
    fn generated_record_is_json_with_the_record_fields() {
        let (key, value) = generated_record(3, 1_763_800_000_000);
        assert_eq!(key, "bench-3");
        let v: serde_json::Value = serde_json::from_slice(&value).unwrap();
        for k in [
            "eventId",
            "correlationId",
            "severity",
            "message",
            "source",
            "timestamp",
            "receivedAt",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
    }
}
