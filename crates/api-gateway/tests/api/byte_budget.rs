//! Bytes/s budgets against real gateways, the shared broker and a private Redis: a key whose
//! `bytesPerSecond` is low and `eventsPerSecond` high, sending big events, is refused by bytes
//! (429 `key_bytes_rate_limited`, `"budget": "bytes"`) while another key is not, and two
//! gateways share its byte budget; the global `RATE_MAX_BYTES` does the same for all callers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use api_gateway::auth::keys;
use serde_json::{json, Value};

use crate::backpressure::RedisServer;
use crate::helpers::{self, TestGateway};

const KEY_BIG: &str = "lk_bytes_a_7c1e9a3b5d2f4e6a8c0b1d3f5a7e9c2d";
const KEY_SMALL: &str = "lk_bytes_b_2a4c6e8f0b1d3f5a7c9e1b3d5f7a9c0e";
/// Both keys' quotas: many events, few bytes.
const EVENTS_PER_SECOND: f64 = 10_000.0;
const BYTES_PER_SECOND: f64 = 20_000.0;

fn entry(name: &str, key: &str) -> Value {
    let sha = keys::hex(&keys::digest(key));
    json!({"name": name, "sha256": sha, "eventsPerSecond": EVENTS_PER_SECOND,
           "bytesPerSecond": BYTES_PER_SECOND})
}

/// One INFO event whose message is `size` bytes.
fn event_of(size: usize, i: usize) -> String {
    json!({
        "correlationId": format!("corr-{i}"),
        "severity": "INFO",
        "message": "x".repeat(size),
        "source": "integration-test",
        "timestamp": helpers::now_ms() - 1000,
    })
    .to_string()
}

#[derive(Default)]
struct Tally {
    accepted_bytes: AtomicU64,
    accepted: AtomicU64,
    limited: AtomicU64,
    other: AtomicU64,
}

/// Sends one `size`-byte event every `every`, alternating gateways, until `until`; a 429
/// must be `refusal` on the bytes budget, with Retry-After.
async fn send_loop(
    gws: &[&TestGateway],
    key: Option<&str>,
    size: usize,
    every: Duration,
    until: Instant,
    refusal: &str,
    tally: &Tally,
) {
    let mut tick = tokio::time::interval(every);
    let mut n = 0usize;
    while Instant::now() < until {
        tick.tick().await;
        let gw = gws[n % gws.len()];
        n += 1;
        let body = event_of(size, n);
        let len = body.len() as u64;
        let mut request = gw
            .client
            .post(gw.url("/api/logs"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let resp = request.send().await.expect("request sent");
        match resp.status().as_u16() {
            202 => {
                tally.accepted_bytes.fetch_add(len, Ordering::Relaxed);
                tally.accepted.fetch_add(1, Ordering::Relaxed);
            }
            429 => {
                helpers::retry_after(&resp);
                let body: Value = resp.json().await.unwrap();
                assert_eq!(body["error"], refusal, "{body}");
                assert_eq!(body["budget"], "bytes", "{body}");
                tally.limited.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                tally.other.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Bytes admitted by a budget of `rate` bytes/s over `elapsed` s, shared by `gateways`: the
/// general pool's rate (90 %: INFO events) for the time, its bucket (200 ms) full at the start,
/// and one event in flight per gateway.
fn ceiling(rate: f64, elapsed: f64, event: f64, gateways: f64) -> f64 {
    let general = rate * 0.9;
    general * elapsed + general * 0.2 + event * gateways
}

#[tokio::test]
async fn a_key_over_its_byte_quota_is_refused_by_bytes_across_gateways_and_spares_others() {
    let redis = RedisServer::start();
    let (g1, g2, dir) = helpers::gateway_pair(
        &redis.url,
        &[entry("big", KEY_BIG), entry("small", KEY_SMALL)],
        &[],
    )
    .await;

    // big: 4 clients × one 4 KB event every 50 ms = 80 events/s (far below its 10 000/s)
    // but about 330 KB/s, 16 times its 20 KB/s. small: one 100-byte event every 200 ms.
    let window = Duration::from_secs(8);
    let start = Instant::now();
    let until = start + window;
    let (big, small) = (Tally::default(), Tally::default());
    let both = [&g1, &g2];
    let every = Duration::from_millis(50);
    let refusal = "key_bytes_rate_limited";
    tokio::join!(
        send_loop(&both, Some(KEY_BIG), 4000, every, until, refusal, &big),
        send_loop(&both, Some(KEY_BIG), 4000, every, until, refusal, &big),
        send_loop(&both, Some(KEY_BIG), 4000, every, until, refusal, &big),
        send_loop(&both, Some(KEY_BIG), 4000, every, until, refusal, &big),
        send_loop(
            &both,
            Some(KEY_SMALL),
            100,
            Duration::from_millis(200),
            until,
            refusal,
            &small
        ),
    );
    let elapsed = start.elapsed().as_secs_f64();

    let got = big.accepted_bytes.load(Ordering::Relaxed) as f64;
    let max = ceiling(BYTES_PER_SECOND, elapsed, 4200.0, 2.0);
    let small_ok = small.accepted.load(Ordering::Relaxed);
    let small_total =
        small_ok + small.limited.load(Ordering::Relaxed) + small.other.load(Ordering::Relaxed);
    println!(
        "key byte quota: big admitted {got} bytes ({} events) in {elapsed:.1} s over 2 gateways (quota {BYTES_PER_SECOND}/s, ceiling {max:.0}), {} refusals; small {small_ok}/{small_total}",
        big.accepted.load(Ordering::Relaxed),
        big.limited.load(Ordering::Relaxed),
    );
    assert!(
        big.limited.load(Ordering::Relaxed) > 0,
        "big was never refused"
    );
    assert_eq!(big.other.load(Ordering::Relaxed), 0);
    assert!(
        got <= max,
        "big admitted {got} bytes > {max:.0}: not shared"
    );
    assert!(
        got >= BYTES_PER_SECOND * 0.9 * window.as_secs_f64() * 0.7,
        "big admitted only {got} bytes"
    );
    assert!(small_total >= 35, "small sent only {small_total}");
    assert_eq!(small_ok, small_total, "small was refused");
    let series = r#"api_key_events_total{key="big",outcome="bytes_rate_limited"}"#;
    assert!(g1.metric(series).await + g2.metric(series).await > 0.0);
    let series = r#"rate_limiter_rejected_total{reason="key_bytes_rate_limited"}"#;
    assert!(g1.metric(series).await + g2.metric(series).await > 0.0);
    g1.stop().await;
    g2.stop().await;
    std::fs::remove_dir_all(dir.unwrap()).unwrap();
}

#[tokio::test]
async fn the_global_byte_budget_is_shared_by_two_gateways() {
    let redis = RedisServer::start();
    let rate = 40_000.0;
    let flags = [
        format!("--rate-max-bytes={rate}"),
        "--rate-max=10000".to_owned(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (g1, g2, _) = helpers::gateway_pair(&redis.url, &[], &flags).await;
    assert_eq!(g1.metric("rate_limiter_bytes_rate").await, rate);

    // 2 clients per gateway × one 4 KB event every 25 ms: about 660 KB/s in all, 16 times
    // the budget, at 160 events/s (far below the event rate of 10 000/s).
    let window = Duration::from_secs(8);
    let start = Instant::now();
    let until = start + window;
    let (t1, t2) = (Tally::default(), Tally::default());
    let (first, second) = ([&g1], [&g2]);
    let every = Duration::from_millis(25);
    let refusal = "bytes_rate_limited";
    tokio::join!(
        send_loop(&first, None, 4000, every, until, refusal, &t1),
        send_loop(&first, None, 4000, every, until, refusal, &t1),
        send_loop(&second, None, 4000, every, until, refusal, &t2),
        send_loop(&second, None, 4000, every, until, refusal, &t2),
    );
    let elapsed = start.elapsed().as_secs_f64();
    let (b1, b2) = (
        t1.accepted_bytes.load(Ordering::Relaxed) as f64,
        t2.accepted_bytes.load(Ordering::Relaxed) as f64,
    );
    let max = ceiling(rate, elapsed, 4200.0, 2.0);
    println!(
        "global byte budget: {b1} + {b2} bytes admitted in {elapsed:.1} s (budget {rate}/s, ceiling {max:.0}); refusals {} + {}",
        t1.limited.load(Ordering::Relaxed),
        t2.limited.load(Ordering::Relaxed)
    );
    for t in [&t1, &t2] {
        assert!(
            t.limited.load(Ordering::Relaxed) > 0,
            "a gateway never refused"
        );
        assert!(
            t.accepted.load(Ordering::Relaxed) > 0,
            "a gateway never admitted"
        );
        assert_eq!(t.other.load(Ordering::Relaxed), 0);
    }
    assert!(
        b1 + b2 <= max,
        "admitted {} bytes > {max:.0}: not shared",
        b1 + b2
    );
    assert!(
        b1 + b2 >= rate * 0.9 * window.as_secs_f64() * 0.7,
        "admitted only {} bytes",
        b1 + b2
    );
    let series = r#"rate_limiter_rejected_total{reason="bytes_rate_limited"}"#;
    assert!(g1.metric(series).await + g2.metric(series).await > 0.0);
    g1.stop().await;
    g2.stop().await;
}
