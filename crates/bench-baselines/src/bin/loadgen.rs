//! The one HTTP load generator (`bench/run.sh`, `integration-tests/test-backpressure.sh`).
//!
//! Every worker opens its keep-alive connection before the clock starts. Request `i` is
//! scheduled at `start + i / rate`; `--concurrency` workers send them and every latency counts
//! from the scheduled time, so queueing delay shows (no coordinated omission). `--rate 0` is
//! closed loop (each worker sends back to back): P1–P3. Bodies are the bench's events, built
//! once; `--fresh` ones get a unique eventId each, appended to `--ids` when accepted, so that a
//! test can find each in the database.
//!
//! Prints one JSON line: counts per status, accepted requests and events per second, latency
//! percentiles of the accepted answers (also from the actual send), 429s without a
//! `Retry-After` of at least 1 s, requests that started > 10 ms late (the generator fell
//! behind), and accepted answers per second of answer time.

use bench_baselines::percentiles;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
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
    /// Events per request (an NDJSON body when > 1).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Every Nth event is an error (0: none); 10 is a log stream's usual share.
    #[arg(long, default_value_t = 0)]
    error_every: usize,
    #[arg(long, default_value = "info")]
    severity: String,
    /// A unique eventId per event, correlationIds over 1024 keys (every partition carries load).
    #[arg(long)]
    fresh: bool,
    /// Implies --fresh.
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

impl Args {
    fn fresh(&self) -> bool {
        self.fresh || self.ids.is_some()
    }

    /// Request `k`'s body: events `k * batch ..` and their ids when fresh.
    fn body(&self, k: usize, now_ms: i64) -> (Bytes, Vec<uuid::Uuid>) {
        let mut ids = Vec::new();
        let mut lines = Vec::new();
        for i in k * self.batch..(k + 1) * self.batch {
            let error = self.error_every > 0 && i % self.error_every == self.error_every - 1;
            // Single events: one correlationId (one partition), as one client's session.
            let n = if self.batch == 1 && !self.fresh() {
                7 + usize::from(error)
            } else {
                i % 1024
            };
            let mut ev = serde_json::json!({
                "correlationId": format!("bench-{n}"), "source": "bench-service",
                "severity": if error { "error" } else { self.severity.as_str() },
                "message": "user logged in from a benchmark client with a moderately long message",
                "timestamp": now_ms, "attributes": {"userId": n % 10_000, "region": "eu-west-1"},
            });
            if self.fresh() {
                ids.push(uuid::Uuid::new_v4());
                ev["eventId"] = serde_json::json!(ids[ids.len() - 1]);
            }
            lines.push(ev.to_string());
        }
        (lines.join("\n").into(), ids)
    }
}

fn target(url: &str) -> Result<Arc<hyper::Uri>, Error> {
    let uri: hyper::Uri = url.parse()?;
    let host = uri
        .host()
        .ok_or("the URL has no host")?
        .trim_matches(['[', ']']);
    if host != "localhost" && !host.parse::<std::net::IpAddr>()?.is_loopback() {
        return Err(format!("refusing non-loopback URL {url}").into());
    }
    uri.port().ok_or("the URL has no port")?;
    Ok(Arc::new(uri))
}

/// One scheduled request: `answer` is `None` when it failed (timeout, connection).
struct Outcome {
    scheduled_ms: u32,
    latency_us: u32,
    service_us: u32,
    answer: Option<(u16, bool)>,
    side: bool,
    late: bool,
    ids: Vec<uuid::Uuid>,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Arc::new(Args::parse());
    // Not fresh: bodies built once, as many as the error pattern needs.
    let (content_type, reused) = match args.batch {
        1 => ("application/json", args.error_every.max(1)),
        _ => ("application/x-ndjson", 1),
    };
    let bodies: Arc<Vec<Bytes>> = Arc::new((0..reused).map(|k| args.body(k, now_ms()).0).collect());
    let main_target = target(&args.url)?;
    let side_target = args.side_url.as_deref().map(target).transpose()?;
    // Connect before the clock starts, one at a time: a thousand connects at once can overflow
    // the listen backlog, and a dropped SYN costs a 1 s retransmit.
    let mut conns = Vec::new();
    for _ in 0..args.concurrency {
        let side = match &side_target {
            Some(t) => connect(t).await,
            None => None,
        };
        conns.push((connect(&main_target).await, side));
    }
    let start = Instant::now();
    let start_unix_ms = now_ms();
    let end = start + Duration::from_secs_f64(args.duration);
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for (mut conn, mut side_conn) in conns {
        let (args, next, bodies) = (args.clone(), next.clone(), bodies.clone());
        let (main_target, side_target) = (main_target.clone(), side_target.clone());
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
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
                let (body, ids) = match args.fresh() {
                    true => args.body(i, now_ms()),
                    false => (bodies[i % bodies.len()].clone(), Vec::new()),
                };
                let (target, conn, side) = match &side_target {
                    Some(t) if i % 3 != 0 => (t, &mut side_conn, true),
                    _ => (&main_target, &mut conn, false),
                };
                let sent_at = Instant::now();
                let answer = send(conn, target, content_type, body).await;
                out.push(Outcome {
                    scheduled_ms: micros(scheduled - start) / 1000,
                    latency_us: micros(scheduled.elapsed()),
                    service_us: micros(sent_at.elapsed()),
                    answer,
                    side,
                    late,
                    ids,
                });
            }
        }));
    }
    let mut by_status = BTreeMap::new();
    let (mut errors, mut missing_retry_after, mut late) = (0u64, 0u64, 0u64);
    let (mut accepted, mut accepted_ids) = (Vec::new(), Vec::new());
    for w in workers {
        for o in w.await? {
            late += u64::from(o.late);
            let Some((status, retry_after_ok)) = o.answer else {
                errors += 1;
                continue;
            };
            if o.side {
                continue;
            }
            *by_status.entry(status.to_string()).or_insert(0u64) += 1;
            missing_retry_after += u64::from(status == 429 && !retry_after_ok);
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
            .append(true)
            .create(true)
            .open(path)?;
        accepted_ids.iter().try_for_each(|id| writeln!(f, "{id}"))?;
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
        "start_unix_ms": start_unix_ms,
        "answered_per_second": answered_per_second(&accepted),
    });
    println!("{summary}");
    Ok(())
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as i64)
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
async fn send(
    conn: &mut Option<Conn>,
    target: &hyper::Uri,
    content_type: &str,
    body: Bytes,
) -> Option<(u16, bool)> {
    let once = async {
        if !conn.as_ref().is_some_and(|c| !c.is_closed()) {
            *conn = connect(target).await;
        }
        let sender = conn.as_mut()?;
        sender.ready().await.ok()?;
        let request = hyper::Request::post(target.path())
            .header(hyper::header::HOST, target.authority()?.as_str())
            .header(hyper::header::CONTENT_TYPE, content_type)
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

async fn connect(target: &hyper::Uri) -> Option<Conn> {
    let stream = tokio::net::TcpStream::connect(target.authority()?.as_str())
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
    use clap::Parser;

    fn events(argv: &str, k: usize) -> (Vec<serde_json::Value>, Vec<uuid::Uuid>) {
        let args = super::Args::parse_from(format!("loadgen --url x {argv}").split_whitespace());
        let (body, ids) = args.body(k, 1_763_800_000_000);
        let lines = body.split(|&b| b == b'\n');
        (
            lines.map(|l| serde_json::from_slice(l).unwrap()).collect(),
            ids,
        )
    }

    #[test]
    fn bodies_are_ndjson_batches_with_every_nth_an_error_and_fresh_ids() {
        let (evs, ids) = events("--batch 3 --error-every 2 --ids f", 1);
        let field = |k: &str| {
            evs.iter()
                .map(|e| e[k].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(field("severity"), ["error", "info", "error"]);
        assert_eq!(
            field("eventId"),
            ids.iter().map(|i| i.to_string()).collect::<Vec<_>>()
        );
        assert_eq!(field("correlationId"), ["bench-3", "bench-4", "bench-5"]);
        assert_ne!(ids[0], ids[1]);
    }

    #[test]
    fn single_events_share_one_key_unless_fresh() {
        assert_eq!(events("", 5).0[0]["correlationId"], "bench-7");
        assert_eq!(
            events("--error-every 10", 9).0[0]["correlationId"],
            "bench-8"
        );
        assert_eq!(events("--fresh", 5).0[0]["correlationId"], "bench-5");
    }
}
