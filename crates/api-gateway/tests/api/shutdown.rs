//! SIGTERM with requests in flight: every request that reached the gateway gets its real
//! answer, every 202 is in the topic, and the process exits 0 in bounded time.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use log_event::{Limits, LogEvent};
use serde_json::Value;

use crate::helpers::{event, read_all};

#[tokio::test]
async fn sigterm_answers_every_in_flight_request_then_exits_zero() {
    let brokers = test_support::broker().brokers();
    let topic = test_support::unique("term");
    test_support::create_topic(&brokers, &topic, 3).await;
    let port = test_support::free_port();
    // A long linger keeps every request waiting for its delivery report when SIGTERM lands.
    let mut child = Command::new(env!("CARGO_BIN_EXE_api-gateway"))
        .env("GATEWAY_ADDR", format!("127.0.0.1:{port}"))
        .env("KAFKA_BROKERS", &brokers)
        .env("KAFKA_TOPIC", &topic)
        .env("KAFKA_LINGER_MS", "700")
        .env("REDIS_URL", "")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn api-gateway");
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let ready = test_support::wait_until(Duration::from_secs(30), || async {
        matches!(client.get(format!("{base}/health/ready")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(ready, "gateway never became ready");

    let mut requests = Vec::new();
    for i in 0..100 {
        let client = client.clone();
        let url = format!("{base}/api/logs");
        requests.push(tokio::spawn(async move {
            let result = client
                .post(url)
                .header("content-type", "application/json")
                .body(event("info", i).to_string())
                .send()
                .await;
            (result, Instant::now())
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let mut accepted = Vec::new();
    let mut answered_after_signal = 0;
    for r in requests {
        let (result, answered_at) = r.await.unwrap();
        match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                if answered_at > signalled {
                    answered_after_signal += 1;
                }
                let body: Value = resp.json().await.unwrap();
                match status {
                    202 => accepted.push(body["eventId"].as_str().unwrap().to_owned()),
                    503 => {}
                    other => panic!("unexpected status {other}: {body}"),
                }
            }
            // Only a request that never connected may go unanswered.
            Err(e) => assert!(e.is_connect(), "request lost mid-flight: {e}"),
        }
    }
    assert!(
        answered_after_signal > 0,
        "no request was still in flight at SIGTERM"
    );
    assert!(!accepted.is_empty(), "no request was in flight at SIGTERM");

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "gateway did not exit within 20 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");

    // Every acknowledged event is in the topic.
    let records = read_all(&brokers, &topic, accepted.len());
    let mut stored: Vec<String> = records
        .iter()
        .map(|r| {
            LogEvent::from_record(r, &Limits::default())
                .unwrap()
                .event_id
                .to_string()
        })
        .collect();
    stored.sort();
    accepted.sort();
    for id in &accepted {
        assert!(
            stored.binary_search(id).is_ok(),
            "acknowledged {id} is not in the topic"
        );
    }
}
