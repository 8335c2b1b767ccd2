//! Bare rdkafka baseline: a `BaseProducer` loop with the gateway's producer settings
//! (idempotent, acks=all, linger.ms=5, murmur2_random, no compression) pushing N
//! pre-serialized records and counting delivery reports. Prints one JSON line.

use bench_baselines::generated_record;
use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, default_value = "log-events")]
    topic: String,
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// NDJSON file of records to send (cycled); generated records otherwise.
    #[arg(long)]
    payload_file: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
}

#[derive(Default)]
struct Counter {
    ok: AtomicU64,
    failed: AtomicU64,
}

#[derive(Clone)]
struct Ctx(Arc<Counter>);
impl ClientContext for Ctx {}
impl ProducerContext for Ctx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    // Pre-serialize everything so the timed loop is only the producer.
    let records: Vec<(String, Vec<u8>)> = match &args.payload_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)?;
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.is_empty() {
                return Err("empty payload file".into());
            }
            (0..args.events)
                .map(|i| {
                    let line = lines[(i as usize) % lines.len()];
                    (format!("bench-{}", i % 1024), line.as_bytes().to_vec())
                })
                .collect()
        }
        None => (0..args.events)
            .map(|i| generated_record(i, now_ms))
            .collect(),
    };

    let counter = Arc::new(Counter::default());
    let producer: BaseProducer<Ctx> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("client.id", "bench-bare-producer")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", args.linger_ms.to_string())
        .set("compression.type", "none")
        .set("queue.buffering.max.messages", "200000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("batch.num.messages", "10000")
        .create_with_context(Ctx(counter.clone()))?;
    // Metadata first, so connection set-up is not timed (the gateway is ready before load).
    producer
        .client()
        .fetch_metadata(Some(&args.topic), Duration::from_secs(30))?;

    let start = Instant::now();
    for (key, value) in &records {
        let mut record = BaseRecord::to(&args.topic)
            .key(key.as_str())
            .payload(value.as_slice());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        producer.poll(Duration::ZERO);
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while counter.ok.load(Ordering::Relaxed) + counter.failed.load(Ordering::Relaxed) < args.events
        && Instant::now() < deadline
    {
        producer.poll(Duration::from_millis(5));
    }
    let seconds = start.elapsed().as_secs_f64();
    let ok = counter.ok.load(Ordering::Relaxed);
    let failed = counter.failed.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "events": ok,
            "failed": failed,
            "seconds": seconds,
            "events_per_sec": ok as f64 / seconds,
        })
    );
    if failed > 0 || ok < args.events {
        return Err(format!("{failed} failed, {ok}/{} delivered", args.events).into());
    }
    Ok(())
}
