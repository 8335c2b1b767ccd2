//! Capped gzip decoding of request bodies (`Content-Encoding: gzip`): decompression stops one
//! byte past the cap, so a zip bomb costs at most `limit + 1` bytes of memory.

use std::io::Read;

/// Why a gzip body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GzipError {
    /// The body inflates to more than the cap.
    #[error("the decompressed body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    /// Not gzip, truncated, or a bad checksum.
    #[error("invalid gzip body: {0}")]
    Invalid(String),
}

/// Decompresses `compressed` (one or more concatenated gzip members) into at most `limit`
/// bytes; one byte more is [`GzipError::TooLarge`].
pub fn gunzip(compressed: &[u8], limit: usize) -> Result<Vec<u8>, GzipError> {
    // A compressed body rarely inflates beyond 4x; the cap bounds the guess either way.
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    let decoder = flate2::read::MultiGzDecoder::new(compressed);
    match decoder.take(limit as u64 + 1).read_to_end(&mut out) {
        Ok(_) if out.len() > limit => Err(GzipError::TooLarge { limit }),
        Ok(_) => Ok(out),
        Err(e) => Err(GzipError::Invalid(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn the_cap_is_inclusive() {
        let data = vec![b'a'; 1000];
        assert_eq!(gunzip(&gz(&data), 1000).unwrap(), data);
        assert_eq!(
            gunzip(&gz(&data), 999),
            Err(GzipError::TooLarge { limit: 999 })
        );
        assert_eq!(gunzip(&gz(b""), 0).unwrap(), b"");
    }

    #[test]
    fn concatenated_members_are_one_body() {
        let mut body = gz(b"[{\"a\":1},");
        body.extend(gz(b"{\"b\":2}]"));
        assert_eq!(gunzip(&body, 100).unwrap(), b"[{\"a\":1},{\"b\":2}]");
    }

    #[test]
    fn a_bomb_is_refused_after_reading_the_cap() {
        let bomb = gz(&vec![0u8; 10 * 1024 * 1024]);
        assert!(bomb.len() < 20_000);
        assert_eq!(
            gunzip(&bomb, 1024 * 1024),
            Err(GzipError::TooLarge { limit: 1024 * 1024 })
        );
    }

    #[test]
    fn garbage_and_truncation_are_invalid() {
        assert!(matches!(
            gunzip(b"not gzip", 1000),
            Err(GzipError::Invalid(_))
        ));
        let whole = gz(b"some text that compresses");
        let truncated = &whole[..whole.len() - 4];
        assert!(matches!(
            gunzip(truncated, 1000),
            Err(GzipError::Invalid(_))
        ));
    }
}
