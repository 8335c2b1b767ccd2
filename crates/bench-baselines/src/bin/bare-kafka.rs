//! Kafka baselines with the services' own client settings (`service_runtime::kafka_settings`).
//! Prints one JSON line.
//!
//! * `produce --events N`: pre-serialized records as fast as the queue takes them, counting
//!   delivery reports: the broker's produce ceiling (P2's baseline).
//! * `produce --in-flight C --duration S`: exactly C records awaiting their report, the next
//!   sent as each arrives, like C HTTP clients waiting for a 202: P1/P3's bound.
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
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Produce {
        /// Records to send (bulk), or to cycle through (closed loop).
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        #[arg(long, requires = "duration")]
        in_flight: Option<u64>,
        #[arg(long, requires = "in_flight")]
        duration: Option<f64>,
        /// One key for every record (P1's body has one correlationId, so one partition);
        /// default: bench-{i % 1024}.
        #[arg(long)]
        key: Option<String>,
    },
    Consume {
        #[arg(long)]
        events: u64,
    },
}

fn main() -> Result<(), Error> {
    let args = Args::parse();
    let report = match args.cmd {
        Cmd::Produce {
            events,
            in_flight,
            duration,
            key,
        } => produce(&args.brokers, &args.topic, events, in_flight, duration, key)?,
        Cmd::Consume { events } => consume(&args.brokers, &args.topic, events)?,
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

/// A record shaped like the gateway's for the bench body (field order aside).
fn record(i: u64, now_ms: i64, key: Option<&str>) -> (String, Vec<u8>) {
    let correlation_id = format!("bench-{}", i % 1024);
    let value = serde_json::json!({
        "eventId": uuid::Uuid::now_v7().hyphenated().to_string(), "correlationId": correlation_id,
        "severity": "INFO", "source": "bench-service", "timestamp": now_ms, "receivedAt": now_ms,
        "message": "user logged in from a benchmark client with a moderately long message",
        "attributes": {"region": "eu-west-1", "userId": i % 10_000},
    });
    (
        key.map_or(correlation_id, str::to_owned),
        value.to_string().into_bytes(),
    )
}

fn produce(
    brokers: &str,
    topic: &str,
    events: u64,
    in_flight: Option<u64>,
    duration: Option<f64>,
    key: Option<String>,
) -> Result<serde_json::Value, Error> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    // Pre-serialized, so the timed loop is only the producer.
    let records: Vec<_> = (0..events.max(1))
        .map(|i| record(i, now_ms, key.as_deref()))
        .collect();
    let ctx = Ctx {
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latencies_us: Mutex::new(Vec::new()),
        origin: Instant::now(),
    };
    let producer: BaseProducer<Ctx> =
        service_runtime::kafka_settings::producer(brokers, "bench-bare-producer")
            .create_with_context(ctx)?;
    // Metadata first, so connection set-up is not timed (the gateway is ready before load).
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let limit = in_flight.map_or(u64::MAX, |c| c.max(1));
    let total = if duration.is_some() {
        u64::MAX
    } else {
        records.len() as u64
    };
    let start = Instant::now();
    let end = duration.map(|s| start + Duration::from_secs_f64(s));
    let ctx = producer.context();
    let mut sent = 0u64;
    while sent < total && end.map_or(true, |end| Instant::now() < end) {
        while sent < total && sent - ctx.done() < limit {
            let (key, value) = &records[(sent % records.len() as u64) as usize];
            let opaque = ctx.origin.elapsed().as_nanos() as usize;
            let mut rec = BaseRecord::with_opaque_to(topic, opaque)
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
    if end.is_none() {
        wait_for_reports(&producer, sent, Duration::from_secs(300));
    }
    let seconds = start.elapsed().as_secs_f64();
    let ok = ctx.ok.load(Ordering::Relaxed);
    let mut latencies = std::mem::take(&mut *ctx.latencies_us.lock().expect("not poisoned"));
    // A closed loop's last records finish outside the window, so the next measurement does
    // not share the broker with them; a failed or missing report fails the run.
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
fn consume(brokers: &str, topic: &str, events: u64) -> Result<serde_json::Value, Error> {
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
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or("topic not in metadata")?
        .partitions();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let start = Instant::now();
    let (mut n, mut bytes, mut first) = (0u64, 0u64, None);
    while n < events {
        if start.elapsed() > Duration::from_secs(600) {
            return Err(format!("read only {n}/{events} records in time").into());
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            bytes += m?.payload_len() as u64;
            first.get_or_insert_with(Instant::now);
            n += 1;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let since_first = first.map_or(seconds, |f| f.elapsed().as_secs_f64());
    Ok(serde_json::json!({
        "events": n, "bytes": bytes, "seconds": seconds, "seconds_since_first": since_first,
        "events_per_sec": n as f64 / since_first,
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn record_is_json_with_the_gateway_record_fields() {
        let (key, value) = super::record(3, 1_763_800_000_000, None);
        assert_eq!(key, "bench-3");
        let v: serde_json::Value = serde_json::from_slice(&value).unwrap();
        for k in [
            "eventId",
            "correlationId",
            "severity",
            "message",
            "source",
            "receivedAt",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(super::record(3, 0, Some("k")).0, "k");
    }
}
