//! The read API's parameters, validated once from the query string into a [`ReadQuery`], and
//! the opaque keyset cursor. Pure: the clock comes in as `now_ms`.
//!
//! Rules (README "Reading the logs"): `from` (inclusive) and `to` (exclusive) are epoch
//! milliseconds; without `correlationId`, `from` is required, `to` defaults to now and the
//! range may be at most `READ_MAX_RANGE_HOURS` wide, so every such query touches one or two
//! daily partitions. With `correlationId` both are optional: its index finds one request's
//! few rows in every partition. Unknown or repeated parameters are refused, so a typo cannot
//! silently widen a query.

use log_event::Severity;
use uuid::Uuid;

/// Rows in a page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most rows in a page.
pub const MAX_LIMIT: u32 = 1000;
/// Latest `from` / `to` accepted: 9999-12-31T23:59:59.999Z.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;
/// The cursor's format version (its first byte).
const CURSOR_VERSION: u8 = 1;
/// Hex characters of a cursor: version, microseconds (8 bytes), event id (16 bytes).
pub const CURSOR_CHARS: usize = 2 * (1 + 8 + 16);
/// A cursor's time is in 0..2^56 µs (1970 to the year 4253): its first time byte is 0, so
/// every string of the documented pattern is a time PostgreSQL can hold.
pub const CURSOR_MAX_TIME_US: i64 = (1 << 56) - 1;
/// The documented form of a cursor (OpenAPI `pattern`).
pub const CURSOR_PATTERN: &str = "^0100[0-9a-f]{46}$";

/// The parameters the API knows.
pub const PARAMS: &[&str] = &[
    "source",
    "severity",
    "correlationId",
    "from",
    "to",
    "limit",
    "cursor",
];

/// The bounds a gateway applies to reads.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Widest `to − from` without `correlationId`, in milliseconds.
    pub max_range_ms: i64,
    /// Longest `source` / `correlationId`, in characters (the ingest limit).
    pub max_id_chars: usize,
}

/// Where the previous page ended: the last row's (event_time, event_id). The next page holds
/// the rows strictly after it in the order newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// event_time in microseconds since the epoch (PostgreSQL's own precision).
    pub time_us: i64,
    pub event_id: Uuid,
}

impl Cursor {
    /// Opaque to clients: lower-case hex of (version, time, id).
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(CURSOR_CHARS / 2);
        bytes.push(CURSOR_VERSION);
        bytes.extend_from_slice(&self.time_us.to_be_bytes());
        bytes.extend_from_slice(self.event_id.as_bytes());
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        if s.len() != CURSOR_CHARS || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let bytes: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16))
            .collect::<Result<_, _>>()
            .ok()?;
        if bytes[0] != CURSOR_VERSION {
            return None;
        }
        let time_us = i64::from_be_bytes(bytes[1..9].try_into().ok()?);
        if !(0..=CURSOR_MAX_TIME_US).contains(&time_us) {
            return None;
        }
        let event_id = Uuid::from_slice(&bytes[9..25]).ok()?;
        Some(Cursor { time_us, event_id })
    }
}

/// A validated read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadQuery {
    pub source: Option<String>,
    /// Any of these; empty means every severity.
    pub severities: Vec<Severity>,
    pub correlation_id: Option<String>,
    /// Inclusive, epoch milliseconds.
    pub from_ms: Option<i64>,
    /// Exclusive, epoch milliseconds.
    pub to_ms: Option<i64>,
    pub limit: u32,
    pub after: Option<Cursor>,
}

/// One refused parameter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParamError {
    pub field: String,
    pub reason: String,
}

fn refuse(field: &str, reason: impl Into<String>) -> ParamError {
    ParamError {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Validates the query string's pairs (already percent-decoded), reporting every bad
/// parameter at once.
pub fn parse(
    pairs: &[(String, String)],
    now_ms: i64,
    limits: &ReadLimits,
) -> Result<ReadQuery, Vec<ParamError>> {
    let mut errors = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (name, _) in pairs {
        if !PARAMS.contains(&name.as_str()) {
            errors.push(refuse(
                name,
                format!("unknown parameter; known: {}", PARAMS.join(", ")),
            ));
        } else if seen.contains(&name.as_str()) {
            errors.push(refuse(name, "given more than once"));
        } else {
            seen.push(name);
        }
    }
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };

    let source = text(get("source"), "source", limits, &mut errors);
    let correlation_id = text(get("correlationId"), "correlationId", limits, &mut errors);
    let severities = match get("severity") {
        None => Vec::new(),
        Some(list) => severities(list, &mut errors),
    };
    let from_ms = time(get("from"), "from", &mut errors);
    let to_ms = time(get("to"), "to", &mut errors);
    let limit = match get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                errors.push(refuse(
                    "limit",
                    format!("must be an integer from 1 to {MAX_LIMIT}"),
                ));
                DEFAULT_LIMIT
            }
        },
    };
    let after = match get("cursor") {
        None => None,
        Some(v) => match Cursor::decode(v) {
            Some(c) => Some(c),
            None => {
                errors.push(refuse(
                    "cursor",
                    "not a cursor this API returned (pass nextCursor unchanged)",
                ));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(errors);
    }

    let (from_ms, to_ms) = match range(from_ms, to_ms, correlation_id.is_some(), now_ms, limits) {
        Ok(r) => r,
        Err(e) => return Err(vec![e]),
    };
    Ok(ReadQuery {
        source,
        severities,
        correlation_id,
        from_ms,
        to_ms,
        limit,
        after,
    })
}

/// The time bounds in force: checked against each other, defaulted and capped.
fn range(
    from: Option<i64>,
    to: Option<i64>,
    by_correlation: bool,
    now_ms: i64,
    limits: &ReadLimits,
) -> Result<(Option<i64>, Option<i64>), ParamError> {
    if by_correlation {
        if let (Some(f), Some(t)) = (from, to) {
            if t <= f {
                return Err(refuse("to", "must be after from"));
            }
        }
        return Ok((from, to));
    }
    let Some(from) = from else {
        return Err(refuse(
            "from",
            "required unless correlationId is given (epoch milliseconds)",
        ));
    };
    let to = to.unwrap_or(now_ms);
    if to <= from {
        return Err(refuse(
            "to",
            "must be after from (to defaults to the gateway's clock)",
        ));
    }
    if to - from > limits.max_range_ms {
        return Err(refuse(
            "from",
            format!(
                "the range from..to is {} ms; at most {} ms (READ_MAX_RANGE_HOURS) without correlationId",
                to - from,
                limits.max_range_ms
            ),
        ));
    }
    Ok((Some(from), Some(to)))
}

fn text(
    value: Option<&str>,
    field: &str,
    limits: &ReadLimits,
    errors: &mut Vec<ParamError>,
) -> Option<String> {
    let v = value?;
    if v.is_empty() {
        errors.push(refuse(field, "must not be empty"));
    } else if v.chars().count() > limits.max_id_chars {
        errors.push(refuse(
            field,
            format!("longer than {} characters", limits.max_id_chars),
        ));
    } else if v.contains('\0') {
        errors.push(refuse(field, "must not contain U+0000"));
    } else {
        return Some(v.to_owned());
    }
    None
}

fn severities(list: &str, errors: &mut Vec<ParamError>) -> Vec<Severity> {
    let mut out = Vec::new();
    for name in list.split(',') {
        match Severity::parse(name) {
            Some(s) if !out.contains(&s) => out.push(s),
            Some(_) => {}
            None => {
                errors.push(refuse(
                    "severity",
                    format!("{name:?} is not one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL (comma-separated)"),
                ));
                return Vec::new();
            }
        }
    }
    out
}

fn time(value: Option<&str>, field: &str, errors: &mut Vec<ParamError>) -> Option<i64> {
    let v = value?;
    match v.parse::<i64>() {
        Ok(ms) if (0..=MAX_TIME_MS).contains(&ms) => Some(ms),
        _ => {
            errors.push(refuse(
                field,
                format!("must be epoch milliseconds from 0 to {MAX_TIME_MS}"),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_500_000_000;
    const HOUR: i64 = 3_600_000;
    const LIMITS: ReadLimits = ReadLimits {
        max_range_ms: 24 * HOUR,
        max_id_chars: 256,
    };

    fn q(pairs: &[(&str, &str)]) -> Result<ReadQuery, Vec<ParamError>> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        parse(&pairs, NOW, &LIMITS)
    }

    fn fields(r: Result<ReadQuery, Vec<ParamError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn errors_of_one_service_in_the_last_15_minutes() {
        let from = (NOW - 15 * 60_000).to_string();
        let r = q(&[
            ("source", "checkout"),
            ("severity", "error"),
            ("from", &from),
        ])
        .unwrap();
        assert_eq!(r.source.as_deref(), Some("checkout"));
        assert_eq!(r.severities, vec![Severity::Error]);
        assert_eq!(r.from_ms, Some(NOW - 15 * 60_000));
        assert_eq!(r.to_ms, Some(NOW), "to defaults to the clock");
        assert_eq!(r.limit, DEFAULT_LIMIT);
        assert_eq!(r.after, None);
    }

    #[test]
    fn a_correlation_id_needs_no_range() {
        let r = q(&[("correlationId", "req-1")]).unwrap();
        assert_eq!(r.correlation_id.as_deref(), Some("req-1"));
        assert_eq!((r.from_ms, r.to_ms), (None, None));
        let r = q(&[("correlationId", "req-1"), ("from", "0"), ("to", "1")]).unwrap();
        assert_eq!((r.from_ms, r.to_ms), (Some(0), Some(1)));
        assert_eq!(
            fields(q(&[("correlationId", "c"), ("from", "5"), ("to", "5")])),
            ["to"]
        );
    }

    #[test]
    fn without_a_correlation_id_the_range_is_required_and_bounded() {
        assert_eq!(fields(q(&[])), ["from"]);
        assert_eq!(fields(q(&[("source", "s"), ("to", "5")])), ["from"]);
        let at = |from: i64, to: i64| q(&[("from", &from.to_string()), ("to", &to.to_string())]);
        assert!(at(NOW - 24 * HOUR, NOW).is_ok(), "exactly the maximum");
        assert_eq!(fields(at(NOW - 24 * HOUR - 1, NOW)), ["from"]);
        assert_eq!(fields(at(NOW, NOW)), ["to"]);
        assert_eq!(fields(at(NOW, NOW - 1)), ["to"]);
        // `to` defaults to now: a from older than the maximum is too wide.
        assert_eq!(
            fields(q(&[("from", &(NOW - 25 * HOUR).to_string())])),
            ["from"]
        );
        // A future from without to: to (now) is before it.
        assert_eq!(fields(q(&[("from", &(NOW + 1).to_string())])), ["to"]);
    }

    #[test]
    fn limit_defaults_to_100_and_stops_at_1000() {
        let from = (NOW - HOUR).to_string();
        let limit = |l: &str| q(&[("from", &from), ("limit", l)]);
        assert_eq!(limit("1").unwrap().limit, 1);
        assert_eq!(limit("1000").unwrap().limit, 1000);
        for bad in ["0", "1001", "-1", "ten", "", "1e3", "4294967296"] {
            assert_eq!(fields(limit(bad)), ["limit"], "{bad}");
        }
    }

    #[test]
    fn every_bad_parameter_is_reported_at_once() {
        let long = "x".repeat(257);
        let got = fields(q(&[
            ("source", ""),
            ("correlationId", &long),
            ("severity", "ERROR,LOUD"),
            ("from", "-1"),
            ("to", "99999999999999999999"),
            ("limit", "0"),
            ("cursor", "zz"),
            ("sort", "asc"),
        ]));
        assert_eq!(
            got,
            [
                "sort",
                "source",
                "correlationId",
                "severity",
                "from",
                "to",
                "limit",
                "cursor"
            ]
        );
        assert_eq!(fields(q(&[("source", "a\0b"), ("from", "1")])), ["source"]);
        assert_eq!(
            fields(q(&[("source", "a"), ("source", "b"), ("from", "1")])),
            ["source"],
            "a repeated parameter"
        );
        assert_eq!(fields(q(&[("severity", ""), ("from", "1")])), ["severity"]);
    }

    #[test]
    fn severities_are_a_case_insensitive_list_without_repeats() {
        let from = (NOW - HOUR).to_string();
        let r = q(&[("severity", "error,FATAL,Error"), ("from", &from)]).unwrap();
        assert_eq!(r.severities, vec![Severity::Error, Severity::Fatal]);
        assert_eq!(
            fields(q(&[("severity", "ERROR,"), ("from", &from)])),
            ["severity"]
        );
    }

    #[test]
    fn cursors_round_trip_and_anything_else_is_refused() {
        for c in [
            Cursor {
                time_us: NOW * 1000 + 7,
                event_id: Uuid::now_v7(),
            },
            Cursor {
                time_us: 0,
                event_id: Uuid::nil(),
            },
            Cursor {
                time_us: CURSOR_MAX_TIME_US,
                event_id: Uuid::max(),
            },
        ] {
            let s = c.encode();
            assert_eq!(s.len(), CURSOR_CHARS);
            assert!(s.starts_with("0100"), "{s}");
            assert_eq!(Cursor::decode(&s), Some(c));
        }
        for time_us in [-1, CURSOR_MAX_TIME_US + 1, i64::MAX, i64::MIN] {
            let s = Cursor {
                time_us,
                event_id: Uuid::nil(),
            }
            .encode();
            assert_eq!(Cursor::decode(&s), None, "{time_us}");
        }
        let good = Cursor {
            time_us: 1,
            event_id: Uuid::max(),
        }
        .encode();
        assert_eq!(Cursor::decode(&good.to_uppercase()), None);
        assert_eq!(Cursor::decode(&good[1..]), None);
        assert_eq!(Cursor::decode(&format!("{good}0")), None);
        assert_eq!(
            Cursor::decode(&format!("02{}", &good[2..])),
            None,
            "version"
        );
        assert_eq!(Cursor::decode("é".repeat(25).as_str()), None);
        let from = (NOW - HOUR).to_string();
        let r = q(&[("cursor", &good), ("from", &from)]).unwrap();
        assert_eq!(r.after.unwrap().time_us, 1);
    }
}
