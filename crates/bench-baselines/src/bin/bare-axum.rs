//! Bare axum baseline: POST /api/logs → parse the JSON into a struct → 202.

use axum::{body::Bytes, http::StatusCode, routing::post, Router};
use bench_baselines::WireEvent;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Listen address.
    #[arg(long, env = "ADDR", default_value = "127.0.0.1:18090")]
    addr: String,
}

async fn ingest(body: Bytes) -> StatusCode {
    match serde_json::from_slice::<WireEvent>(&body) {
        Ok(ev) => {
            std::hint::black_box(ev);
            StatusCode::ACCEPTED
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let app = Router::new().route("/api/logs", post(ingest));
    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    eprintln!("bare-axum listening on {}", args.addr);
    axum::serve(listener, app).await
}
