//! The one HTTP load generator: `bench/run.sh` (every measure) and
//! `integration-tests/test-backpressure.sh`.
//!
//! Every worker opens its keep-alive connection before the clock starts. Request `i` is
//! *scheduled* at `start + i / rate` (tokio's timer has 1 ms resolution); a pool of
//! `--concurrency` workers sends them, and every latency is measured from the scheduled time,
//! so queueing delay shows (no coordinated omission). `--rate 0` is closed loop (each worker
//! sends back to back), which is what P1–P3 measure.
//!
//! Bodies: the `--body` files in turn, or, without one, fresh events (`--batch`, `--severity`)
//! whose eventIds are appended to `--ids` when accepted, so a test can find each in the database.
//!
//! Prints one JSON line: counts per status, accepted requests and events per second, latency
//! percentiles of the accepted answers (also from the actual send) and of the refused ones,
//! 429s without a `Retry-After` of at least 1 s, requests that started > 10 ms late (the
//! generator could not keep up), per-second timelines of the accepted answers (by scheduled
//! and by answer time), and with `--side-url` the answers of a second server that takes a
//! share of the requests.

use bench_baselines::{fresh_events, percentiles};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Parser)]
#[command(about = "HTTP POST load generator (latency from the scheduled send time)")]
struct Args {
    /// Target URL (loopback only).
    #[arg(long)]
    url: String,
    /// File whose bytes are a request body; repeat to cycle through several. None: fresh
    /// events with unique ids.
    #[arg(long)]
    body: Vec<std::path::PathBuf>,
    /// Events per request: fresh bodies hold this many (an array when > 1); with `--body`,
    /// how many each file holds (for `accepted_events`).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Severity of the fresh events.
    #[arg(long, default_value = "INFO")]
    severity: String,
    /// Append the eventIds of accepted fresh events to this file, one a line.
    #[arg(long)]
    ids: Option<std::path::PathBuf>,
    /// Content-Type of the body.
    #[arg(long, default_value = "application/json")]
    content_type: String,
    /// Requests per second to offer; 0 = closed loop.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds to offer load for.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Most requests in flight at once (workers, each with its own keep-alive connection).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// A second target: of every `1 + --side-share` requests one goes to `--url`, the rest
    /// here (P5's bound run puts an overload's excess on bare axum). Counted under `side`.
    #[arg(long)]
    side_url: Option<String>,
    /// How many requests go to `--side-url` for each one to `--url`.
    #[arg(long, default_value_t = 2)]
    side_share: u64,
}

/// Where requests go: authority and path of a loopback URL.
#[derive(Clone)]
struct Target {
    authority: hyper::http::uri::Authority,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, Box<dyn std::error::Error>> {
        let uri: hyper::Uri = url.parse()?;
        let authority = uri.authority().ok_or("the URL has no host:port")?.clone();
        let host = authority.host().trim_matches(['[', ']']);
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(format!("refusing non-loopback URL {url}").into());
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        Ok(Target { authority, path })
    }
}

/// What each request sends: the given files in turn, or fresh events.
enum Bodies {
    Files(Vec<Bytes>),
    Fresh { batch: usize, severity: String },
}

impl Bodies {
    fn get(&self, i: u64) -> (Bytes, Vec<uuid::Uuid>) {
        match self {
            Bodies::Files(files) => (files[i as usize % files.len()].clone(), Vec::new()),
            Bodies::Fresh { batch, severity } => fresh_events(*batch, severity, now_ms()),
        }
    }
}

#[derive(Default)]
struct Samples {
    by_status: BTreeMap<u16, u64>,
    side_by_status: BTreeMap<u16, u64>,
    /// Per accepted answer: when it was scheduled (ms since the start), its latency from the
    /// scheduled time and from the actual send (µs).
    accepted: Vec<(u32, u32, u32)>,
    accepted_ids: Vec<uuid::Uuid>,
    refused_us: Vec<u32>,
    errors: u64,
    missing_retry_after: u64,
    late: u64,
}

impl Samples {
    fn merge(&mut self, s: Samples) {
        for (mine, theirs) in [
            (&mut self.by_status, s.by_status),
            (&mut self.side_by_status, s.side_by_status),
        ] {
            theirs
                .into_iter()
                .for_each(|(k, v)| *mine.entry(k).or_default() += v);
        }
        self.accepted.extend(s.accepted);
        self.accepted_ids.extend(s.accepted_ids);
        self.refused_us.extend(s.refused_us);
        self.errors += s.errors;
        self.missing_retry_after += s.missing_retry_after;
        self.late += s.late;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Arc::new(Args::parse());
    let bodies = Arc::new(if args.body.is_empty() {
        Bodies::Fresh {
            batch: args.batch.max(1),
            severity: args.severity.clone(),
        }
    } else {
        let files = args
            .body
            .iter()
            .map(std::fs::read)
            .collect::<Result<Vec<_>, _>>()?;
        Bodies::Files(files.into_iter().map(Bytes::from).collect())
    });
    let main_target = Arc::new(Target::parse(&args.url)?);
    let side_target = Arc::new(args.side_url.as_deref().map(Target::parse).transpose()?);
    let next = Arc::new(AtomicU64::new(0));
    // Time for every worker to connect first (about 1 ms each, plus margin).
    let start = Instant::now() + Duration::from_millis(200 + args.concurrency as u64);
    let start_unix_ms = now_ms() + 200 + args.concurrency as i64;
    let end = start + Duration::from_secs_f64(args.duration);
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));

    let mut workers = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        let (args, next, bodies) = (args.clone(), next.clone(), bodies.clone());
        let (main_target, side_target) = (main_target.clone(), side_target.clone());
        workers.push(tokio::spawn(async move {
            let timeout = Duration::from_secs_f64(args.timeout);
            let mut s = Samples::default();
            let (mut conn, mut side_conn) = (None, None);
            // Connect before the clock starts: a thousand connects at once can overflow the
            // listen backlog, and a dropped SYN costs a 1 s retransmit inside the window.
            let _ = connect(&mut conn, &main_target.authority).await;
            if let Some(side) = side_target.as_ref() {
                let _ = connect(&mut side_conn, &side.authority).await;
            }
            tokio::time::sleep_until(start).await;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                // Closed loop: no timer at all, so its cost does not count against P1–P3.
                let scheduled =
                    interval.map_or_else(Instant::now, |iv| start + iv.mul_f64(i as f64));
                if scheduled >= end {
                    break;
                }
                if interval.is_some() {
                    tokio::time::sleep_until(scheduled).await;
                    s.late += u64::from(scheduled.elapsed() > Duration::from_millis(10));
                }
                let (body, ids) = bodies.get(i);
                let side = side_target.as_ref().as_ref();
                if let Some(side) = side.filter(|_| i % (args.side_share + 1) != 0) {
                    match send(&mut side_conn, side, &args.content_type, body, timeout).await {
                        Ok((status, _)) => *s.side_by_status.entry(status).or_default() += 1,
                        Err(()) => s.errors += 1,
                    }
                    continue;
                }
                let sent_at = Instant::now();
                let Ok((status, retry_after_ok)) =
                    send(&mut conn, &main_target, &args.content_type, body, timeout).await
                else {
                    s.errors += 1;
                    continue;
                };
                s.missing_retry_after += u64::from(status == 429 && !retry_after_ok);
                *s.by_status.entry(status).or_default() += 1;
                let us = micros(scheduled.elapsed());
                if (200..300).contains(&status) {
                    let at_ms = micros(scheduled - start) / 1000;
                    s.accepted.push((at_ms, us, micros(sent_at.elapsed())));
                    s.accepted_ids.extend(ids);
                } else {
                    s.refused_us.push(us);
                }
            }
            s
        }));
    }
    let mut all = Samples::default();
    for w in workers {
        all.merge(w.await?);
    }
    // Rates over the real elapsed time (to the last answer), not the nominal duration: when
    // the generator or the server falls behind, the run stretches and the rates show it.
    let seconds = start.elapsed().as_secs_f64().max(args.duration);
    if let Some(path) = &args.ids {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        for id in &all.accepted_ids {
            writeln!(f, "{id}")?;
        }
    }
    let accepted = all.accepted.len() as u64;
    let (mut latency, mut service): (Vec<u32>, Vec<u32>) =
        all.accepted.iter().map(|&(_, us, svc)| (us, svc)).unzip();
    let total: u64 = all.by_status.values().sum::<u64>() + all.errors;
    let side: u64 = all.side_by_status.values().sum();
    println!(
        "{}",
        serde_json::json!({
            "offered_rate": args.rate,
            "seconds": seconds,
            "nominal_seconds": args.duration,
            "requests": total,
            "sent_per_sec": total as f64 / seconds,
            "accepted": accepted,
            "accepted_per_sec": accepted as f64 / seconds,
            "accepted_events": accepted * args.batch as u64,
            "accepted_events_per_sec": (accepted * args.batch as u64) as f64 / seconds,
            "by_status": by_status(&all.by_status),
            "errors": all.errors,
            "missing_retry_after": all.missing_retry_after,
            "late_starts": all.late,
            "accepted_latency": percentiles(&mut latency),
            "accepted_service_latency": percentiles(&mut service),
            "refused_latency": percentiles(&mut all.refused_us),
            "timeline": timeline(&all.accepted),
            "start_unix_ms": start_unix_ms,
            "answered_per_second": answered_per_second(&all.accepted),
            "side": args.side_url.as_ref().map(|_| serde_json::json!({
                "requests": side, "sent_per_sec": side as f64 / seconds,
                "by_status": by_status(&all.side_by_status),
            })),
        })
    );
    Ok(())
}

fn by_status(counts: &BTreeMap<u16, u64>) -> BTreeMap<String, u64> {
    counts.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as i64)
}

/// Accepted answers per second of scheduled time: how many, and their p99 and max latency
/// (shows whether a tail comes from one moment, e.g. a burst at the start, or from all of it).
fn timeline(accepted: &[(u32, u32, u32)]) -> serde_json::Value {
    let mut seconds: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &(at_ms, us, _) in accepted {
        seconds.entry(at_ms / 1000).or_default().push(us);
    }
    seconds
        .into_iter()
        .map(|(second, mut v)| {
            let p = percentiles(&mut v);
            serde_json::json!({
                "second": second, "accepted": v.len(), "p99_ms": p["p99_ms"], "max_ms": p["max_ms"],
            })
        })
        .collect()
}

/// 2xx answers per second of *answer* time since the start (P7: what a client sees while a
/// broker fails over; the scheduled-time timeline above counts a late answer in its own second).
fn answered_per_second(accepted: &[(u32, u32, u32)]) -> Vec<u32> {
    let mut out = Vec::new();
    for &(at_ms, us, _) in accepted {
        let second = ((u64::from(at_ms) * 1000 + u64::from(us)) / 1_000_000) as usize;
        if out.len() <= second {
            out.resize(second + 1, 0);
        }
        out[second] += 1;
    }
    out
}

type Conn = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One request on the worker's keep-alive connection, within `timeout`: the status and
/// whether a 429's `Retry-After` holds whole seconds ≥ 1. The body is read to the end. A
/// failure drops the connection, so the next request starts over on a fresh one.
async fn send(
    conn: &mut Option<Conn>,
    target: &Target,
    content_type: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<(u16, bool), ()> {
    let once = async {
        connect(conn, &target.authority).await?;
        let sender = conn.as_mut().ok_or(())?;
        sender.ready().await.map_err(|_| ())?;
        let request = hyper::Request::post(target.path.as_str())
            .header(hyper::header::HOST, target.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .map_err(|_| ())?;
        let response = sender.send_request(request).await.map_err(|_| ())?;
        let retry_after = response.headers().get(hyper::header::RETRY_AFTER);
        let secs = retry_after.and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let status = response.status().as_u16();
        response.into_body().collect().await.map_err(|_| ())?;
        Ok((status, secs.is_some_and(|s| s >= 1)))
    };
    let sent = tokio::time::timeout(timeout, once).await.unwrap_or(Err(()));
    if sent.is_err() {
        *conn = None;
    }
    sent
}

/// Opens the worker's connection unless it has a live one.
async fn connect(
    conn: &mut Option<Conn>,
    authority: &hyper::http::uri::Authority,
) -> Result<(), ()> {
    if conn.as_ref().is_some_and(|c| !c.is_closed()) {
        return Ok(());
    }
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|_| ())?;
    stream.set_nodelay(true).map_err(|_| ())?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|_| ())?;
    tokio::spawn(connection);
    *conn = Some(sender);
    Ok(())
}
