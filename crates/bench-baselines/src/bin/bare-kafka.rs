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
use clap::{Parser, Subcommand};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error>;

#[derive(Parser)]
struct Args {
    #[arg(long, global = true, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, global = true, default_value = "bench-events")]
    topic: String,
    /// Records to send (bulk) or read.
    #[arg(long, global = true, default_value_t = 100_000)]
    events: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Produce {
        #[arg(long)]
        in_flight: Option<u64>,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    Consume,
}

fn main() -> Result<(), Error> {
    let args = Args::parse();
    let report = match args.cmd {
        Cmd::Produce {
            in_flight,
            duration,
        } => produce(&args, in_flight, duration)?,
        Cmd::Consume => consume(&args)?,
    };
    println!("{report}");
    Ok(())
}

/// Delivery reports: counts, and enqueue → report of each acknowledged record in µs (the
/// delivery opaque is the enqueue time in ns since `origin`).
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
        let counter = if result.is_ok() {
            &self.ok
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
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

fn produce(args: &Args, in_flight: Option<u64>, duration: f64) -> Result<serde_json::Value, Error> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    // Pre-serialized records shaped like the gateway's, so the timed loop is only the producer.
    // Bulk: each record once (the consumer stores every eventId once); closed loop: cycled.
    let n = if in_flight.is_some() {
        20_000
    } else {
        args.events.max(1)
    };
    let records: Vec<_> = (0..n)
        .map(|i| {
            let correlation_id =
                format!("bench-{}", if in_flight.is_some() { 7 } else { i % 1024 });
            let value = serde_json::json!({
                "eventId": uuid::Uuid::now_v7().hyphenated().to_string(),
                "correlationId": correlation_id, "severity": "INFO", "source": "bench-service",
                "message": "user logged in from a benchmark client with a moderately long message",
                "timestamp": now_ms, "receivedAt": now_ms,
                "attributes": {"region": "eu-west-1", "userId": i % 10_000},
            });
            (correlation_id, value.to_string().into_bytes())
        })
        .collect();
    let ctx = Ctx {
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latencies_us: Mutex::new(Vec::new()),
        origin: Instant::now(),
    };
    let producer: BaseProducer<Ctx> =
        service_runtime::kafka_settings::producer(&args.brokers, "bench-bare-producer")
            .create_with_context(ctx)?;
    // Metadata first, so connection set-up is not timed (the gateway is ready before load).
    let metadata_timeout = Duration::from_secs(30);
    producer
        .client()
        .fetch_metadata(Some(&args.topic), metadata_timeout)?;
    let (limit, total) = match in_flight {
        Some(c) => (c.max(1), u64::MAX),
        None => (u64::MAX, args.events),
    };
    let start = Instant::now();
    let window = if in_flight.is_some() { duration } else { 1e6 }; // bulk: no window
    let end = start + Duration::from_secs_f64(window);
    let ctx = producer.context();
    let mut sent = 0u64;
    while sent < total && Instant::now() < end {
        while sent < total && sent - ctx.done() < limit {
            let (key, value) = &records[(sent % records.len() as u64) as usize];
            let opaque = ctx.origin.elapsed().as_nanos() as usize;
            let mut rec = BaseRecord::with_opaque_to(&args.topic, opaque)
                .key(key.as_str())
                .payload(value.as_slice());
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        rec = r;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
            sent += 1;
            producer.poll(Duration::ZERO);
        }
        producer.poll(Duration::from_millis(1));
    }
    // Bulk: every report counts. Closed loop: the last records finish outside the window, so
    // the next measurement does not share the broker with them.
    if in_flight.is_none() {
        wait_for_reports(&producer, sent, Duration::from_secs(300));
    }
    let seconds = start.elapsed().as_secs_f64();
    let ok = ctx.ok.load(Ordering::Relaxed);
    let mut latencies = std::mem::take(&mut *ctx.latencies_us.lock().expect("not poisoned"));
    wait_for_reports(&producer, sent, Duration::from_secs(60));
    let (failed, missing) = (ctx.failed.load(Ordering::Relaxed), sent - ctx.done());
    if failed > 0 || missing > 0 {
        return Err(format!("{failed} delivery reports failed, {missing} missing").into());
    }
    let ack = percentiles(&mut latencies);
    Ok(serde_json::json!({
        "events": ok, "seconds": seconds, "events_per_sec": ok as f64 / seconds,
        "in_flight": in_flight, "ack_latency_mean_ms": ack["mean_ms"],
        "ack_latency_p99_ms": ack["p99_ms"],
    }))
}

fn wait_for_reports(producer: &BaseProducer<Ctx>, sent: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while producer.context().done() < sent && Instant::now() < deadline {
        producer.poll(Duration::from_millis(5));
    }
}

/// All partitions assigned by hand, no group, no commits; the log-consumer's fetch defaults.
/// The rate counts from the first record (not the connection set-up).
fn consume(args: &Args) -> Result<serde_json::Value, Error> {
    let (brokers, topic) = (args.brokers.as_str(), args.topic.as_str());
    let consumer: BaseConsumer = service_runtime::kafka_settings::consumer(
        brokers,
        "bench-bare-consumer",
        "bench-bare-consumer",
    )
    .set("fetch.wait.max.ms", "100")
    .set("max.partition.fetch.bytes", (4 * 1024 * 1024).to_string())
    .create()?;
    let metadata = consumer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(30))?;
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
    let seconds = first.map_or(start, |f| f).elapsed().as_secs_f64();
    Ok(serde_json::json!({ "events": n, "seconds": seconds, "events_per_sec": n as f64 / seconds }))
}
