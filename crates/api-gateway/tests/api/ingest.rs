//! The gateway against a real Apache Kafka broker: accepted events are in the topic exactly as
//! normalized, every error class has its status and body, and outages answer 503.

use std::io::Write;
use std::time::{Duration, Instant};

use log_event::{Limits, LogEvent};
use serde_json::{json, Value};

use crate::helpers::{self, event, now_ms, read_all, read_record, TestGateway};

#[tokio::test]
async fn single_event_is_in_the_topic_byte_for_byte() {
    let gw = TestGateway::start(&[]).await;
    let id = "0190d5c4-8c4b-7d3a-9f3e-2b7c1a2b3c4d";
    let mut body = event("wArN", 1);
    body["eventId"] = json!(id);

    let resp = gw.post_json("/api/logs", &body).await;
    assert_eq!(resp.status(), 202);
    let ack: Value = resp.json().await.unwrap();
    assert_eq!(ack["status"], "accepted");
    assert_eq!(ack["eventId"], id);

    let partition = ack["partition"].as_i64().unwrap() as i32;
    let offset = ack["offset"].as_i64().unwrap();
    let (key, payload) = read_record(&gw.brokers, &gw.topic, partition, offset);
    assert_eq!(key, b"corr-1");
    let stored = LogEvent::from_record(&payload, &Limits::default()).unwrap();
    let expected = format!(
        concat!(
            "{{\"eventId\":\"{id}\",\"correlationId\":\"corr-1\",\"severity\":\"WARN\",",
            "\"message\":\"message number 1 with \\\"quotes\\\" and ünïcode\",\"source\":\"integration-test\",",
            "\"timestamp\":{ts},\"attributes\":{{\"n\":1,\"ok\":true,\"tag\":\"t\"}},\"receivedAt\":{rx}}}"
        ),
        id = id,
        ts = body["timestamp"],
        rx = stored.received_at,
    );
    assert_eq!(String::from_utf8(payload).unwrap(), expected);
    assert!((stored.received_at - now_ms()).abs() < 60_000);
    gw.stop().await;
}

#[tokio::test]
async fn batches_json_and_ndjson_are_all_in_the_topic() {
    let gw = TestGateway::start(&[]).await;
    let events: Vec<Value> = (0..50).map(|i| event("info", i)).collect();
    let resp = gw.post_json("/api/logs/batch", &json!(events)).await;
    assert_eq!(resp.status(), 202);
    let ack: Value = resp.json().await.unwrap();
    assert_eq!(ack["accepted"], 50);
    let mut ids: Vec<String> = ack["eventIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();

    let ndjson: String = (50..80)
        .map(|i| format!("{}\n", event("error", i)))
        .collect();
    let resp = gw
        .client
        .post(gw.url("/api/logs/batch"))
        .header("content-type", "application/x-ndjson")
        .body(ndjson)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let ack: Value = resp.json().await.unwrap();
    assert_eq!(ack["accepted"], 30);
    ids.extend(
        ack["eventIds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned()),
    );

    let records = read_all(&gw.brokers, &gw.topic, 80);
    assert_eq!(records.len(), 80);
    let mut stored: Vec<String> = records
        .iter()
        .map(|r| {
            let e = LogEvent::from_record(r, &Limits::default()).unwrap();
            assert_eq!(e.to_record(), *r, "records are canonical");
            e.event_id.to_string()
        })
        .collect();
    ids.sort();
    stored.sort();
    assert_eq!(ids, stored);
    gw.stop().await;
}

/// Hole 3 of the reliability issue: one event too large for the broker (a 1.2 MB
/// attribute) in a batch was answered 503 + Retry-After forever, after the batch's other
/// events had been produced. It is refused, naming the item, before anything is produced.
#[tokio::test]
async fn an_event_too_large_for_the_broker_is_refused_before_anything_is_produced() {
    let gw = TestGateway::start(&[]).await;
    let mut events: Vec<Value> = (0..3).map(|i| event("info", i)).collect();
    events[1]["attributes"]["blob"] = json!("z".repeat(1_200_000));
    let resp = gw.post_json("/api/logs/batch", &json!(events)).await;
    assert_eq!(resp.status(), 400);
    assert!(
        resp.headers().get("retry-after").is_none(),
        "retrying cannot help"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_batch");
    let items: Vec<(i64, &str)> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["index"].as_i64().unwrap(), d["field"].as_str().unwrap()))
        .collect();
    assert_eq!(items, vec![(1, "$"), (1, "attributes.blob")], "{body}");
    let resp = gw.post_json("/api/logs", &event("info", 9)).await;
    let ack: Value = resp.json().await.unwrap();
    assert_eq!(
        ack["offset"], 0,
        "the refused batch must not have produced anything"
    );
    gw.stop().await;
}

#[tokio::test]
async fn invalid_batch_lists_every_bad_item_and_produces_nothing() {
    let gw = TestGateway::start(&[]).await;
    let mut events: Vec<Value> = (0..5).map(|i| event("info", i)).collect();
    events[1]["severity"] = json!("LOUD");
    events[3].as_object_mut().unwrap().remove("source");
    events[3]["colour"] = json!("red");
    let resp = gw.post_json("/api/logs/batch", &json!(events)).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_batch");
    let details: Vec<(i64, String)> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["index"].as_i64().unwrap(),
                d["field"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        details,
        vec![
            (1, "severity".into()),
            (3, "colour".into()),
            (3, "source".into())
        ]
    );
    // Nothing was produced: a valid event lands at offset 0 of its partition.
    let resp = gw.post_json("/api/logs", &event("info", 9)).await;
    let ack: Value = resp.json().await.unwrap();
    assert_eq!(
        ack["offset"], 0,
        "the invalid batch must not have produced anything"
    );
    gw.stop().await;
}

async fn post_raw(
    gw: &TestGateway,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Option<String>, Value) {
    let mut req = gw.client.post(gw.url(path)).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, retry, body)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn every_error_class_has_its_status_and_body() {
    let gw = TestGateway::start(&["--max-body-bytes=4096", "--max-batch-events=3"]).await;
    let json_ct = [("content-type", "application/json")];

    // Malformed JSON: 400 with line and column.
    let (status, _, body) = post_raw(&gw, "/api/logs", &json_ct, b"{\n\"a\": }".to_vec()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "malformed_json");
    assert_eq!(body["details"][0]["line"], 2);
    assert!(body["details"][0]["column"].as_u64().unwrap() > 0);

    // Invalid fields: each one named.
    let bad = json!({"correlationId": "", "severity": "x", "message": "m", "source": "s", "timestamp": 5});
    let (status, _, body) =
        post_raw(&gw, "/api/logs", &json_ct, bad.to_string().into_bytes()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_event");
    let fields: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["correlationId", "severity", "timestamp"]);
    assert!(body["message"].is_string());

    // Body over the limit: 413.
    let mut big = event("info", 1);
    big["message"] = json!("x".repeat(5000));
    let (status, _, body) =
        post_raw(&gw, "/api/logs", &json_ct, big.to_string().into_bytes()).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"], "payload_too_large");

    // Too many events in a batch: 400, like every other break of the documented schema
    // (`maxItems`); 413 is for bytes.
    let four = json!([
        event("info", 1),
        event("info", 2),
        event("info", 3),
        event("info", 4)
    ]);
    let (status, _, body) = post_raw(
        &gw,
        "/api/logs/batch",
        &json_ct,
        four.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "bad_request");
    assert_eq!(
        body["message"],
        "the batch holds 4 events; at most 3 are allowed"
    );

    // Wrong Content-Type: 415; unknown Content-Encoding: 415.
    let ok = event("info", 1).to_string().into_bytes();
    let (status, _, body) = post_raw(
        &gw,
        "/api/logs",
        &[("content-type", "text/plain")],
        ok.clone(),
    )
    .await;
    assert_eq!(status, 415);
    assert_eq!(body["error"], "unsupported_media_type");
    let (status, _, _) = post_raw(&gw, "/api/logs", &[], ok.clone()).await;
    assert_eq!(status, 415);
    let (status, _, _) = post_raw(
        &gw,
        "/api/logs",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "br"),
        ],
        ok.clone(),
    )
    .await;
    assert_eq!(status, 415);

    // gzip accepted on both endpoints.
    let gz_headers = [
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ];
    let (status, _, body) = post_raw(&gw, "/api/logs", &gz_headers, gzip(&ok)).await;
    assert_eq!(status, 202, "{body}");
    let batch = json!([event("info", 1), event("debug", 2)]).to_string();
    let (status, _, body) =
        post_raw(&gw, "/api/logs/batch", &gz_headers, gzip(batch.as_bytes())).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 2);

    // A zip bomb: small on the wire, huge decompressed → 413, not an OOM.
    let bomb = gzip(&vec![b' '; 3 * 1024 * 1024]);
    assert!(bomb.len() < 4096, "bomb is {} bytes", bomb.len());
    let (status, _, body) = post_raw(&gw, "/api/logs", &gz_headers, bomb).await;
    assert_eq!(status, 413);
    assert!(body["message"].as_str().unwrap().contains("decompressed"));

    // Corrupt gzip: 400.
    let (status, _, _) = post_raw(&gw, "/api/logs", &gz_headers, b"not gzip at all".to_vec()).await;
    assert_eq!(status, 400);
    gw.stop().await;
}

#[tokio::test]
async fn broker_down_answers_503_with_retry_after_within_the_produce_timeout() {
    let broker = test_support::dedicated_broker();
    let topic = test_support::unique("down");
    test_support::create_topic(&broker.brokers(), &topic, 3).await;
    let cfg = helpers::config(&broker.brokers(), &topic, &["--produce-timeout-ms=3000"]);
    let gw = TestGateway::start_with(cfg).await;
    assert_eq!(
        gw.post_json("/api/logs", &event("info", 1)).await.status(),
        202
    );

    broker.stop();
    let mut statuses = Vec::new();
    for i in 0..3 {
        let started = Instant::now();
        let resp = gw.post_json("/api/logs", &event("error", i)).await;
        let took = started.elapsed();
        let status = resp.status().as_u16();
        assert!(
            !(200..300).contains(&status),
            "a 2xx while the broker is down"
        );
        assert_eq!(status, 503);
        let retry: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry >= 1);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "unavailable");
        assert!(took <= Duration::from_millis(3500), "took {took:?}");
        statuses.push(status);
    }
    // Every 503 names the id it concerns, and a retry of the same body (no eventId) is
    // the same event.
    let same = event("error", 7);
    let mut named = Vec::new();
    for _ in 0..2 {
        let body: Value = gw.post_json("/api/logs", &same).await.json().await.unwrap();
        named.push(
            body["details"][0]["failedEventIds"][0]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(named[0], named[1], "a retry is the same event");
    assert!(uuid::Uuid::parse_str(&named[0]).is_ok());
    let (status, _, body) = post_raw(
        &gw,
        "/api/logs/batch",
        &[("content-type", "application/json")],
        json!([event("info", 1), event("info", 2)])
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(
        body["details"][0]["failedEventIds"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Recovery once the broker is back, under load and through to the database, is
    // log-consumer's tests/consumer/broker_faults.rs.
    gw.stop().await;
}

/// Hole 4 of the reliability issue, the gateway's half: started while its broker is down it
/// stays up, is not ready, answers 503 (never hangs, never 2xx), and serves once the broker
/// is back.
#[tokio::test]
async fn a_gateway_started_while_its_broker_is_down_answers_503_then_202() {
    let broker = test_support::dedicated_broker();
    let topic = test_support::unique("late");
    test_support::create_topic(&broker.brokers(), &topic, 3).await;
    broker.stop();
    let cfg = helpers::config(&broker.brokers(), &topic, &["--produce-timeout-ms=3000"]);
    let gw = TestGateway::launch(cfg).await;
    let ready = gw.client.get(gw.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "ready without a broker");
    let started = Instant::now();
    let resp = gw.post_json("/api/logs", &event("info", 1)).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert!(
        started.elapsed() <= Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );

    broker.start();
    gw.wait_ready_within(Duration::from_secs(60)).await;
    let resp = gw.post_json("/api/logs", &event("info", 2)).await;
    assert_eq!(resp.status(), 202);
    gw.stop().await;
}
