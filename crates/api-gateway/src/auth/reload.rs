//! The key file's reload loop: on SIGHUP, and when the file's modification time or size
//! changes (polled every 2 s), so a revoked key is refused without a restart.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use super::ApiKeys;

/// How often the file's stamp is compared.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// Reloads `keys` on SIGHUP and on file changes until the handle is aborted.
pub fn spawn_key_reload(keys: Arc<ApiKeys>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: API keys reload on file changes only");
                None
            }
        };
        loop {
            let force = tokio::select! {
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => true,
                () = tokio::time::sleep(POLL_EVERY) => false,
            };
            if force {
                tracing::info!("SIGHUP: reloading API keys");
            }
            let keys = keys.clone();
            // Reading the file is blocking I/O; keep it off the request threads.
            let _ = tokio::task::spawn_blocking(move || keys.reload(force)).await;
        }
    })
}
