//! One client event: `LogEvent::parse` never panics, and whatever it accepts is within the
//! documented bounds and survives the trip through the Kafka record unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use log_event::{EventError, Limits, LogEvent, MIN_TIMESTAMP_MS};

/// A fixed clock, so a crash reproduces.
const NOW: i64 = 1_763_800_000_000;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    match LogEvent::parse(data, NOW, &limits) {
        Ok(event) => {
            assert!(event.timestamp >= MIN_TIMESTAMP_MS);
            assert!(event.timestamp <= NOW + limits.max_future_skew_ms);
            assert!(!event.event_id.is_nil());
            assert!(!event.message.is_empty() && event.message.len() <= limits.max_message_bytes);
            assert_eq!(event.received_at, NOW);
            let record = event.to_record();
            let back =
                LogEvent::from_record(&record, &limits).expect("an accepted event's record parses");
            assert_eq!(back, event);
            assert_eq!(back.to_record(), record, "the record is canonical");
        }
        Err(EventError::Invalid(fields)) => assert!(!fields.is_empty()),
        Err(EventError::Malformed { .. }) => {}
    }
});
