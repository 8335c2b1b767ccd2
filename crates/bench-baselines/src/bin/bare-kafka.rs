//! Kafka baselines with the services' own client settings (`service_runtime::kafka_settings`).
//! Prints one JSON line.
//!
//! * `produce --events N`: pre-serialized records as fast as the queue takes them, counting
//!   delivery reports: the broker's produce ceiling (P2's baseline).
//! * `produce --in-flight C --duration S`: exactly C records awaiting their report, the next
//!   sent as each arrives, like C HTTP clients waiting for a 202: P1/P3's bound. One key, as
//!   loadgen's single events have (one partition).
//! * `consume --events N`: reads N records from the beginning, storing nothing: the broker's
//!   fetch ceiling (P4).

use bench_baselines::percentiles;
use clap::{Parser, ValueEnum};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError::MessageProduction;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode::QueueFull;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error>;

#[derive(Parser)]
struct Args {
    mode: Mode,
    #[arg(long)]
    brokers: String,
    #[arg(long)]
    topic: String,
    /// Records to send (bulk) or read.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    #[arg(long)]
    in_flight: Option<u64>,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
}

#[derive(Clone, ValueEnum)]
enum Mode {
    Produce,
    Consume,
}

fn main() -> Result<(), Error> {
    let args = Args::parse();
    let report = match args.mode {
        Mode::Produce => produce(&args)?,
        Mode::Consume => consume(&args)?,
    };
    println!("{report}");
    Ok(())
}

/// Delivery reports: counts, and enqueue → report of each record in µs (the delivery opaque
/// is the enqueue time in ns since `origin`).
struct Ctx {
    done: AtomicU64,
    failed: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
    origin: Instant,
}
impl ClientContext for Ctx {}
impl ProducerContext for Ctx {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        if result.is_err() {
            self.failed.fetch_add(1, Relaxed);
        }
        let waited_us = (self.origin.elapsed().as_nanos() as usize - sent_ns) / 1_000;
        let mut latencies = self.latencies_us.lock().expect("not poisoned");
        latencies.push(u32::try_from(waited_us).unwrap_or(u32::MAX));
        self.done.fetch_add(1, Relaxed);
    }
}

fn produce(args: &Args) -> Result<Value, Error> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    // Pre-serialized records shaped like the gateway's, so the timed loop is only the producer.
    // Bulk: each record once (the consumer stores every eventId once), no time window. Closed
    // loop: 20 000 records cycled for `--duration`.
    let (n, limit, total, window) = match args.in_flight {
        Some(c) => (20_000, c.max(1), u64::MAX, args.duration),
        None => (args.events.max(1), u64::MAX, args.events, 1e6),
    };
    let records: Vec<_> = (0..n)
        .map(|i| {
            let key = format!("bench-{}", args.in_flight.map_or(i % 1024, |_| 7));
            let value = json!({
                "eventId": uuid::Uuid::now_v7().hyphenated().to_string(),
                "correlationId": key, "severity": "INFO", "source": "bench-service",
                "message": "user logged in from a benchmark client with a moderately long message",
                "timestamp": now_ms, "receivedAt": now_ms,
                "attributes": {"region": "eu-west-1", "userId": i % 10_000},
            });
            (key, value.to_string().into_bytes())
        })
        .collect();
    let ctx = Ctx {
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latencies_us: Mutex::new(Vec::new()),
        origin: Instant::now(),
    };
    let producer: BaseProducer<Ctx> =
        service_runtime::kafka_settings::producer(&args.brokers, "bench-bare-producer")
            .create_with_context(ctx)?;
    // Metadata first, so connection set-up is not timed (the gateway is ready before load).
    let client = producer.client();
    client.fetch_metadata(Some(&args.topic), Duration::from_secs(30))?;
    let (start, ctx) = (Instant::now(), producer.context());
    let end = start + Duration::from_secs_f64(window);
    let mut sent = 0u64;
    while sent < total && Instant::now() < end {
        while sent < total && sent - ctx.done.load(Relaxed) < limit {
            let (key, value) = &records[(sent % n) as usize];
            let opaque = ctx.origin.elapsed().as_nanos() as usize;
            let mut rec = BaseRecord::with_opaque_to(&args.topic, opaque)
                .key(key.as_str())
                .payload(value.as_slice());
            while let Err((e, r)) = producer.send(rec) {
                let MessageProduction(QueueFull) = e else {
                    return Err(e.into());
                };
                rec = r;
                producer.poll(Duration::from_millis(10));
            }
            sent += 1;
            producer.poll(Duration::ZERO);
        }
        producer.poll(Duration::from_millis(1));
    }
    // Bulk: every report counts. Closed loop: the last records finish outside the window, so
    // the next measurement does not share the broker with them.
    if args.in_flight.is_none() {
        wait_for_reports(&producer, sent, Duration::from_secs(300));
    }
    let seconds = start.elapsed().as_secs_f64();
    let ok = ctx.done.load(Relaxed) - ctx.failed.load(Relaxed);
    let mut latencies = std::mem::take(&mut *ctx.latencies_us.lock().expect("not poisoned"));
    wait_for_reports(&producer, sent, Duration::from_secs(60));
    let (failed, missing) = (ctx.failed.load(Relaxed), sent - ctx.done.load(Relaxed));
    if failed > 0 || missing > 0 {
        return Err(format!("{failed} delivery reports failed, {missing} missing").into());
    }
    let ack = percentiles(&mut latencies);
    Ok(json!({
        "events": ok, "seconds": seconds, "events_per_sec": ok as f64 / seconds,
        "in_flight": args.in_flight, "ack_latency_mean_ms": ack["mean_ms"],
        "ack_latency_p99_ms": ack["p99_ms"],
    }))
}

fn wait_for_reports(producer: &BaseProducer<Ctx>, sent: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while producer.context().done.load(Relaxed) < sent && Instant::now() < deadline {
        producer.poll(Duration::from_millis(5));
    }
}

/// All partitions assigned by hand, no group, no commits; the log-consumer's fetch defaults.
/// The rate counts from the first record (not the connection set-up).
fn consume(args: &Args) -> Result<Value, Error> {
    let topic = args.topic.as_str();
    let mut settings = service_runtime::kafka_settings::consumer(
        &args.brokers,
        "bench-bare-consumer",
        "bench-bare-consumer",
    );
    let consumer: BaseConsumer = settings
        .set("fetch.wait.max.ms", "100")
        .set("max.partition.fetch.bytes", (4 * 1024 * 1024).to_string())
        .create()?;
    let client = consumer.client();
    let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    if tpl.count() == 0 {
        return Err(format!("topic {topic} not in metadata").into());
    }
    consumer.assign(&tpl)?;
    let start = Instant::now();
    let (mut n, mut first) = (0u64, None);
    while n < args.events {
        if start.elapsed() > Duration::from_secs(600) {
            return Err(format!("read only {n}/{} records in time", args.events).into());
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            m?;
            first.get_or_insert_with(Instant::now);
            n += 1;
        }
    }
    let seconds = first.unwrap_or(start).elapsed().as_secs_f64();
    Ok(json!({ "events": n, "seconds": seconds, "events_per_sec": n as f64 / seconds }))
}
