//! Routing and documentation: every route answers and is in the OpenAPI document.

use api_gateway::ROUTES;
use serde_json::Value;

use crate::helpers::{self, TestGateway};

#[tokio::test]
async fn every_route_is_served_and_documented() {
    let gw = TestGateway::start(&[]).await;
    let spec: Value = gw
        .client
        .get(gw.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = spec["paths"].as_object().unwrap();
    for (method, path) in ROUTES {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} is not in openapi.json"
        );
        let resp = gw
            .client
            .request(method.to_uppercase().parse().unwrap(), gw.url(path))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status() != 404 && resp.status() != 405,
            "{method} {path} is not routed ({})",
            resp.status()
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "openapi.json documents a route that is not served"
    );

    let unknown = gw.client.get(gw.url("/nope")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    gw.stop().await;
}

#[tokio::test]
async fn health_metrics_and_liveness() {
    let gw = TestGateway::start(&[]).await;
    let live = gw.client.get(gw.url("/health/live")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let health: Value = gw
        .client
        .get(gw.url("/api/logs/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["kafka"], "up");
    assert!(health["status"].is_string());
    gw.post_json("/api/logs", &helpers::event("info", 1)).await;
    let metrics = gw
        .client
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "http_requests_total{route=\"/api/logs\",method=\"POST\",status=\"202\"}",
        "http_request_duration_seconds_bucket",
        "ingest_events_accepted_total",
        "kafka_produce_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    gw.stop().await;
}

#[tokio::test]
async fn with_an_ops_address_metrics_and_probes_move_there() {
    let gw = TestGateway::start(&["--ops-addr=127.0.0.1:0"]).await;
    for path in api_gateway::OPS_ROUTES {
        let on_api = gw.client.get(gw.url(path)).send().await.unwrap();
        assert_eq!(on_api.status(), 404, "{path} is still on the API address");
        let on_ops = gw.client.get(gw.ops_url(path)).send().await.unwrap();
        assert_eq!(on_ops.status(), 200, "{path} is not on the ops address");
    }
    for path in ["/api/logs/health", "/openapi.json"] {
        let on_api = gw.client.get(gw.url(path)).send().await.unwrap();
        assert_eq!(on_api.status(), 200, "{path} left the API address");
    }
    let accepted = gw.post_json("/api/logs", &helpers::event("info", 1)).await;
    assert_eq!(accepted.status(), 202);
    let on_ops = gw
        .client
        .post(gw.ops_url("/api/logs"))
        .header("content-type", "application/json")
        .body(helpers::event("info", 2).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(on_ops.status(), 404, "the ops address serves the API");
    let metrics = gw
        .client
        .get(gw.ops_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("http_requests_total{route=\"/api/logs\",method=\"POST\",status=\"202\"}"),
        "the ops /metrics does not count the API's requests"
    );
    gw.stop().await;
}
