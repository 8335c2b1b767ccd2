//! Structured logging set-up shared by the binary and tests.

use tracing_subscriber::EnvFilter;

/// Installs a global subscriber: JSON lines (`format = "json"`) or human text, filtered by
/// `RUST_LOG` (default `info`). Safe to call more than once.
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "text" {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
}
