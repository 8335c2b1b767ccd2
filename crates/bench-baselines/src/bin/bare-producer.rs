//! Bare rdkafka baseline: a `BaseProducer` loop with the gateway's producer settings
//! (idempotent, acks=all, linger.ms=5, murmur2_random, no compression) pushing
//! pre-serialized records and counting delivery reports. Prints one JSON line.
//!
//! Two modes:
//! * bulk (default): `--events N` records as fast as the queue takes them; the broker's
//!   produce ceiling (P2's baseline).
//! * closed loop: `--in-flight C --duration S` keeps exactly C records awaiting their
//!   delivery report for S seconds, sending the next as each report arrives, like C HTTP
//!   clients that each wait for a 202. That is the most any gateway answering after the
//!   broker's ack can reach with C clients on this broker (P1/P3's bound at C connections).

use bench_baselines::{generated_record, percentiles};
use clap::Parser;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Closed loop: keep this many records awaiting their delivery report (needs --duration).
    #[arg(long, requires = "duration")]
    in_flight: Option<u64>,
    /// Closed loop: seconds to run.
    #[arg(long, requires = "in_flight")]
    duration: Option<f64>,
    /// Key every record with this key (the bench's single-event body has one correlationId,
    /// so the gateway sends all of P1 to one partition); default: bench-{i % 1024}.
    #[arg(long)]
    key: Option<String>,
}

#[derive(Default)]
struct Counter {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Closed loop: enqueue → delivery report of each acknowledged record, in µs.
    latencies_us: Mutex<Vec<u32>>,
}

/// Counts delivery reports. The `Instant` is the origin of the delivery opaque: the
/// enqueue time in nanoseconds since it (closed loop), or 0 when not timed (bulk).
#[derive(Clone)]
struct Ctx(Arc<Counter>, Instant);
impl ClientContext for Ctx {}
impl ProducerContext for Ctx {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        match result {
            Ok(_) => {
                self.0.ok.fetch_add(1, Ordering::Relaxed);
                if sent_ns > 0 {
                    let waited = self.1.elapsed().as_nanos() as usize - sent_ns;
                    let us = u32::try_from(waited / 1_000).unwrap_or(u32::MAX);
                    self.0.latencies_us.lock().expect("not poisoned").push(us);
                }
            }
            Err(_) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Counter {
    fn done(&self) -> u64 {
        self.ok.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    // Pre-serialize everything so the timed loop is only the producer (the closed loop
    // cycles through them).
    let mut records: Vec<(String, Vec<u8>)> = match &args.payload_file {
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
    if let Some(key) = &args.key {
        records.iter_mut().for_each(|(k, _)| k.clone_from(key));
    }
    if records.is_empty() {
        return Err("--events must be at least 1".into());
    }

    let counter = Arc::new(Counter::default());
    let start = Instant::now();
    // The gateway's own settings (service_runtime::kafka_settings), not a copy of them.
    let producer: BaseProducer<Ctx> =
        service_runtime::kafka_settings::producer(&args.brokers, "bench-bare-producer")
            .set("linger.ms", args.linger_ms.to_string())
            .create_with_context(Ctx(counter.clone(), start))?;
    // Metadata first, so connection set-up is not timed (the gateway is ready before load).
    producer
        .client()
        .fetch_metadata(Some(&args.topic), Duration::from_secs(30))?;

    let report = match (args.in_flight, args.duration) {
        (Some(in_flight), Some(seconds)) => closed_loop(
            &producer,
            &counter,
            &records,
            &args.topic,
            in_flight.max(1),
            Duration::from_secs_f64(seconds),
        )?,
        _ => bulk(&producer, &counter, &records, &args.topic)?,
    };
    println!("{report}");
    Ok(())
}

/// Sends `record`, polling while the local queue is full.
fn send(
    producer: &BaseProducer<Ctx>,
    topic: &str,
    (key, value): &(String, Vec<u8>),
    opaque: usize,
) -> Result<(), KafkaError> {
    let mut record = BaseRecord::with_opaque_to(topic, opaque)
        .key(key.as_str())
        .payload(value.as_slice());
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Polls until every sent record has its delivery report, for at most `limit`.
fn wait_for_reports(producer: &BaseProducer<Ctx>, counter: &Counter, sent: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while counter.done() < sent && Instant::now() < deadline {
        producer.poll(Duration::from_millis(5));
    }
}

fn bulk(
    producer: &BaseProducer<Ctx>,
    counter: &Counter,
    records: &[(String, Vec<u8>)],
    topic: &str,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let start = Instant::now();
    for record in records {
        send(producer, topic, record, 0)?;
        producer.poll(Duration::ZERO);
    }
    let events = records.len() as u64;
    wait_for_reports(producer, counter, events, Duration::from_secs(300));
    let seconds = start.elapsed().as_secs_f64();
    let ok = counter.ok.load(Ordering::Relaxed);
    let failed = counter.failed.load(Ordering::Relaxed);
    if failed > 0 || ok < events {
        return Err(format!("{failed} failed, {ok}/{events} delivered").into());
    }
    Ok(serde_json::json!({
        "events": ok,
        "failed": failed,
        "seconds": seconds,
        "events_per_sec": ok as f64 / seconds,
    }))
}

fn closed_loop(
    producer: &BaseProducer<Ctx>,
    counter: &Counter,
    records: &[(String, Vec<u8>)],
    topic: &str,
    in_flight: u64,
    duration: Duration,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let origin = producer.context().1;
    let start = Instant::now();
    let end = start + duration;
    let mut sent = 0u64;
    while Instant::now() < end {
        while sent - counter.done() < in_flight {
            let record = &records[(sent % records.len() as u64) as usize];
            // Never 0 (that means "not timed"): nanoseconds since the producer's creation.
            let sent_ns = origin.elapsed().as_nanos() as usize;
            send(producer, topic, record, sent_ns.max(1))?;
            sent += 1;
        }
        producer.poll(Duration::from_millis(1));
    }
    let seconds = start.elapsed().as_secs_f64();
    let ok = counter.ok.load(Ordering::Relaxed);
    let failed = counter.failed.load(Ordering::Relaxed);
    let mut latencies = std::mem::take(&mut *counter.latencies_us.lock().expect("not poisoned"));
    // The records still in flight finish outside the window, so the next measurement
    // does not share the broker with them. Their reports count as much as the window's:
    // a failure or a missing report among them fails the run too.
    wait_for_reports(producer, counter, sent, Duration::from_secs(60));
    let failed_total = counter.failed.load(Ordering::Relaxed);
    let missing = sent.saturating_sub(counter.done());
    if failed_total > 0 || missing > 0 {
        return Err(format!(
            "{failed_total} delivery reports failed ({failed} within the window), {missing} missing"
        )
        .into());
    }
    let ack = percentiles(&mut latencies);
    Ok(serde_json::json!({
        "events": ok,
        "failed": failed,
        "seconds": seconds,
        "events_per_sec": ok as f64 / seconds,
        "in_flight": in_flight,
        "ack_latency_mean_ms": ack["mean_ms"],
        "ack_latency_p99_ms": ack["p99_ms"],
    }))
}
