//! Capped gzip decoding of request bodies: `gunzip` never panics nor allocates past its cap,
//! and the cap is exact (the same body fits a cap of exactly its size and not one byte less).
//! What it decodes then goes through batch framing, as in the gateway.
#![no_main]

use libfuzzer_sys::fuzz_target;
use log_event::{gunzip, parse_batch, BatchFormat, GzipError, Limits};

const NOW: i64 = 1_763_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&control, compressed)) = data.split_first() else {
        return;
    };
    let limit = usize::from(control) * 256; // 0..=65280 bytes
    match gunzip(compressed, limit) {
        Ok(out) => {
            assert!(out.len() <= limit);
            assert_eq!(gunzip(compressed, out.len()).as_ref(), Ok(&out));
            if !out.is_empty() {
                assert_eq!(
                    gunzip(compressed, out.len() - 1),
                    Err(GzipError::TooLarge {
                        limit: out.len() - 1
                    })
                );
            }
            let format = if control & 1 == 0 {
                BatchFormat::JsonArray
            } else {
                BatchFormat::Ndjson
            };
            let _ = parse_batch(&out, format, 1000, NOW, &Limits::default());
        }
        Err(GzipError::TooLarge { limit: reported }) => assert_eq!(reported, limit),
        Err(GzipError::Invalid(_)) => {}
    }
});
