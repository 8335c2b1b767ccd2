//! Bare rdkafka consumer: reads N records of a topic from the beginning (all partitions
//! assigned by hand, no group, no commits) with the log-consumer's fetch settings and does
//! nothing with them. Its rate is the broker's fetch ceiling: no Kafka → PostgreSQL
//! consumer can drain a backlog faster on the same broker. Prints one JSON line.

use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Reads N records from the beginning of a topic and reports records/s")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, default_value = "log-events")]
    topic: String,
    /// Records to read before stopping.
    #[arg(long)]
    events: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // The consumer's own settings (service_runtime::kafka_settings), fetch tuning on top.
    let consumer: BaseConsumer = service_runtime::kafka_settings::consumer(
        &args.brokers,
        "bench-bare-consumer",
        "bench-bare-consumer",
    )
    // The log-consumer's defaults (KAFKA_FETCH_WAIT_MAX_MS, KAFKA_MAX_PARTITION_FETCH_BYTES).
    .set("fetch.wait.max.ms", "100")
    .set("max.partition.fetch.bytes", (4 * 1024 * 1024).to_string())
    .create()?;
    let metadata = consumer
        .client()
        .fetch_metadata(Some(&args.topic), Duration::from_secs(30))?;
    let topic = metadata
        .topics()
        .iter()
        .find(|t| t.name() == args.topic)
        .ok_or("topic not in metadata")?;
    let mut tpl = TopicPartitionList::new();
    for p in topic.partitions() {
        tpl.add_partition_offset(&args.topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;

    let start = Instant::now();
    let deadline = start + Duration::from_secs(600);
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    while n < args.events {
        if Instant::now() > deadline {
            return Err(format!("read only {n}/{} records in time", args.events).into());
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                n += 1;
                bytes += m.payload_len() as u64;
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let since_first = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(seconds);
    println!(
        "{}",
        serde_json::json!({
            "events": n,
            "bytes": bytes,
            "seconds": seconds,
            "seconds_since_first": since_first,
            "events_per_sec": n as f64 / since_first,
        })
    );
    Ok(())
}
