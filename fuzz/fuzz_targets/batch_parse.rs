//! Batch framing (JSON array or NDJSON, chosen by the first byte along with the count limit):
//! `parse_batch` never panics, is all-or-nothing, respects the count limit and reports every
//! bad item by an index inside the batch.
#![no_main]

use libfuzzer_sys::fuzz_target;
use log_event::{parse_batch, BatchError, BatchFormat, Limits, LogEvent};

const NOW: i64 = 1_763_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let format = if control & 1 == 0 {
        BatchFormat::JsonArray
    } else {
        BatchFormat::Ndjson
    };
    let max_events = 1 + usize::from(control >> 1); // 1..=128
    let limits = Limits::default();
    match parse_batch(body, format, max_events, NOW, &limits) {
        Ok(events) => {
            assert!(!events.is_empty() && events.len() <= max_events);
            for event in &events {
                let back = LogEvent::from_record(&event.to_record(), &limits)
                    .expect("an accepted event's record parses");
                assert_eq!(&back, event);
            }
        }
        Err(BatchError::TooMany { count, max }) => assert!(max == max_events && count > max),
        Err(BatchError::Invalid(items)) => {
            assert!(!items.is_empty());
            assert!(
                items.windows(2).all(|w| w[0].index <= w[1].index),
                "listed in order"
            );
            assert!(items.iter().all(|item| item.index < max_events));
        }
        Err(BatchError::Empty | BatchError::NotAnArray | BatchError::Malformed { .. }) => {}
    }
});
