//! Bare rdkafka baseline: a `BaseProducer` with the gateway's producer settings (idempotent,
//! acks=all, linger.ms=5, murmur2_random, no compression) pushing pre-serialized records and
//! counting delivery reports. Prints one JSON line.
//!
//! * bulk (default): `--events N` as fast as the queue takes them: the broker's produce
//!   ceiling (P2's baseline).
//! * `--in-flight C --duration S`: exactly C records awaiting their delivery report for S
//!   seconds, the next sent as each report arrives, like C HTTP clients that each wait for a
//!   202: the most any gateway answering after the ack can reach with C clients (P1/P3's bound).

use bench_baselines::{generated_record, percentiles};
use clap::Parser;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, default_value = "log-events")]
    topic: String,
    /// Records to send (bulk), or to cycle through (closed loop).
    #[arg(long, default_value_t = 100_000)]
    events: u64,
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

/// Delivery reports: counts, and enqueue → report of each acknowledged record in µs. The
/// delivery opaque is the enqueue time in ns since `origin`.
struct Ctx {
    ok: AtomicU64,
    failed: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
    origin: Instant,
}
impl ClientContext for Ctx {}
impl ProducerContext for Ctx {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.ok.fetch_add(1, Ordering::Relaxed);
        let waited_us = (self.origin.elapsed().as_nanos() as usize - sent_ns) / 1_000;
        let mut latencies = self.latencies_us.lock().expect("not poisoned");
        latencies.push(u32::try_from(waited_us).unwrap_or(u32::MAX));
    }
}

impl Ctx {
    fn done(&self) -> u64 {
        self.ok.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    // Pre-serialized, so the timed loop is only the producer.
    let mut records: Vec<(String, Vec<u8>)> = (0..args.events.max(1))
        .map(|i| generated_record(i, now_ms))
        .collect();
    if let Some(key) = &args.key {
        records.iter_mut().for_each(|(k, _)| k.clone_from(key));
    }
    let ctx = Ctx {
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latencies_us: Mutex::new(Vec::new()),
        origin: Instant::now(),
    };
    // The gateway's own settings (service_runtime::kafka_settings), not a copy of them.
    let producer: BaseProducer<Ctx> =
        service_runtime::kafka_settings::producer(&args.brokers, "bench-bare-producer")
            .set("linger.ms", args.linger_ms.to_string())
            .create_with_context(ctx)?;
    // Metadata first, so connection set-up is not timed (the gateway is ready before load).
    producer
        .client()
        .fetch_metadata(Some(&args.topic), Duration::from_secs(30))?;

    let in_flight = args.in_flight.map_or(u64::MAX, |c| c.max(1));
    let total = if args.duration.is_some() {
        u64::MAX
    } else {
        records.len() as u64
    };
    let start = Instant::now();
    let end = args.duration.map(|s| start + Duration::from_secs_f64(s));
    let ctx = producer.context();
    let mut sent = 0u64;
    while sent < total && end.map_or(true, |end| Instant::now() < end) {
        while sent < total && sent - ctx.done() < in_flight {
            let record = &records[(sent % records.len() as u64) as usize];
            send(
                &producer,
                &args.topic,
                record,
                ctx.origin.elapsed().as_nanos() as usize,
            )?;
            sent += 1;
            producer.poll(Duration::ZERO);
        }
        producer.poll(Duration::from_millis(1));
    }
    if end.is_none() {
        wait_for_reports(&producer, sent, Duration::from_secs(300));
    }
    let seconds = start.elapsed().as_secs_f64();
    let ok = ctx.ok.load(Ordering::Relaxed);
    let mut latencies = std::mem::take(&mut *ctx.latencies_us.lock().expect("not poisoned"));
    // A closed loop's last records finish outside the window, so the next measurement does
    // not share the broker with them; a failure or a missing report among them fails the run.
    wait_for_reports(&producer, sent, Duration::from_secs(60));
    let (failed, missing) = (ctx.failed.load(Ordering::Relaxed), sent - ctx.done());
    if failed > 0 || missing > 0 {
        return Err(format!("{failed} delivery reports failed, {missing} missing").into());
    }
    let ack = percentiles(&mut latencies);
    let report = serde_json::json!({
        "events": ok, "seconds": seconds, "events_per_sec": ok as f64 / seconds,
        "in_flight": args.in_flight, "ack_latency_mean_ms": ack["mean_ms"],
        "ack_latency_p99_ms": ack["p99_ms"],
    });
    println!("{report}");
    Ok(())
}

/// Sends `record`, polling while the local queue is full.
fn send(
    producer: &BaseProducer<Ctx>,
    topic: &str,
    (key, value): &(String, Vec<u8>),
    sent_ns: usize,
) -> Result<(), KafkaError> {
    let mut record = BaseRecord::with_opaque_to(topic, sent_ns)
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
fn wait_for_reports(producer: &BaseProducer<Ctx>, sent: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while producer.context().done() < sent && Instant::now() < deadline {
        producer.poll(Duration::from_millis(5));
    }
}
