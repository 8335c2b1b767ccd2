//! The one HTTP load generator (`bench/run.sh`, `integration-tests/test-backpressure.sh`).
//!
//! Every worker opens its keep-alive connection before the clock starts. Request `i` is
//! scheduled at `start + i / rate`; `--concurrency` workers send them and every latency counts
//! from the scheduled time, so queueing delay shows (no coordinated omission). `--rate 0` is
//! closed loop (each worker sends back to back): P1–P3. Bodies: the `--body` files in turn
//! (`.ndjson` ones as application/x-ndjson), or fresh events with unique ids, appended to
//! `--ids` when accepted so that a test can find each in the database.
//!
//! Prints one JSON line: counts per status, accepted requests and events per second, latency
//! percentiles of the accepted answers (also from the actual send), 429s without a
//! `Retry-After` of at least 1 s, requests that started > 10 ms late (the generator fell
//! behind), and per-second timelines of the accepted answers.

use bench_baselines::percentiles;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::http::uri::Authority;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

type Error = Box<dyn std::error::Error>;
type Conn = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

#[derive(Parser)]
struct Args {
    /// Target URL (loopback only).
    #[arg(long)]
    url: String,
    /// Send 2 requests in 3 here instead (P5's bound run: the overload's excess on bare axum).
    #[arg(long)]
    side_url: Option<String>,
    #[arg(long)]
    body: Vec<std::path::PathBuf>,
    /// Events per request (fresh bodies: an array when > 1).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Severity of the fresh events.
    #[arg(long, default_value = "INFO")]
    severity: String,
    #[arg(long)]
    ids: Option<std::path::PathBuf>,
    /// Requests per second; 0 = closed loop.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
}

struct Target {
    authority: Authority,
    path: String,
    content_type: &'static str,
}

impl Target {
    fn parse(url: &str, content_type: &'static str) -> Result<Arc<Target>, Error> {
        let uri: hyper::Uri = url.parse()?;
        let authority = uri.authority().ok_or("the URL has no host:port")?.clone();
        let host = authority.host().trim_matches(['[', ']']);
        if host != "localhost" && !host.parse::<std::net::IpAddr>()?.is_loopback() {
            return Err(format!("refusing non-loopback URL {url}").into());
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        Ok(Arc::new(Target {
            authority,
            path,
            content_type,
        }))
    }
}

/// One scheduled request: `None` status when it failed (timeout, connection).
struct Outcome {
    scheduled_ms: u32,
    latency_us: u32,
    service_us: u32,
    status: Option<u16>,
    side: bool,
    retry_after_ok: bool,
    late: bool,
    ids: Vec<uuid::Uuid>,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Arc::new(Args::parse());
    let files = args
        .body
        .iter()
        .map(std::fs::read)
        .collect::<Result<Vec<_>, _>>()?;
    let files: Arc<Vec<Bytes>> = Arc::new(files.into_iter().map(Bytes::from).collect());
    let ndjson = args
        .body
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "ndjson"));
    let content_type = if ndjson {
        "application/x-ndjson"
    } else {
        "application/json"
    };
    let main_target = Target::parse(&args.url, content_type)?;
    let side_target = match &args.side_url {
        Some(url) => Some(Target::parse(url, content_type)?),
        None => None,
    };
    // Connect before the clock starts: a thousand connects at once can overflow the listen
    // backlog, and a dropped SYN costs a 1 s retransmit.
    let mut connecting = Vec::new();
    for _ in 0..args.concurrency {
        let (main_target, side_target) = (main_target.clone(), side_target.clone());
        connecting.push(tokio::spawn(async move {
            let side = match side_target {
                Some(t) => connect(&t.authority).await,
                None => None,
            };
            (connect(&main_target.authority).await, side)
        }));
    }
    let mut conns = Vec::new();
    for c in connecting {
        conns.push(c.await?);
    }
    let start = Instant::now();
    let start_unix_ms = now_ms();
    let end = start + Duration::from_secs_f64(args.duration);
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for (mut conn, mut side_conn) in conns {
        let (args, next, files) = (args.clone(), next.clone(), files.clone());
        let (main_target, side_target) = (main_target.clone(), side_target.clone());
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                // Closed loop: no timer at all, so its cost does not count against P1–P3.
                let scheduled =
                    interval.map_or_else(Instant::now, |iv| start + iv.mul_f64(i as f64));
                if scheduled >= end {
                    return out;
                }
                let mut late = false;
                if interval.is_some() {
                    tokio::time::sleep_until(scheduled).await;
                    late = scheduled.elapsed() > Duration::from_millis(10);
                }
                let (body, ids) = if files.is_empty() {
                    fresh_events(args.batch, &args.severity, now_ms())
                } else {
                    (files[i as usize % files.len()].clone(), Vec::new())
                };
                let (target, conn, side) = match &side_target {
                    Some(t) if i % 3 != 0 => (t, &mut side_conn, true),
                    _ => (&main_target, &mut conn, false),
                };
                let sent_at = Instant::now();
                let answer = send(conn, target, body).await;
                out.push(Outcome {
                    scheduled_ms: micros(scheduled - start) / 1000,
                    latency_us: micros(scheduled.elapsed()),
                    service_us: micros(sent_at.elapsed()),
                    status: answer.map(|(s, _)| s),
                    side,
                    retry_after_ok: answer.is_some_and(|(_, ok)| ok),
                    late,
                    ids,
                });
            }
        }));
    }
    let (mut by_status, mut side_by_status) = (BTreeMap::new(), BTreeMap::new());
    let (mut errors, mut missing_retry_after, mut late) = (0u64, 0u64, 0u64);
    let mut accepted = Vec::new();
    let mut accepted_ids = Vec::new();
    for w in workers {
        for o in w.await? {
            late += u64::from(o.late);
            let Some(status) = o.status else {
                errors += 1;
                continue;
            };
            if o.side {
                *side_by_status.entry(status.to_string()).or_insert(0u64) += 1;
                continue;
            }
            *by_status.entry(status.to_string()).or_insert(0u64) += 1;
            missing_retry_after += u64::from(status == 429 && !o.retry_after_ok);
            if (200..300).contains(&status) {
                accepted.push((o.scheduled_ms, o.latency_us, o.service_us));
                accepted_ids.extend(o.ids);
            }
        }
    }
    // Rates over the real elapsed time (to the last answer), not the nominal duration: when
    // the generator or the server falls behind, the run stretches and the rates show it.
    let seconds = start.elapsed().as_secs_f64().max(args.duration);
    if let Some(path) = &args.ids {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        for id in &accepted_ids {
            writeln!(f, "{id}")?;
        }
    }
    let n = accepted.len() as u64;
    let events = n * args.batch as u64;
    let (mut latency, mut service): (Vec<u32>, Vec<u32>) =
        accepted.iter().map(|&(_, us, svc)| (us, svc)).unzip();
    let requests = by_status.values().sum::<u64>() + errors;
    let summary = serde_json::json!({
        "offered_rate": args.rate, "seconds": seconds, "nominal_seconds": args.duration,
        "requests": requests, "sent_per_sec": requests as f64 / seconds,
        "accepted": n, "accepted_per_sec": n as f64 / seconds,
        "accepted_events": events, "accepted_events_per_sec": events as f64 / seconds,
        "by_status": by_status, "errors": errors, "missing_retry_after": missing_retry_after,
        "late_starts": late, "accepted_latency": percentiles(&mut latency),
        "accepted_service_latency": percentiles(&mut service),
        "timeline": timeline(&accepted), "start_unix_ms": start_unix_ms,
        "answered_per_second": answered_per_second(&accepted),
        "side_by_status": side_target.map(|_| side_by_status),
    });
    println!("{summary}");
    Ok(())
}

/// A body of `batch` fresh events (an object when 1, else an array), each with its own
/// eventId and correlationId, and those ids.
fn fresh_events(batch: usize, severity: &str, now_ms: i64) -> (Bytes, Vec<uuid::Uuid>) {
    let ids: Vec<uuid::Uuid> = (0..batch.max(1)).map(|_| uuid::Uuid::new_v4()).collect();
    let event = |id: &uuid::Uuid| {
        serde_json::json!({
            "eventId": id, "correlationId": format!("loadgen-{}", id.simple()),
            "severity": severity, "message": "scenario event", "source": "loadgen",
            "timestamp": now_ms,
        })
    };
    let body = match ids.as_slice() {
        [one] => event(one),
        many => many.iter().map(event).collect(),
    };
    (body.to_string().into(), ids)
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as i64)
}

/// Accepted answers per second of scheduled time, with their p99 and max latency: shows
/// whether a tail comes from one moment (a burst at the start) or from all of it.
fn timeline(accepted: &[(u32, u32, u32)]) -> serde_json::Value {
    let mut seconds: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &(at_ms, us, _) in accepted {
        seconds.entry(at_ms / 1000).or_default().push(us);
    }
    let per_second = seconds.into_iter().map(|(second, mut v)| {
        let p = percentiles(&mut v);
        serde_json::json!({
            "second": second, "accepted": v.len(), "p99_ms": p["p99_ms"], "max_ms": p["max_ms"],
        })
    });
    per_second.collect()
}

/// 2xx answers per second of *answer* time (P7: what a client sees while a broker fails over).
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

/// One request within 30 s: the status and whether a 429's `Retry-After` holds whole seconds
/// ≥ 1. A failure drops the connection, so the next request opens a fresh one.
async fn send(conn: &mut Option<Conn>, target: &Target, body: Bytes) -> Option<(u16, bool)> {
    let once = async {
        if !conn.as_ref().is_some_and(|c| !c.is_closed()) {
            *conn = connect(&target.authority).await;
        }
        let sender = conn.as_mut()?;
        sender.ready().await.ok()?;
        let request = hyper::Request::post(target.path.as_str())
            .header(hyper::header::HOST, target.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, target.content_type)
            .body(Full::new(body))
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        let retry_after = response.headers().get(hyper::header::RETRY_AFTER);
        let secs = retry_after.and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let status = response.status().as_u16();
        response.into_body().collect().await.ok()?;
        Some((status, secs.is_some_and(|s| s >= 1)))
    };
    let answer = tokio::time::timeout(Duration::from_secs(30), once)
        .await
        .ok()
        .flatten();
    if answer.is_none() {
        *conn = None;
    }
    answer
}

async fn connect(authority: &Authority) -> Option<Conn> {
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .ok()?;
    stream.set_nodelay(true).ok()?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (sender, connection) = hyper::client::conn::http1::handshake(io).await.ok()?;
    tokio::spawn(connection);
    Some(sender)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fresh_events_are_an_object_or_an_array_with_their_ids() {
        let (one, ids) = super::fresh_events(1, "ERROR", 1_763_800_000_000);
        let ev: serde_json::Value = serde_json::from_slice(&one).unwrap();
        assert_eq!(ev["eventId"], ids[0].to_string());
        assert_eq!(ev["severity"], "ERROR");
        let (many, ids) = super::fresh_events(3, "INFO", 1_763_800_000_000);
        let evs: Vec<serde_json::Value> = serde_json::from_slice(&many).unwrap();
        let got: Vec<_> = evs.iter().map(|e| e["eventId"].as_str().unwrap()).collect();
        assert_eq!(got, ids.iter().map(|i| i.to_string()).collect::<Vec<_>>());
        assert_ne!(ids[0], ids[1]);
    }
}
