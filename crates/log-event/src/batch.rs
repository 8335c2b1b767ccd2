//! Batch parsing (JSON array or NDJSON), all-or-nothing: either every item is valid or
//! every bad item is reported by index.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::parse::malformed;
use crate::{EventError, Limits, LogEvent};

/// How the batch body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchFormat {
    /// `[{...}, {...}]`
    JsonArray,
    /// One JSON object per line; blank lines are ignored.
    Ndjson,
}

/// One problem with one item of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemError {
    /// Zero-based position of the item in the batch.
    pub index: usize,
    /// The field at fault, or `$` for the whole item.
    pub field: String,
    pub reason: String,
}

/// Why a batch was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// The body is not a JSON array (JSON framing only).
    Malformed {
        line: usize,
        column: usize,
        reason: String,
    },
    /// The body is valid JSON but not an array.
    NotAnArray,
    /// No events at all.
    Empty,
    /// More events than allowed.
    TooMany { count: usize, max: usize },
    /// Some items are invalid: every one is listed.
    Invalid(Vec<ItemError>),
}

/// Parses and validates a batch of at most `max_events` events.
pub fn parse_batch(
    body: &[u8],
    format: BatchFormat,
    max_events: usize,
    now_ms: i64,
    limits: &Limits,
) -> Result<Vec<LogEvent>, BatchError> {
    let items: Vec<&[u8]> = match format {
        BatchFormat::JsonArray => {
            let raw: Vec<&RawValue> = match serde_json::from_slice(body) {
                Ok(raw) => raw,
                Err(e) if e.classify() == serde_json::error::Category::Data => {
                    return Err(BatchError::NotAnArray)
                }
                Err(e) => {
                    let EventError::Malformed {
                        line,
                        column,
                        reason,
                    } = malformed(&e)
                    else {
                        unreachable!("malformed() builds Malformed")
                    };
                    return Err(BatchError::Malformed {
                        line,
                        column,
                        reason,
                    });
                }
            };
            raw.into_iter().map(|r| r.get().as_bytes()).collect()
        }
        BatchFormat::Ndjson => body
            .split(|b| *b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .collect(),
    };
    if items.is_empty() {
        return Err(BatchError::Empty);
    }
    if items.len() > max_events {
        return Err(BatchError::TooMany {
            count: items.len(),
            max: max_events,
        });
    }

    let mut events = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match LogEvent::parse(item, now_ms, limits) {
            Ok(event) => events.push(event),
            Err(EventError::Invalid(fields)) => {
                errors.extend(fields.into_iter().map(|f| ItemError {
                    index,
                    field: f.field,
                    reason: f.reason,
                }));
            }
            Err(EventError::Malformed { column, reason, .. }) => errors.push(ItemError {
                index,
                field: "$".to_owned(),
                reason: format!("malformed JSON at column {column}: {reason}"),
            }),
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(BatchError::Invalid(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_763_800_000_000;

    fn item(severity: &str) -> String {
        format!(
            r#"{{"correlationId":"c","severity":"{severity}","message":"m","source":"s","timestamp":{NOW}}}"#
        )
    }

    fn parse(body: &str, format: BatchFormat, max: usize) -> Result<Vec<LogEvent>, BatchError> {
        parse_batch(body.as_bytes(), format, max, NOW, &Limits::default())
    }

    #[test]
    fn json_array_of_valid_items() {
        let body = format!("[{},{}]", item("info"), item("error"));
        let events = parse(&body, BatchFormat::JsonArray, 10).unwrap();
        assert_eq!(events.len(), 2);
        assert_ne!(events[0].event_id, events[1].event_id);
    }

    #[test]
    fn ndjson_skips_blank_lines_and_crlf() {
        let body = format!("{}\r\n\n  \n{}\n", item("info"), item("warn"));
        assert_eq!(parse(&body, BatchFormat::Ndjson, 10).unwrap().len(), 2);
    }

    #[test]
    fn count_limit_both_sides() {
        let three = format!("[{},{},{}]", item("info"), item("info"), item("info"));
        assert_eq!(parse(&three, BatchFormat::JsonArray, 3).unwrap().len(), 3);
        assert_eq!(
            parse(&three, BatchFormat::JsonArray, 2),
            Err(BatchError::TooMany { count: 3, max: 2 })
        );
    }

    #[test]
    fn empty_batches_are_refused() {
        assert_eq!(
            parse("[]", BatchFormat::JsonArray, 10),
            Err(BatchError::Empty)
        );
        assert_eq!(
            parse("\n \n", BatchFormat::Ndjson, 10),
            Err(BatchError::Empty)
        );
    }

    #[test]
    fn every_bad_item_is_listed_by_index() {
        let body = format!("[{},{},{}]", item("loud"), item("info"), item("quiet"));
        match parse(&body, BatchFormat::JsonArray, 10) {
            Err(BatchError::Invalid(errs)) => {
                let idx: Vec<_> = errs.iter().map(|e| (e.index, e.field.as_str())).collect();
                assert_eq!(idx, vec![(0, "severity"), (2, "severity")]);
            }
            other => panic!("{other:?}"),
        }
        let body = format!("{}\nnot json\n{}", item("info"), item("nope"));
        match parse(&body, BatchFormat::Ndjson, 10) {
            Err(BatchError::Invalid(errs)) => {
                let idx: Vec<_> = errs.iter().map(|e| (e.index, e.field.as_str())).collect();
                assert_eq!(idx, vec![(1, "$"), (2, "severity")]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn framing_errors() {
        assert!(matches!(
            parse("[{", BatchFormat::JsonArray, 10),
            Err(BatchError::Malformed { line: 1, .. })
        ));
        assert_eq!(
            parse(&item("info"), BatchFormat::JsonArray, 10),
            Err(BatchError::NotAnArray)
        );
    }
}
