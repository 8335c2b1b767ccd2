//! Severity levels, ordered from least to most important.

use std::fmt;

/// Log severity. Ordered: `Trace < Debug < Info < Warn < Error < Fatal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl Severity {
    /// All levels, in order.
    pub const ALL: [Severity; 6] = [
        Severity::Trace,
        Severity::Debug,
        Severity::Info,
        Severity::Warn,
        Severity::Error,
        Severity::Fatal,
    ];

    /// Case-insensitive parse of the wire name.
    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(s))
    }

    /// The stored (upper-case) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Trace => "TRACE",
            Severity::Debug => "DEBUG",
            Severity::Info => "INFO",
            Severity::Warn => "WARN",
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }

    /// ERROR and FATAL keep a reserved share of the budget under load.
    pub fn is_protected(self) -> bool {
        self >= Severity::Error
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::parse(s).ok_or_else(|| format!("unknown severity {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_level_in_any_case() {
        for level in Severity::ALL {
            assert_eq!(Severity::parse(level.as_str()), Some(level));
            assert_eq!(Severity::parse(&level.as_str().to_lowercase()), Some(level));
        }
        assert_eq!(Severity::parse("wArN"), Some(Severity::Warn));
        assert_eq!(Severity::parse("WARNING"), None);
        assert_eq!(Severity::parse(""), None);
        assert_eq!(Severity::parse(" INFO"), None);
    }

    #[test]
    fn only_error_and_fatal_are_protected() {
        let protected: Vec<_> = Severity::ALL
            .into_iter()
            .filter(|s| s.is_protected())
            .collect();
        assert_eq!(protected, vec![Severity::Error, Severity::Fatal]);
    }
}
