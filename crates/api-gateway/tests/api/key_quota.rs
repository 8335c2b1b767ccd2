//! Per-key quotas against real gateways, the shared broker and a private Redis: a key flooding
//! ERROR events at ten times its quota gets 429 + Retry-After for itself only, another key's
//! trickle still gets 202, and two gateways share the flooding key's quota through Redis.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_gateway::auth::keys;
use serde_json::{json, Value};

use crate::backpressure::RedisServer;
use crate::helpers::{self, event, TestGateway};

const KEY_A: &str = "lk_quota_a_5e1d9c7b3a2f4e6d8c0b1a3f5e7d9c2b";
const KEY_B: &str = "lk_quota_b_0f2e4d6c8b1a3f5e7d9c2b4a6f8e0d1c";
const QUOTA: f64 = 50.0;

fn entry(name: &str, key: &str) -> Value {
    let sha = keys::hex(&keys::digest(key));
    json!({"name": name, "sha256": sha, "eventsPerSecond": QUOTA})
}

#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    limited: AtomicU64,
    other: AtomicU64,
}

/// Sends `batch`-event ERROR batches with `key` every `every`, alternating gateways, until
/// `until`.
async fn send_loop(
    gws: &[&TestGateway],
    key: &str,
    batch: usize,
    every: Duration,
    until: Instant,
    tally: &Tally,
) {
    let mut tick = tokio::time::interval(every);
    let mut n = 0usize;
    while Instant::now() < until {
        tick.tick().await;
        let gw = gws[n % gws.len()];
        n += 1;
        let severity = if batch > 1 { "error" } else { "info" };
        let events: Vec<Value> = (0..batch).map(|i| event(severity, n * 100 + i)).collect();
        let resp = gw
            .client
            .post(gw.url("/api/logs/batch"))
            .header("content-type", "application/json")
            .bearer_auth(key)
            .body(json!(events).to_string())
            .send()
            .await
            .expect("request sent");
        match resp.status().as_u16() {
            202 => tally.accepted.fetch_add(batch as u64, Ordering::Relaxed),
            429 => {
                helpers::retry_after(&resp);
                let body: Value = resp.json().await.unwrap();
                assert_eq!(body["error"], "key_rate_limited", "{body}");
                tally.limited.fetch_add(1, Ordering::Relaxed)
            }
            _ => tally.other.fetch_add(1, Ordering::Relaxed),
        };
    }
}

#[tokio::test]
async fn a_key_flooding_errors_is_held_to_its_quota_across_gateways_and_spares_others() {
    let redis = RedisServer::start();
    let (g1, g2, dir) = helpers::gateway_pair(
        &redis.url,
        &[entry("team-a", KEY_A), entry("team-b", KEY_B)],
        &[],
    )
    .await;

    // A: 4 clients × 10 ERROR events every 80 ms = 500 events/s, ten times its quota, over
    // both gateways. B: one INFO event every 200 ms (5/s) on the first gateway.
    let window = Duration::from_secs(10);
    let start = Instant::now();
    let until = start + window;
    let (a, b) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
    let both = [&g1, &g2];
    let flood = async {
        tokio::join!(
            send_loop(&both, KEY_A, 10, Duration::from_millis(80), until, &a),
            send_loop(&both, KEY_A, 10, Duration::from_millis(80), until, &a),
            send_loop(&both, KEY_A, 10, Duration::from_millis(80), until, &a),
            send_loop(&both, KEY_A, 10, Duration::from_millis(80), until, &a),
        )
    };
    let first = [&g1];
    let trickle = send_loop(&first, KEY_B, 1, Duration::from_millis(200), until, &b);
    tokio::join!(flood, trickle);
    let elapsed = start.elapsed().as_secs_f64();

    let b_ok = b.accepted.load(Ordering::Relaxed);
    let b_total = b_ok + b.limited.load(Ordering::Relaxed) + b.other.load(Ordering::Relaxed);
    let a_ok = a.accepted.load(Ordering::Relaxed);
    // Burst: the general pool's bucket (1 s of 45/s) and the reserve's (1 s of 5/s), plus one
    // batch that may find a pool with less than its size left.
    let ceiling = (QUOTA * elapsed + QUOTA + 10.0) as u64;
    println!(
        "key quota: B {b_ok}/{b_total} accepted; A admitted {a_ok} in {elapsed:.1} s (quota {QUOTA}/s, ceiling {ceiling}), {} refusals, {} other",
        a.limited.load(Ordering::Relaxed),
        a.other.load(Ordering::Relaxed)
    );
    assert!(b_total >= 45, "B sent only {b_total}");
    assert!(b_ok as f64 >= 0.99 * b_total as f64, "B: {b_ok}/{b_total}");
    assert!(a.limited.load(Ordering::Relaxed) > 0, "A was never refused");
    assert_eq!(a.other.load(Ordering::Relaxed), 0);
    assert!(a_ok <= ceiling, "A admitted {a_ok} > {ceiling}");
    assert!(
        a_ok as f64 >= QUOTA * window.as_secs_f64() * 0.8,
        "A admitted only {a_ok}"
    );
    let limited = g1
        .metric(r#"api_key_events_total{key="team-a",outcome="rate_limited"}"#)
        .await
        + g2.metric(r#"api_key_events_total{key="team-a",outcome="rate_limited"}"#)
            .await;
    assert!(limited > 0.0);
    g1.stop().await;
    g2.stop().await;
    std::fs::remove_dir_all(dir.unwrap()).unwrap();
}

/// With Redis gone, each gateway holds a key to quota ÷ replicas on its own: key A, flooding
/// both gateways, still gets 429 `key_rate_limited` and about its quota in all; key B's
/// trickle is unaffected.
#[tokio::test]
async fn without_redis_each_gateway_holds_a_key_to_its_share_of_the_quota() {
    let mut redis = RedisServer::start();
    let (g1, g2, dir) = helpers::gateway_pair(
        &redis.url,
        &[entry("team-a", KEY_A), entry("team-b", KEY_B)],
        &[],
    )
    .await;
    redis.stop();
    let down = test_support::wait_until(Duration::from_secs(10), || async {
        helpers::health(&g1).await["redis"] == "down"
            && helpers::health(&g2).await["redis"] == "down"
    })
    .await;
    assert!(down, "the gateways never noticed Redis was gone");

    // A: two clients per gateway × 10 ERROR events every 80 ms (250/s per gateway, ten times
    // its share of 25/s). B: one INFO event every 200 ms on the first gateway.
    let window = Duration::from_secs(8);
    let start = Instant::now();
    let until = start + window;
    let (a1, a2, b) = (Tally::default(), Tally::default(), Tally::default());
    let (first, second) = ([&g1], [&g2]);
    let every = Duration::from_millis(80);
    tokio::join!(
        send_loop(&first, KEY_A, 10, every, until, &a1),
        send_loop(&first, KEY_A, 10, every, until, &a1),
        send_loop(&second, KEY_A, 10, every, until, &a2),
        send_loop(&second, KEY_A, 10, every, until, &a2),
        send_loop(&first, KEY_B, 1, Duration::from_millis(200), until, &b),
    );
    let elapsed = start.elapsed().as_secs_f64();

    let share = QUOTA / 2.0;
    // Per gateway: the share for the window, both buckets full at the start (the share's
    // general 22.5 and reserve 2.5), and one batch that may find a pool short.
    let ceiling = (share * elapsed + share + 10.0) as u64;
    let (got1, got2) = (
        a1.accepted.load(Ordering::Relaxed),
        a2.accepted.load(Ordering::Relaxed),
    );
    let b_ok = b.accepted.load(Ordering::Relaxed);
    let b_total = b_ok + b.limited.load(Ordering::Relaxed) + b.other.load(Ordering::Relaxed);
    println!(
        "key quota without redis: A admitted {got1} + {got2} in {elapsed:.1} s (share {share}/s, ceiling {ceiling} each); B {b_ok}/{b_total}"
    );
    for (got, tally) in [(got1, &a1), (got2, &a2)] {
        assert!(got <= ceiling, "a gateway admitted {got} > {ceiling}");
        assert!(
            got as f64 >= share * window.as_secs_f64() * 0.7,
            "a gateway admitted only {got}"
        );
        assert!(tally.limited.load(Ordering::Relaxed) > 0, "A never refused");
        assert_eq!(tally.other.load(Ordering::Relaxed), 0);
    }
    assert!(b_total >= 35, "B sent only {b_total}");
    assert_eq!(b_ok, b_total, "B was refused");
    g1.stop().await;
    g2.stop().await;
    std::fs::remove_dir_all(dir.unwrap()).unwrap();
}
