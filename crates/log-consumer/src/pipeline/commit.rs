//! The periodic commit of the durable watermark, and the gauges published with it.

use std::sync::atomic::Ordering;
use std::time::Instant;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use super::shared::{lock, Context, Shared};
use crate::db::Db;
use crate::metrics;

/// Commits the watermark of durable offsets (the first offset not yet durable, per partition).
pub(super) fn commit(
    consumer: &StreamConsumer<Context>,
    shared: &Shared,
    topic: &str,
    mode: CommitMode,
) {
    let points = lock(&shared.tracker).to_commit();
    if points.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in &points {
        let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*o));
    }
    match consumer.commit(&tpl, mode) {
        Ok(()) => {
            let mut tracker = lock(&shared.tracker);
            for (p, o) in &points {
                tracker.mark_committed(*p, *o);
                metrics::committed_offset(*p, *o);
            }
            *lock(&shared.last_commit) = Some(Instant::now());
        }
        Err(e) => tracing::warn!(error = %e, "offset commit failed; will retry"),
    }
}

pub(super) fn publish_metrics(shared: &Shared, db: &Db) {
    // Every tracked partition, committed or not: a lag that stops moving is the signal.
    {
        let tracker = lock(&shared.tracker);
        for p in tracker.partitions() {
            metrics::commit_lag(p, tracker.commit_lag(p));
        }
    }
    metrics::in_flight(
        shared.in_flight.load(Ordering::Relaxed),
        shared.max_in_flight,
    );
    let (size, idle, waiting, max) = db.usage();
    metrics::pool(size, idle, waiting, max);
    metrics::breaker(shared.breaker_state());
}
