//! The API-key file, pure: parsing and validation, sha256 hashing, constant-time lookup and
//! the source allow-list. No I/O and no clock; `mod.rs` and `reload.rs` hold those.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// One configured key. Only the sha256 of the secret is held, never the secret.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    /// Bounded by the file, safe as a metric label and in logs.
    pub name: String,
    sha256: [u8; 32],
    /// Sources this key may write; None = any.
    pub sources: Option<Vec<String>>,
    pub events_per_second: Option<f64>,
    pub bytes_per_second: Option<f64>,
}

impl ApiKey {
    /// Whether this key may write events with `source`.
    pub fn allows(&self, source: &str) -> bool {
        match &self.sources {
            None => true,
            Some(sources) => sources.iter().any(|s| s == source),
        }
    }
}

/// The keys in force.
#[derive(Debug, Default, Clone)]
pub struct KeySet {
    keys: Vec<Arc<ApiKey>>,
}

/// Why a key file was refused; names the key, never a secret.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KeyFileError {
    #[error("not a valid key file ({{\"keys\":[{{\"name\":…,\"sha256\":…}}]}}): {0}")]
    Json(String),
    #[error("key {0:?}: a name is 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    BadName(String),
    #[error("key {0:?}: sha256 must be 64 hex digits (the sha256 of the key, not the key)")]
    BadHash(String),
    #[error("key {0:?} is defined twice")]
    DuplicateName(String),
    #[error("keys {0:?} and {1:?} have the same sha256")]
    DuplicateHash(String, String),
    #[error("key {0:?}: {1} must be a positive number")]
    BadQuota(String, &'static str),
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct File {
    keys: Vec<Entry>,
}

/// One entry of the file, as written.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Entry {
    pub name: String,
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
}

/// The sha256 of a presented key.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn positive(v: Option<f64>) -> bool {
    v.map_or(true, |v| v.is_finite() && v > 0.0)
}

impl KeySet {
    /// Parses and validates a key file's contents; all or nothing.
    pub fn parse(text: &str) -> Result<KeySet, KeyFileError> {
        let file: File =
            serde_json::from_str(text).map_err(|e| KeyFileError::Json(e.to_string()))?;
        let mut keys: Vec<Arc<ApiKey>> = Vec::with_capacity(file.keys.len());
        for e in file.keys {
            if !valid_name(&e.name) {
                return Err(KeyFileError::BadName(e.name));
            }
            let Some(sha256) = parse_hex(&e.sha256) else {
                return Err(KeyFileError::BadHash(e.name));
            };
            if !positive(e.events_per_second) {
                return Err(KeyFileError::BadQuota(e.name, "eventsPerSecond"));
            }
            if !positive(e.bytes_per_second) {
                return Err(KeyFileError::BadQuota(e.name, "bytesPerSecond"));
            }
            if let Some(other) = keys.iter().find(|k| k.name == e.name) {
                return Err(KeyFileError::DuplicateName(other.name.clone()));
            }
            if let Some(other) = keys.iter().find(|k| k.sha256 == sha256) {
                return Err(KeyFileError::DuplicateHash(other.name.clone(), e.name));
            }
            keys.push(Arc::new(ApiKey {
                name: e.name,
                sha256,
                sources: e.sources,
                events_per_second: e.events_per_second,
                bytes_per_second: e.bytes_per_second,
            }));
        }
        Ok(KeySet { keys })
    }

    /// The key whose sha256 matches `presented`'s. Every stored hash is compared in constant
    /// time and the scan never stops early, so timing tells nothing about which bytes or
    /// which key matched.
    pub fn find(&self, presented: &str) -> Option<Arc<ApiKey>> {
        let wanted = digest(presented);
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.sha256.ct_eq(&wanted)) {
                found = Some(key.clone());
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Key names, in file order (metrics are pre-registered with them).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.name.as_str())
    }
}

/// A fresh random key (two v4 UUIDs: 244 random bits from the OS-seeded CSPRNG) and its file
/// entry.
pub fn new_key(name: &str) -> Result<(String, Entry), KeyFileError> {
    if !valid_name(name) {
        return Err(KeyFileError::BadName(name.to_owned()));
    }
    let key = format!(
        "lk_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let entry = Entry {
        name: name.to_owned(),
        sha256: hex(&digest(&key)),
        events_per_second: None,
        bytes_per_second: None,
        sources: None,
    };
    Ok((key, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(entries: &str) -> String {
        format!(r#"{{"keys":[{entries}]}}"#)
    }

    #[test]
    fn a_presented_key_is_found_by_its_sha256_and_no_other_is() {
        let a = hex(&digest("secret-a"));
        let b = hex(&digest("secret-b"));
        let set = KeySet::parse(&file(&format!(
            r#"{{"name":"team-a","sha256":"{a}","eventsPerSecond":500,"bytesPerSecond":5000000,"sources":["checkout"]}},
               {{"name":"team-b","sha256":"{b}"}}"#
        )))
        .unwrap();
        assert_eq!(set.len(), 2);
        let found = set.find("secret-a").unwrap();
        assert_eq!(found.name, "team-a");
        assert_eq!(found.events_per_second, Some(500.0));
        assert!(found.allows("checkout") && !found.allows("billing"));
        let b = set.find("secret-b").unwrap();
        assert!(b.allows("anything"));
        assert!(set.find("secret-c").is_none());
        assert!(set.find("").is_none());
        assert!(
            set.find(&hex(&digest("secret-a"))).is_none(),
            "the hash is not a key"
        );
    }

    #[test]
    fn upper_case_hex_is_accepted() {
        let a = hex(&digest("k")).to_uppercase();
        let set = KeySet::parse(&file(&format!(r#"{{"name":"a","sha256":"{a}"}}"#))).unwrap();
        assert!(set.find("k").is_some());
    }

    #[test]
    fn a_bad_file_is_refused_whole_with_the_reason() {
        let h = hex(&digest("k"));
        let other = hex(&digest("j"));
        let cases: Vec<(String, &str)> = vec![
            ("{".into(), "Json"),
            (r#"{"keys":[{"name":"a","sha256":"ab"}]}"#.into(), "BadHash"),
            (
                file(&format!(r#"{{"name":"a b","sha256":"{h}"}}"#)),
                "BadName",
            ),
            (
                file(&format!(
                    r#"{{"name":"a","sha256":"{h}","eventsPerSecond":0}}"#
                )),
                "BadQuota",
            ),
            (
                file(&format!(
                    r#"{{"name":"a","sha256":"{h}","bytesPerSecond":-1}}"#
                )),
                "BadQuota",
            ),
            (
                file(&format!(r#"{{"name":"a","sha256":"{h}","rate":1}}"#)),
                "Json",
            ),
            (
                file(&format!(
                    r#"{{"name":"a","sha256":"{h}"}},{{"name":"a","sha256":"{other}"}}"#
                )),
                "DuplicateName",
            ),
            (
                file(&format!(
                    r#"{{"name":"a","sha256":"{h}"}},{{"name":"b","sha256":"{h}"}}"#
                )),
                "DuplicateHash",
            ),
        ];
        for (text, want) in cases {
            let err = KeySet::parse(&text).unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{text}: {err:?}");
        }
    }

    #[test]
    fn a_new_key_matches_its_entry_and_keys_differ() {
        let (key, entry) = new_key("team-a").unwrap();
        let (other, _) = new_key("team-a").unwrap();
        assert_ne!(key, other);
        assert!(key.len() > 60);
        let text = serde_json::to_string(&File { keys: vec![entry] }).unwrap();
        assert!(!text.contains(&key), "the entry holds the hash only");
        let set = KeySet::parse(&text).unwrap();
        assert_eq!(set.find(&key).unwrap().name, "team-a");
        assert!(new_key("no spaces").is_err());
    }
}
