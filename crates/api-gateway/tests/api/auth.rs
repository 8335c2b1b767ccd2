//! API keys (API_KEYS_FILE) against real gateways and the shared broker: 401 without a key,
//! with a wrong one and with one revoked by a file rewrite or SIGHUP; 403 for a source the key
//! may not write; the raw key never in metrics or the gateway's log output.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use api_gateway::auth::keys;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use crate::helpers::{self, event, TestGateway};

const KEY_A: &str = "lk_test_a_9f1c2e7d4b6a8c0e1f3a5b7d9c2e4f6a";
const KEY_B: &str = "lk_test_b_1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d";

fn sha256_hex(key: &str) -> String {
    keys::hex(&keys::digest(key))
}

/// A key file in a fresh directory holding `entries`.
fn key_file(entries: &[Value]) -> PathBuf {
    let dir = std::env::temp_dir().join(test_support::unique("keys"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keys.json");
    write_keys(&path, entries);
    path
}

fn write_keys(path: &Path, entries: &[Value]) {
    // Through a rename, as an operator's tooling would: a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json!({ "keys": entries }).to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn team_a() -> Value {
    json!({"name": "team-a", "sha256": sha256_hex(KEY_A), "sources": ["integration-test"]})
}

fn team_b() -> Value {
    json!({"name": "team-b", "sha256": sha256_hex(KEY_B)})
}

async fn post_with(
    gw: &TestGateway,
    path: &str,
    key: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut request = gw
        .client
        .post(gw.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.expect("request sent")
}

#[tokio::test]
async fn ingest_needs_a_key_of_the_file_and_a_revoked_key_is_refused() {
    let path = key_file(&[team_a(), team_b()]);
    let gw = TestGateway::start(&[
        &format!("--api-keys-file={}", path.display()),
        "--redis-url=",
    ])
    .await;

    // No key, a wrong key: 401 with our error body and the challenge.
    for key in [None, Some("lk_wrong")] {
        let resp = post_with(&gw, "/api/logs", key, &event("info", 1)).await;
        assert_eq!(resp.status(), 401, "key {key:?}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized", "{body}");
    }
    let resp = post_with(&gw, "/api/logs/batch", None, &json!([event("info", 1)])).await;
    assert_eq!(resp.status(), 401);

    // The right keys, as Bearer and as X-API-Key.
    let resp = post_with(&gw, "/api/logs", Some(KEY_A), &event("info", 2)).await;
    assert_eq!(resp.status(), 202);
    let resp = gw
        .client
        .post(gw.url("/api/logs/batch"))
        .header("content-type", "application/json")
        .header("x-api-key", KEY_B)
        .body(json!([event("info", 3), event("error", 4)]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);

    // A source outside the key's list: 403 naming it.
    let mut other = event("info", 5);
    other["source"] = json!("billing");
    let resp = post_with(&gw, "/api/logs", Some(KEY_A), &other).await;
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");
    assert!(
        body["message"].as_str().unwrap().contains("billing"),
        "{body}"
    );

    // OTLP: 401 as a google.rpc.Status in the request's encoding.
    for (content_type, expected) in [
        ("application/json", "application/json"),
        ("application/x-protobuf", "application/x-protobuf"),
    ] {
        let resp = gw
            .client
            .post(gw.url("/v1/logs"))
            .header("content-type", content_type)
            .body(Vec::new())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{content_type}");
        assert_eq!(resp.headers()["content-type"], expected);
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        if content_type == "application/json" {
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["code"], 16, "UNAUTHENTICATED: {body}");
        }
    }

    // Reading the logs needs a key too (any key of the file); past the key, this gateway
    // has no DATABASE_READ_URL.
    let read = gw.url("/api/logs?correlationId=c");
    let resp = gw.client.get(&read).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let resp = gw
        .client
        .get(&read)
        .bearer_auth(KEY_B)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "read_disabled");

    // Health, metrics and the OpenAPI document stay open.
    for path in [
        "/api/logs/health",
        "/health/live",
        "/metrics",
        "/openapi.json",
    ] {
        let resp = gw.client.get(gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }

    // Revoke team-a by rewriting the file: refused at the next 2 s poll (the bound is a
    // margin for a loaded machine; the wait ends as soon as the 401 comes).
    write_keys(&path, &[team_b()]);
    let revoked = test_support::wait_until(Duration::from_secs(20), || async {
        post_with(&gw, "/api/logs", Some(KEY_A), &event("info", 6))
            .await
            .status()
            == 401
    })
    .await;
    assert!(revoked, "team-a still accepted after the rewrite");
    let resp = post_with(&gw, "/api/logs", Some(KEY_B), &event("info", 7)).await;
    assert_eq!(resp.status(), 202, "team-b unaffected");

    // A bad file keeps the keys in force.
    std::fs::write(&path, "{ not json").unwrap();
    let refused = test_support::wait_until(Duration::from_secs(20), || async {
        gw.metric("api_keys_reload_failures_total").await >= 1.0
    })
    .await;
    assert!(refused, "the bad file was not noticed");
    let resp = post_with(&gw, "/api/logs", Some(KEY_B), &event("info", 8)).await;
    assert_eq!(resp.status(), 202, "a bad file must not lock everyone out");

    // Metrics carry the names, never the keys.
    let text = gw
        .client
        .get(gw.ops_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains(KEY_A) && !text.contains(KEY_B),
        "a raw key in /metrics"
    );
    // team-a: event 2 and the revocation poll's events before the reload.
    assert!(
        helpers::sample(
            &text,
            r#"api_key_events_total{key="team-a",outcome="accepted"}"#
        ) >= 1.0
    );
    assert_eq!(
        helpers::sample(
            &text,
            r#"api_key_events_total{key="team-b",outcome="accepted"}"#
        ),
        4.0
    );
    assert_eq!(
        helpers::sample(
            &text,
            r#"api_key_events_total{key="team-a",outcome="forbidden"}"#
        ),
        1.0
    );
    gw.stop().await;
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

/// The real binary: SIGHUP revokes a key, `keys new` prints a usable key, and the gateway's
/// whole log output never holds a raw key.
#[tokio::test]
async fn sighup_revokes_and_the_key_never_reaches_the_logs() {
    let brokers = test_support::broker().brokers();
    let topic = test_support::unique("keys");
    test_support::create_topic(&brokers, &topic, 3).await;
    let exe = env!("CARGO_BIN_EXE_api-gateway");

    // `keys new` prints the key and an entry holding only its sha256.
    let out = std::process::Command::new(exe)
        .args(["keys", "new", "team-c"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let key_c = printed
        .lines()
        .find_map(|l| {
            l.rsplit_once(": ")
                .filter(|_| l.starts_with("key"))
                .map(|(_, k)| k.to_owned())
        })
        .expect("a key line");
    let entry: Value = serde_json::from_str(
        printed
            .lines()
            .find_map(|l| l.strip_prefix("entry for API_KEYS_FILE: "))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(entry["sha256"], sha256_hex(&key_c));
    assert!(!entry.to_string().contains(&key_c));

    let path = key_file(&[team_a(), entry]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(exe)
        .env("GATEWAY_ADDR", format!("127.0.0.1:{port}"))
        .env("KAFKA_BROKERS", &brokers)
        .env("KAFKA_TOPIC", &topic)
        .env("REDIS_URL", "")
        .env("API_KEYS_FILE", &path)
        .env("RUST_LOG", "info,api_gateway=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Drained while the gateway runs, so a full pipe never blocks its logging.
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = tokio::spawn(async move {
        let mut text = String::new();
        out.read_to_string(&mut text).await.unwrap();
        text
    });
    let err = tokio::spawn(async move {
        let mut text = String::new();
        err.read_to_string(&mut text).await.unwrap();
        text
    });
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let client = reqwest::Client::new();
    let ready = test_support::wait_until(Duration::from_secs(30), || async {
        matches!(client.get(url("/health/ready")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(ready, "the gateway process never became ready");
    let post = |key: &str, body: Value| {
        client
            .post(url("/api/logs"))
            .header("content-type", "application/json")
            .bearer_auth(key)
            .body(body.to_string())
            .send()
    };
    assert_eq!(post(KEY_A, event("info", 1)).await.unwrap().status(), 202);
    assert_eq!(post(&key_c, event("info", 2)).await.unwrap().status(), 202);
    assert_eq!(
        post("lk_wrong_key_zzz", event("info", 3))
            .await
            .unwrap()
            .status(),
        401
    );

    // Revoke team-c in place, keeping the file's size and a same-second mtime out of the
    // question: SIGHUP forces the re-read.
    write_keys(&path, &[team_a()]);
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let revoked = test_support::wait_until(Duration::from_secs(15), || async {
        post(&key_c, event("info", 4)).await.unwrap().status() == 401
    })
    .await;
    assert!(revoked, "team-c still accepted after SIGHUP");
    assert_eq!(post(KEY_A, event("info", 5)).await.unwrap().status(), 202);
    let metrics = client
        .get(url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let logs = out.await.unwrap() + &err.await.unwrap();
    assert!(logs.contains("API keys reloaded"), "{logs}");
    for key in [KEY_A, key_c.as_str(), "lk_wrong_key_zzz"] {
        assert!(!logs.contains(key), "a raw key in the gateway's logs");
        assert!(!metrics.contains(key), "a raw key in /metrics");
    }
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}
