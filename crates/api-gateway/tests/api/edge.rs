//! The HTTP edge under abuse: slow clients (half headers, trickled bodies) are cut off at
//! their deadlines while a normal client keeps being served; past the connection cap new
//! connections are refused at once; idle keep-alives close after the idle timeout (not the
//! header timeout); header limits answer 431.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{event, sample, TestGateway};

/// Slack for deadlines on a loaded two-core machine: a socket must be closed within its
/// timeout plus this.
const MARGIN: Duration = Duration::from_secs(3);

/// The real gateway binary on its own topic, killed when dropped.
struct GatewayProcess {
    child: Child,
    base: String,
}

impl GatewayProcess {
    async fn spawn(env: &[(&str, &str)]) -> GatewayProcess {
        let brokers = test_support::broker().brokers();
        let topic = test_support::unique("edge");
        test_support::create_topic(&brokers, &topic, 3).await;
        let port = test_support::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_api-gateway"))
            .env("GATEWAY_ADDR", format!("127.0.0.1:{port}"))
            .env("KAFKA_BROKERS", &brokers)
            .env("KAFKA_TOPIC", &topic)
            .env("REDIS_URL", "")
            .env("LOG_FORMAT", "text")
            .envs(env.iter().copied())
            // Into the test's captured output: shown when the test fails.
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn api-gateway");
        let gw = GatewayProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let ready = test_support::wait_until(Duration::from_secs(30), || async {
            matches!(client.get(format!("{}/health/ready", gw.base)).send().await, Ok(r) if r.status() == 200)
        })
        .await;
        assert!(ready, "gateway never became ready");
        gw
    }

    fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a slow client misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slow {
    /// Half a request head, then a header byte every trickle.
    Head,
    /// A full head declaring 100 000 bytes of body, then a body byte every trickle.
    Body,
}

#[derive(Debug)]
struct Outcome {
    kind: Slow,
    /// From the moment the misbehaviour's clock starts (connected for `Head`, head sent for
    /// `Body`) to EOF or reset; `None` if still open when the client gave up.
    closed_after: Option<Duration>,
    answer: Vec<u8>,
    /// Ended by a reset rather than EOF.
    reset: bool,
}

async fn slow_client(addr: String, kind: Slow, trickle: Duration, give_up: Duration) -> Outcome {
    let mut tcp = TcpStream::connect(&addr)
        .await
        .unwrap_or_else(|e| panic!("connect: {e} ({:?})", e.kind()));
    let started = Instant::now();
    let first: &[u8] = match kind {
        Slow::Head => b"POST /api/logs HTTP/1.1\r\nhost: gw\r\ncontent-type: applic",
        Slow::Body => {
            b"POST /api/logs HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{"
        }
    };
    let written = tcp.write_all(first).await;
    let started = if kind == Slow::Body {
        Instant::now()
    } else {
        started
    };
    let mut outcome = Outcome {
        kind,
        closed_after: None,
        answer: Vec::new(),
        reset: false,
    };
    if written.is_err() {
        outcome.closed_after = Some(started.elapsed());
        outcome.reset = true;
        return outcome;
    }
    let mut buf = [0u8; 1024];
    let mut tick = tokio::time::interval_at((Instant::now() + trickle).into(), trickle);
    loop {
        tokio::select! {
            read = tcp.read(&mut buf) => match read {
                Ok(0) => break,
                Ok(n) => outcome.answer.extend_from_slice(&buf[..n]),
                Err(_) => {
                    outcome.reset = true;
                    break;
                }
            },
            _ = tick.tick() => {
                if started.elapsed() > give_up {
                    return outcome;
                }
                if tcp.write_all(b"a").await.is_err() {
                    outcome.reset = true;
                    break;
                }
            }
        }
    }
    outcome.closed_after = Some(started.elapsed());
    outcome
}

/// One slow client after another on the same task until `until`: an attacker reconnects.
async fn slow_clients_until(
    addr: String,
    kind: Slow,
    trickle: Duration,
    give_up: Duration,
    until: Instant,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    while Instant::now() < until {
        outcomes.push(slow_client(addr.clone(), kind, trickle, give_up).await);
    }
    outcomes
}

/// p50, p99 and max (nearest rank).
fn percentiles(mut latencies: Vec<Duration>) -> (Duration, Duration, Duration) {
    latencies.sort();
    let at = |p: usize| latencies[(latencies.len() * p).div_ceil(100).saturating_sub(1)];
    (at(50), at(99), latencies[latencies.len() - 1])
}

/// Requests sent before the abuse starts and not measured: the first produce to a new topic
/// and the first connection cost a few hundred milliseconds that have nothing to do with it.
const WARM_UP: usize = 20;

/// Sends single events one after the other: `WARM_UP` of them, then sets `warm` and goes on
/// until `over` (and at least 100 more); every latency after the warm-up, and what was not
/// a 202.
async fn normal_client(
    url: String,
    warm: Arc<AtomicBool>,
    over: Arc<AtomicBool>,
) -> (Vec<Duration>, Vec<String>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let mut i = 0;
    while !over.load(Ordering::Relaxed) || latencies.len() < 100 {
        i += 1;
        if i == WARM_UP + 1 {
            latencies.clear();
            warm.store(true, Ordering::Relaxed);
        }
        let sent = Instant::now();
        let result = client
            .post(&url)
            .header("content-type", "application/json")
            .body(event("info", i).to_string())
            .send()
            .await;
        latencies.push(sent.elapsed());
        match result {
            Ok(r) if r.status() == 202 => {}
            Ok(r) => failures.push(format!("status {}", r.status())),
            Err(e) => failures.push(e.to_string()),
        }
    }
    (latencies, failures)
}

// One worker for the slow clients: on two cores the gateway keeps the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn two_thousand_slow_sockets_are_cut_off_while_a_normal_client_is_served() {
    const SLOW_SOCKETS: usize = 2000;
    const ABUSE: Duration = Duration::from_secs(6);
    let timeout = Duration::from_millis(2000);
    // The test process holds one socket per slow client; the gateway raises its own limit.
    let fds = rlimit::increase_nofile_limit(u64::MAX).expect("open-file limit");
    assert!(
        fds > SLOW_SOCKETS as u64 + 500,
        "the open-file hard limit ({fds}) is too low for this test; raise `ulimit -Hn`"
    );
    let ms = timeout.as_millis().to_string();
    let gw = GatewayProcess::spawn(&[
        ("HTTP_HEADER_READ_TIMEOUT_MS", &ms),
        ("HTTP_BODY_READ_TIMEOUT_MS", &ms),
        // Admission must let every slow body in, so the body deadline is what ends it.
        ("RATE_MAX", "1000000"),
        ("RATE_MIN", "1000000"),
        ("RATE_BURST_MAX_EVENTS", "0"),
        ("RATE_BURST_MS", "1000"),
    ])
    .await;

    // A normal client sends single events, one at a time, for as long as the abuse lasts. It
    // runs on its own thread and runtime, as another process would: what it measures is the
    // gateway, not this test's 2 000 slow-client tasks.
    let warm = Arc::new(AtomicBool::new(false));
    let abuse_over = Arc::new(AtomicBool::new(false));
    let normal = {
        let url = format!("{}/api/logs", gw.base);
        let (warm, over) = (warm.clone(), abuse_over.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(normal_client(url, warm, over))
        })
    };
    let warmed = test_support::wait_until(Duration::from_secs(30), || async {
        warm.load(Ordering::Relaxed)
    })
    .await;
    assert!(warmed, "the normal client's warm-up did not finish");

    let give_up = timeout + MARGIN + Duration::from_secs(10);
    // Under the timeout, so a timer that restarts on every byte would never fire.
    let trickle = Duration::from_millis(700);
    // 2 000 slow sockets open at all times for 6 s, each replaced as soon as it is closed:
    // the normal client's p99 then rests on several hundred requests, and a lone stall of
    // a loaded machine is not its 99th percentile.
    let until = Instant::now() + ABUSE;
    let mut slow = Vec::with_capacity(SLOW_SOCKETS);
    for i in 0..SLOW_SOCKETS {
        let kind = if i % 2 == 0 { Slow::Head } else { Slow::Body };
        slow.push(tokio::spawn(slow_clients_until(
            gw.addr(),
            kind,
            trickle,
            give_up,
            until,
        )));
        // Waves of 100 every 50 ms: the listen backlog never overflows, and the deadlines
        // fall over a second, not all at once.
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut outcomes = Vec::new();
    for task in slow {
        outcomes.extend(task.await.expect("slow client"));
    }
    abuse_over.store(true, Ordering::Relaxed);
    let (latencies, failures) = normal.join().expect("normal client");

    let sent = latencies.len();
    let (p50, p99, max) = percentiles(latencies);
    let mut worst = Duration::ZERO;
    let mut earliest = Duration::MAX;
    let mut answered_408 = 0;
    for o in &outcomes {
        let closed = o.closed_after.unwrap_or_else(|| {
            panic!(
                "a {:?} slow socket was still open after {give_up:?}",
                o.kind
            )
        });
        assert!(
            closed <= timeout + MARGIN,
            "a {:?} slow socket was closed only after {closed:?}",
            o.kind
        );
        // Not closed early by something else. Half the timeout, not more: the client starts
        // its clock when its task next runs, which on a loaded machine can be well after the
        // server started its own.
        assert!(
            closed >= timeout / 2,
            "a {:?} slow socket was closed after {closed:?}, before its deadline",
            o.kind
        );
        if o.kind == Slow::Body {
            // The server closes with the client's latest bytes unread, so the kernel sends a
            // reset, which destroys the 408 if the client had not read it yet (hyper does no
            // lingering close): a 408, or else a reset, never a silent EOF.
            let got_408 = o.answer.starts_with(b"HTTP/1.1 408");
            assert!(
                got_408 || (o.answer.is_empty() && o.reset),
                "a trickled body got {:?}",
                String::from_utf8_lossy(&o.answer)
            );
            answered_408 += usize::from(got_408);
        }
        worst = worst.max(closed);
        earliest = earliest.min(closed);
    }
    let bodies = outcomes.iter().filter(|o| o.kind == Slow::Body).count();
    println!(
        "normal client: {sent} requests, p50 {p50:?}, p99 {p99:?}, max {max:?}; {} slow sockets ({SLOW_SOCKETS} at a time) closed after {earliest:?}..{worst:?} (timeout {timeout:?}); {answered_408} of {bodies} trickled bodies read their 408",
        outcomes.len()
    );
    assert!(
        answered_408 * 2 >= bodies,
        "only {answered_408} of {bodies} trickled bodies read their 408"
    );
    assert!(
        failures.is_empty(),
        "the normal client was not always answered 202: {failures:?}"
    );
    assert!(
        p99 < Duration::from_millis(100),
        "the normal client's p99 was {p99:?}"
    );

    let metrics = reqwest::get(format!("{}/metrics", gw.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let timed_out = sample(
        &metrics,
        "http_connections_timed_out_total{listener=\"api\",reason=\"header_timeout\"}",
    );
    let heads = outcomes.iter().filter(|o| o.kind == Slow::Head).count();
    assert!(
        timed_out >= heads as f64,
        "header timeouts counted: {timed_out}, slow heads: {heads}"
    );
}

/// A raw keep-alive GET; returns the connection and the time the whole answer was read.
async fn get_keep_alive(tcp: &mut TcpStream, path: &str) -> Instant {
    let request = format!("GET {path} HTTP/1.1\r\nhost: gw\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"}") {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .expect("read");
        assert!(n > 0, "closed before answering: {answer:?}");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    Instant::now()
}

/// Waits for EOF or reset; the time it came.
async fn closed_by_peer(tcp: &mut TcpStream, within: Duration) -> Instant {
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(within, tcp.read(&mut buf)).await;
    match read {
        Ok(Ok(0)) | Ok(Err(_)) => Instant::now(),
        Ok(Ok(n)) => panic!("unexpected bytes: {:?}", &buf[..n]),
        Err(_) => panic!("still open after {within:?}"),
    }
}

#[tokio::test]
async fn an_idle_keep_alive_outlives_the_header_timeout_and_closes_at_the_idle_timeout() {
    let header = Duration::from_millis(1000);
    let idle = Duration::from_millis(3000);
    let gw = TestGateway::start(&[
        "--redis-url=",
        &format!("--http-header-read-timeout-ms={}", header.as_millis()),
        &format!("--http-idle-timeout-ms={}", idle.as_millis()),
    ])
    .await;
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    get_keep_alive(&mut tcp, "/health/live").await;

    // Idle for twice the header timeout: still served on the same connection.
    tokio::time::sleep(header * 2).await;
    let answered = get_keep_alive(&mut tcp, "/health/live").await;

    let closed = closed_by_peer(&mut tcp, idle + MARGIN).await;
    let idle_for = closed - answered;
    println!("idle keep-alive closed after {idle_for:?} (idle timeout {idle:?})");
    assert!(
        idle_for >= idle.mul_f64(0.9),
        "closed after {idle_for:?}, before the idle timeout"
    );
    let counted = gw
        .metric("http_connections_timed_out_total{listener=\"api\",reason=\"idle_timeout\"}")
        .await;
    // At least ours (the harness's own pooled client may idle out too).
    assert!(counted >= 1.0, "idle timeouts counted: {counted}");
    gw.stop().await;
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_are_refused_at_once() {
    const CAP: usize = 50;
    // Metrics on their own address, which the API's cap does not reach; long header timeout
    // so the held connections stay open on their own.
    let gw = TestGateway::start(&[
        "--redis-url=",
        "--ops-addr=127.0.0.1:0",
        &format!("--http-max-connections={CAP}"),
        "--http-header-read-timeout-ms=60000",
    ])
    .await;
    let open = "http_connections_open{listener=\"api\"}";
    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(TcpStream::connect(gw.addr()).await.unwrap());
    }
    let all_held = test_support::wait_until(Duration::from_secs(10), || async {
        gw.metric(open).await == CAP as f64
    })
    .await;
    assert!(
        all_held,
        "the gateway does not count {CAP} open connections"
    );

    let refused_at = Instant::now();
    for i in 0..10 {
        let mut extra = TcpStream::connect(gw.addr()).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("connection {} over the cap was left open", CAP + i));
        // A 503 if it got there before the close, else the close itself (EOF or reset).
        if read.is_ok() && !answer.is_empty() {
            assert!(answer.starts_with(b"HTTP/1.1 503"), "{answer:?}");
        }
    }
    println!(
        "10 connections over the cap refused in {:?}",
        refused_at.elapsed()
    );
    assert_eq!(
        gw.metric("http_connections_refused_total{listener=\"api\"}")
            .await,
        10.0
    );
    assert_eq!(gw.metric(open).await, CAP as f64);

    drop(held);
    let served = test_support::wait_until(Duration::from_secs(10), || async {
        let r = gw
            .client
            .post(gw.url("/api/logs"))
            .header("content-type", "application/json")
            .body(event("info", 1).to_string())
            .send()
            .await;
        matches!(r, Ok(r) if r.status() == 202)
    })
    .await;
    assert!(served, "not served again once the held connections closed");
    gw.stop().await;
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_431() {
    let gw = TestGateway::start(&[
        "--redis-url=",
        "--http-max-headers=20",
        "--http-max-header-bytes=4096",
    ])
    .await;
    let many = (0..30).fold(gw.client.get(gw.url("/health/live")), |r, i| {
        r.header(format!("x-h{i}"), "v")
    });
    assert_eq!(many.send().await.unwrap().status(), 431);
    let large = gw
        .client
        .get(gw.url("/health/live"))
        .header("x-large", "v".repeat(8192))
        .send()
        .await
        .unwrap();
    assert_eq!(large.status(), 431);
    let fine = gw.client.get(gw.url("/health/live")).send().await.unwrap();
    assert_eq!(fine.status(), 200);
    gw.stop().await;
}
