//! A batch of rows as PostgreSQL binary `COPY` data: pure encoding, no I/O.
//!
//! Format: PostgreSQL docs, "COPY", section "Binary Format". One buffer per batch, no
//! allocation per row; the columns are [`COLUMNS`], in order.

use super::Row;

/// The columns the COPY data carries, in order.
pub(super) const COLUMNS: &str = "event_id, correlation_id, severity, message, source, \
     event_time, received_at, attributes, kafka_partition, kafka_offset";
const FIELDS: i16 = 10;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// 2000-01-01T00:00:00Z, PostgreSQL's timestamp origin, in Unix milliseconds.
const PG_EPOCH_MS: i64 = 946_684_800_000;
/// A timestamp PostgreSQL refuses ("timestamp out of range", SQLSTATE 22008), for a
/// millisecond value that does not fit in microseconds: the row is dead-lettered, as the
/// UNNEST insert's interval arithmetic would. (`i64::MAX` itself would mean 'infinity'.)
const OUT_OF_RANGE_US: i64 = i64::MAX - 1;
/// The jsonb binary format's version byte, followed by the JSON text.
const JSONB_VERSION: u8 = 1;

/// Encodes `rows` as one binary COPY stream: header, one tuple per row, trailer.
pub(super) fn encode(rows: &[Row]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64 + rows.len() * 256);
    buf.extend_from_slice(SIGNATURE);
    buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
    buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for r in rows {
        let e = &r.event;
        buf.extend_from_slice(&FIELDS.to_be_bytes());
        field(&mut buf, e.event_id.as_bytes());
        field(&mut buf, e.correlation_id.as_bytes());
        field(&mut buf, e.severity.as_str().as_bytes());
        field(&mut buf, e.message.as_bytes());
        field(&mut buf, e.source.as_bytes());
        field(&mut buf, &timestamp_us(e.timestamp).to_be_bytes());
        field(&mut buf, &timestamp_us(e.received_at).to_be_bytes());
        match &e.attributes {
            None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(map) => {
                let len_at = buf.len();
                buf.extend_from_slice(&0i32.to_be_bytes());
                buf.push(JSONB_VERSION);
                serde_json::to_writer(&mut buf, map).expect("a JSON map serializes into memory");
                let len = i32::try_from(buf.len() - len_at - 4).unwrap_or(i32::MAX);
                buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
        field(&mut buf, &r.partition.to_be_bytes());
        field(&mut buf, &r.offset.to_be_bytes());
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    buf
}

fn field(buf: &mut Vec<u8>, bytes: &[u8]) {
    // A field over 2 GiB cannot come from a Kafka record; saturating makes PostgreSQL refuse
    // the malformed tuple (a data error) rather than misread the stream.
    let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(bytes);
}

/// Unix milliseconds → microseconds since 2000-01-01 (timestamptz's binary value).
fn timestamp_us(ms: i64) -> i64 {
    ms.checked_sub(PG_EPOCH_MS)
        .and_then(|d| d.checked_mul(1000))
        .unwrap_or(OUT_OF_RANGE_US)
}

#[cfg(test)]
mod tests {
    use super::*;
    use log_event::{LogEvent, Severity};
    use uuid::Uuid;

    fn row(attributes: Option<serde_json::Map<String, serde_json::Value>>) -> Row {
        let event = LogEvent {
            event_id: Uuid::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
            correlation_id: "corr".into(),
            severity: Severity::ALL[0],
            message: "héllo".into(),
            source: "s".into(),
            timestamp: PG_EPOCH_MS + 1,
            attributes,
            received_at: 0,
        };
        Row {
            raw: event.to_record(),
            event,
            partition: 2,
            offset: 7,
        }
    }

    /// Reads one tuple's fields back (`None` for NULL), advancing `at`.
    fn tuple<'a>(buf: &'a [u8], at: &mut usize) -> Vec<Option<&'a [u8]>> {
        let n = i16::from_be_bytes(buf[*at..*at + 2].try_into().unwrap());
        *at += 2;
        (0..n)
            .map(|_| {
                let len = i32::from_be_bytes(buf[*at..*at + 4].try_into().unwrap());
                *at += 4;
                if len < 0 {
                    return None;
                }
                let f = &buf[*at..*at + len as usize];
                *at += len as usize;
                Some(f)
            })
            .collect()
    }

    #[test]
    fn a_batch_is_header_tuples_and_trailer() {
        let mut attrs = serde_json::Map::new();
        attrs.insert("k".into(), serde_json::json!("v"));
        let rows = [row(Some(attrs)), row(None)];
        let buf = encode(&rows);
        assert_eq!(&buf[..11], SIGNATURE);
        assert_eq!(&buf[11..19], &[0u8; 8]);
        let mut at = 19;
        let first = tuple(&buf, &mut at);
        assert_eq!(first.len(), COLUMNS.split(',').count());
        assert_eq!(first[0].unwrap(), rows[0].event.event_id.as_bytes());
        assert_eq!(first[1].unwrap(), b"corr");
        assert_eq!(first[2].unwrap(), Severity::ALL[0].as_str().as_bytes());
        assert_eq!(first[3].unwrap(), "héllo".as_bytes());
        assert_eq!(first[5].unwrap(), &1000i64.to_be_bytes());
        assert_eq!(first[6].unwrap(), &(-PG_EPOCH_MS * 1000).to_be_bytes());
        assert_eq!(first[7].unwrap(), b"\x01{\"k\":\"v\"}");
        assert_eq!(first[8].unwrap(), &2i32.to_be_bytes());
        assert_eq!(first[9].unwrap(), &7i64.to_be_bytes());
        let second = tuple(&buf, &mut at);
        assert!(second[7].is_none());
        assert_eq!(&buf[at..], &(-1i16).to_be_bytes());
    }

    #[test]
    fn an_empty_batch_is_header_and_trailer() {
        assert_eq!(encode(&[]).len(), 11 + 8 + 2);
    }

    #[test]
    fn milliseconds_beyond_microseconds_become_a_timestamp_postgres_refuses() {
        assert_eq!(timestamp_us(PG_EPOCH_MS), 0);
        assert_eq!(timestamp_us(PG_EPOCH_MS - 1), -1000);
        assert_eq!(timestamp_us(i64::MAX), OUT_OF_RANGE_US);
        assert_eq!(timestamp_us(i64::MIN), OUT_OF_RANGE_US);
        assert_ne!(OUT_OF_RANGE_US, i64::MAX, "i64::MAX is 'infinity'");
    }
}
