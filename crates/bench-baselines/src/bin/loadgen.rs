//! Open-loop HTTP load generator for `bench/run.sh` (P5, P6).
//!
//! Every worker opens its keep-alive connection before the clock starts. Request `i` is
//! *scheduled* at `start + i / rate` (tokio's timer has 1 ms resolution, so a request may
//! start up to ~1 ms after its time and that shows in its latency); a pool of `--concurrency` workers sends
//! them, and every latency is measured from the scheduled time, not from the moment a
//! worker got round to it. So when the server slows down the queueing delay shows up in the
//! latency (no coordinated omission), and the offered rate stays what was asked for as long
//! as workers are free. With `--rate 0` it is closed-loop (each worker sends back to back).
//!
//! Prints one JSON line: counts per status, accepted (2xx) per second, latency percentiles
//! of the accepted and of the refused answers (plus the accepted ones measured from the
//! actual send, which leaves out the generator's own queueing), 429s that lacked `Retry-After`, and how many
//! requests started more than 10 ms after their scheduled time (the generator itself could
//! not keep up), and a per-second timeline of the accepted answers (count, p99, max).
//! With `--side-url`, a share of the requests goes to a second server from the same workers
//! (counted under `side`, left out of the latency figures).

use bench_baselines::percentiles;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Parser)]
#[command(about = "Open-loop HTTP POST load generator (latency from the scheduled send time)")]
struct Args {
    /// Target URL.
    #[arg(long)]
    url: String,
    /// File whose bytes are the request body; repeat to cycle through several bodies
    /// (request `i` sends body `i mod n`).
    #[arg(long, required = true)]
    body: Vec<std::path::PathBuf>,
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
    /// A second target sharing the offered rate: of every `1 + --side-share` requests, one
    /// goes to `--url` and the rest here (each worker keeps a connection to both). Only the
    /// `--url` answers make the latency figures; this one's are counted under `side`. P5's
    /// bound run uses it to put an overload's extra requests on another server from the same
    /// generator.
    #[arg(long)]
    side_url: Option<String>,
    /// How many requests go to `--side-url` for each one to `--url`.
    #[arg(long, default_value_t = 2)]
    side_share: u64,
}

/// Where requests go: authority and path of a URL.
#[derive(Clone)]
struct Target {
    authority: hyper::http::uri::Authority,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, Box<dyn std::error::Error>> {
        let uri: hyper::Uri = url.parse()?;
        let authority = uri.authority().ok_or("the URL has no host:port")?.clone();
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        Ok(Target { authority, path })
    }
}

#[derive(Default)]
struct Samples {
    by_status: BTreeMap<u16, u64>,
    accepted_us: Vec<u32>,
    /// When each accepted request was scheduled, in ms since the start (for the timeline).
    accepted_at_ms: Vec<u32>,
    /// Accepted answers measured from the moment the request was actually sent.
    accepted_service_us: Vec<u32>,
    refused_us: Vec<u32>,
    errors: u64,
    missing_retry_after: u64,
    late: u64,
    /// Answers from `--side-url`, by status (its errors count under `errors`).
    side_by_status: BTreeMap<u16, u64>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let bodies = args
        .body
        .iter()
        .map(|p| bytes_of(p))
        .collect::<Result<Arc<[_]>, _>>()?;
    let main_target = Target::parse(&args.url)?;
    let side_target = args.side_url.as_deref().map(Target::parse).transpose()?;
    let every = args.side_share + 1;
    let timeout = Duration::from_secs_f64(args.timeout);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(1000);
    let end = start + Duration::from_secs_f64(args.duration);
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));

    let mut workers = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        let (next, bodies) = (next.clone(), bodies.clone());
        let (main_target, side_target, ct) = (
            main_target.clone(),
            side_target.clone(),
            args.content_type.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut s = Samples::default();
            let mut conn: Option<Conn> = None;
            let mut side_conn: Option<Conn> = None;
            // Connect before the clock starts: a thousand connects at once can overflow the
            // listen backlog, and a dropped SYN costs a 1 s retransmit inside the window.
            let _ = connect(&mut conn, &main_target.authority).await;
            if let Some(side) = &side_target {
                let _ = connect(&mut side_conn, &side.authority).await;
            }
            tokio::time::sleep_until(start).await;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let scheduled = match interval {
                    Some(iv) => {
                        let at = start + iv.mul_f64(i as f64);
                        if at >= end {
                            break;
                        }
                        tokio::time::sleep_until(at).await;
                        if Instant::now().duration_since(at) > Duration::from_millis(10) {
                            s.late += 1;
                        }
                        at
                    }
                    None => {
                        let now = Instant::now();
                        if now >= end {
                            break;
                        }
                        now
                    }
                };
                let body = bodies[i as usize % bodies.len()].clone();
                if let Some(side) = side_target.as_ref().filter(|_| i % every != 0) {
                    match send_within(&mut side_conn, side, &ct, body, timeout).await {
                        Ok((status, _)) => *s.side_by_status.entry(status).or_default() += 1,
                        Err(()) => s.errors += 1,
                    }
                    continue;
                }
                let sent_at = Instant::now();
                match send_within(&mut conn, &main_target, &ct, body, timeout).await {
                    Ok((status, has_retry_after)) => {
                        if status == 429 && !has_retry_after {
                            s.missing_retry_after += 1;
                        }
                        let us = scheduled.elapsed().as_micros().min(u32::MAX as u128) as u32;
                        *s.by_status.entry(status).or_default() += 1;
                        if (200..300).contains(&status) {
                            s.accepted_us.push(us);
                            s.accepted_at_ms.push(
                                scheduled
                                    .duration_since(start)
                                    .as_millis()
                                    .min(u32::MAX as u128) as u32,
                            );
                            s.accepted_service_us
                                .push(sent_at.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        } else {
                            s.refused_us.push(us);
                        }
                    }
                    Err(()) => s.errors += 1,
                }
            }
            s
        }));
    }
    let mut all = Samples::default();
    for w in workers {
        let s = w.await?;
        for (k, v) in s.by_status {
            *all.by_status.entry(k).or_default() += v;
        }
        all.accepted_us.extend(s.accepted_us);
        all.accepted_at_ms.extend(s.accepted_at_ms);
        all.accepted_service_us.extend(s.accepted_service_us);
        all.refused_us.extend(s.refused_us);
        all.errors += s.errors;
        all.missing_retry_after += s.missing_retry_after;
        all.late += s.late;
        for (k, v) in s.side_by_status {
            *all.side_by_status.entry(k).or_default() += v;
        }
    }
    // Rates over the real elapsed time (to the last answer), not the nominal duration: when
    // the generator or the server falls behind, the run stretches and the rates show it.
    let seconds = start.elapsed().as_secs_f64().max(args.duration);
    let accepted = all.accepted_us.len() as u64;
    let total: u64 = all.by_status.values().sum::<u64>() + all.errors;
    let timeline = timeline(&all.accepted_at_ms, &all.accepted_us);
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
            "by_status": all.by_status.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "errors": all.errors,
            "missing_retry_after": all.missing_retry_after,
            "late_starts": all.late,
            "accepted_latency": percentiles(&mut all.accepted_us),
            "accepted_service_latency": percentiles(&mut all.accepted_service_us),
            "refused_latency": percentiles(&mut all.refused_us),
            "timeline": timeline,
            "side": args.side_url.as_ref().map(|_| {
                let n: u64 = all.side_by_status.values().sum();
                serde_json::json!({
                    "requests": n,
                    "sent_per_sec": n as f64 / seconds,
                    "by_status": all.side_by_status.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
                })
            }),
        })
    );
    Ok(())
}

/// Accepted answers per second of scheduled time: how many, and their p99 and max latency
/// (shows whether a tail comes from one moment, e.g. a burst at the start, or from all of it).
fn timeline(at_ms: &[u32], latency_us: &[u32]) -> serde_json::Value {
    let mut seconds: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (&at, &us) in at_ms.iter().zip(latency_us) {
        seconds.entry(at / 1000).or_default().push(us);
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

type Conn = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One request on the worker's own keep-alive connection (opened on first use): status and
/// whether a `Retry-After` header came with it. The body is read to the end.
async fn send(
    conn: &mut Option<Conn>,
    authority: &hyper::http::uri::Authority,
    path: &str,
    content_type: &str,
    body: Bytes,
) -> Result<(u16, bool), ()> {
    connect(conn, authority).await?;
    let sender = conn.as_mut().ok_or(())?;
    sender.ready().await.map_err(|_| ())?;
    let request = hyper::Request::post(path)
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(body))
        .map_err(|_| ())?;
    let response = sender.send_request(request).await.map_err(|_| ())?;
    let status = response.status().as_u16();
    let has_retry_after = response.headers().contains_key(hyper::header::RETRY_AFTER);
    response.into_body().collect().await.map_err(|_| ())?;
    Ok((status, has_retry_after))
}

/// [`send`] within `timeout`. A failure drops the connection, so the next request starts
/// over on a fresh one.
async fn send_within(
    conn: &mut Option<Conn>,
    target: &Target,
    content_type: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<(u16, bool), ()> {
    let sent = tokio::time::timeout(
        timeout,
        send(conn, &target.authority, &target.path, content_type, body),
    )
    .await
    .unwrap_or(Err(()));
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

fn bytes_of(path: &std::path::Path) -> std::io::Result<Bytes> {
    Ok(Bytes::from(std::fs::read(path)?))
}
