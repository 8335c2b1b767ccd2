//! The HTTP server: accept loop with a connection cap, hyper HTTP/1 connections with header,
//! idle and header-size limits, and a graceful drain. Replaces `axum::serve`, which has no
//! timeouts and accepts without bound.

mod guard;
pub mod phase;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use crate::metrics;
use crate::Config;
use guard::{ConnPhase, GuardedIo};
use phase::Timeouts;

/// Which listener a connection came in on (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// GATEWAY_ADDR: the public API.
    Api,
    /// GATEWAY_OPS_ADDR: metrics and probes.
    Ops,
}

impl Listener {
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Api => "api",
            Listener::Ops => "ops",
        }
    }
}

/// Most connections on the operations listener: a scraper and a few probes need no more.
pub const OPS_MAX_CONNECTIONS: usize = 64;

/// Open files kept for everything but client connections: the Kafka and Redis clients,
/// listeners, logs, the ops listener.
const FD_RESERVE: u64 = 256 + OPS_MAX_CONNECTIONS as u64;

/// The limits every connection is served under.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub timeouts: Timeouts,
    pub max_connections: usize,
    pub max_headers: usize,
    pub max_header_bytes: usize,
}

impl ServeConfig {
    /// The limits from the config, the connection cap lowered to what the open-file limit
    /// leaves room for (the soft limit is raised to the hard one first).
    pub fn from_config(cfg: &Config) -> ServeConfig {
        let wanted = cfg.http_max_connections;
        let max_connections = match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(fds) => {
                let cap = connection_cap(wanted, fds);
                if cap < wanted {
                    tracing::warn!(
                        wanted,
                        cap,
                        open_file_limit = fds,
                        "HTTP_MAX_CONNECTIONS lowered to fit the open-file limit (raise `ulimit -n`)"
                    );
                }
                cap
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the open-file limit; HTTP_MAX_CONNECTIONS kept");
                wanted
            }
        };
        ServeConfig {
            timeouts: Timeouts {
                header: Duration::from_millis(cfg.http_header_read_timeout_ms),
                idle: Duration::from_millis(cfg.http_idle_timeout_ms),
            },
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            max_headers: cfg.http_max_headers as usize,
            max_header_bytes: cfg.http_max_header_bytes as usize,
        }
    }
}

/// The most client connections `fd_limit` open files leave room for (at least one).
fn connection_cap(wanted: u64, fd_limit: u64) -> u64 {
    wanted.min(fd_limit.saturating_sub(FD_RESERVE)).max(1)
}

/// Serves `app` on `listener` until `stop` turns true, then stops accepting, asks every
/// connection to finish its request and close, and returns once all have (the caller bounds
/// the wait).
pub async fn serve(
    listener: TcpListener,
    kind: Listener,
    app: Router,
    cfg: ServeConfig,
    mut stop: watch::Receiver<bool>,
) {
    // Bounded so the drain below can ask for every permit at once.
    let max = cfg
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    // The cap, and at the end the drain: every open connection holds one permit.
    let permits = Arc::new(Semaphore::new(max));
    metrics::connection_limit(kind, max);
    let mut refusing = false;
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if !refusing {
                tracing::warn!(
                    listener = kind.as_str(),
                    max,
                    "connection cap reached: refusing new connections"
                );
                refusing = true;
            }
            refuse(tcp, kind);
            continue;
        };
        refusing = false;
        let app = app.clone();
        let cfg = cfg.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _open = metrics::ConnectionOpen::new(kind);
            serve_connection(tcp, kind, app, &cfg, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    tracing::debug!(
        listener = kind.as_str(),
        open = max - permits.available_permits(),
        "not accepting; waiting for open connections to finish"
    );
    let _ = permits.acquire_many(max as u32).await;
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Sent to a connection over the cap, without waiting: if the socket cannot take it at once,
/// the client only sees the close.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\
retry-after: 1\r\nconnection: close\r\n\r\n";

fn refuse(tcp: TcpStream, kind: Listener) {
    metrics::connection_refused(kind);
    let _ = tcp.try_write(REFUSAL);
}

/// As `axum::serve` does: a client that hung up before the accept is nothing to wait for;
/// anything else (out of file descriptors) is logged and accepting pauses a second.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn serve_connection(
    tcp: TcpStream,
    kind: Listener,
    app: Router,
    cfg: &ServeConfig,
    mut stop: watch::Receiver<bool>,
) {
    // TCP_NODELAY: an answer goes out at once, not after the client's delayed ACK.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
    let phase = ConnPhase::new(cfg.timeouts, Instant::now());
    let started = phase.clone();
    let answered = phase.clone();
    let service = app
        .map_request(move |request: Request<Incoming>| {
            started.request_started();
            request
        })
        .map_response(move |response| {
            answered.response_ready();
            response
        });
    let io = TokioIo::new(GuardedIo::new(tcp, phase, kind));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        // The header clock is ours (phase.rs): hyper's would also close idle keep-alives.
        .header_read_timeout(None)
        .max_headers(cfg.max_headers)
        .max_header_size(cfg.max_header_bytes);
    let conn = builder.serve_connection(io, TowerToHyperService::new(service));
    let mut conn = std::pin::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = stopped(&mut stop) => {
            // Finish the request in progress, if any, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        tracing::trace!(error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_the_processs_other_files() {
        assert_eq!(connection_cap(4096, 1_048_576), 4096);
        assert_eq!(connection_cap(4096, 1024), 1024 - FD_RESERVE);
        assert_eq!(connection_cap(4096, 100), 1);
    }
}
