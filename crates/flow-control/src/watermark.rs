//! Per-partition offset watermarks for at-least-once commits: records complete in any order,
//! but the committed offset only ever advances over a contiguous run of finished records.

use std::collections::{BTreeMap, VecDeque};

/// One partition's received-but-unfinished offsets.
#[derive(Debug, Clone, Default)]
pub struct PartitionWatermark {
    /// Offsets in receive (ascending) order; `true` once durable. The front is never done.
    pending: VecDeque<(i64, bool)>,
    last_received: Option<i64>,
    committed: Option<i64>,
}

impl PartitionWatermark {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tracks a received offset; false (ignored) if not above the last one.
    pub fn received(&mut self, offset: i64) -> bool {
        if self.last_received.is_some_and(|last| offset <= last) {
            return false;
        }
        self.pending.push_back((offset, false));
        self.last_received = Some(offset);
        true
    }

    /// Marks an offset durable; false if it is not pending.
    pub fn completed(&mut self, offset: i64) -> bool {
        let Ok(i) = self.pending.binary_search_by_key(&offset, |(o, _)| *o) else {
            return false;
        };
        if self.pending[i].1 {
            return false;
        }
        self.pending[i].1 = true;
        while self.pending.front().is_some_and(|(_, done)| *done) {
            self.pending.pop_front();
        }
        true
    }

    /// The offset to commit (next to read): the first unfinished offset, or one past the
    /// last received when all are done; None before anything was received.
    pub fn commit_point(&self) -> Option<i64> {
        match self.pending.front() {
            Some((offset, _)) => Some(*offset),
            None => self.last_received.map(|o| o + 1),
        }
    }

    /// Received but not yet durable.
    pub fn pending(&self) -> usize {
        self.pending.iter().filter(|(_, done)| !done).count()
    }

    pub fn mark_committed(&mut self, offset: i64) {
        self.committed = Some(offset);
    }

    /// The commit point moved since the last commit.
    pub fn needs_commit(&self) -> bool {
        self.commit_point().is_some() && self.commit_point() != self.committed
    }

    /// Records received but not yet committable.
    pub fn commit_lag(&self) -> i64 {
        match (self.last_received, self.commit_point()) {
            (Some(last), Some(point)) => last + 1 - point,
            _ => 0,
        }
    }
}

/// Watermarks of every assigned partition.
#[derive(Debug, Clone, Default)]
pub struct OffsetTracker {
    partitions: BTreeMap<i32, PartitionWatermark>,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn received(&mut self, partition: i32, offset: i64) -> bool {
        self.partitions
            .entry(partition)
            .or_default()
            .received(offset)
    }

    pub fn completed(&mut self, partition: i32, offset: i64) -> bool {
        self.partitions
            .get_mut(&partition)
            .is_some_and(|w| w.completed(offset))
    }

    /// (partition, offset to commit) for each partition whose watermark moved.
    pub fn to_commit(&self) -> Vec<(i32, i64)> {
        self.partitions
            .iter()
            .filter(|(_, w)| w.needs_commit())
            .filter_map(|(p, w)| w.commit_point().map(|o| (*p, o)))
            .collect()
    }

    pub fn mark_committed(&mut self, partition: i32, offset: i64) {
        if let Some(w) = self.partitions.get_mut(&partition) {
            w.mark_committed(offset);
        }
    }

    /// Drops a revoked partition's state, returning its durable point if uncommitted.
    pub fn revoke(&mut self, partition: i32) -> Option<i64> {
        let w = self.partitions.remove(&partition)?;
        if w.needs_commit() {
            w.commit_point()
        } else {
            None
        }
    }

    /// Forgets a partition (e.g. after seeking back): the next offset starts afresh.
    pub fn reset(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    pub fn pending(&self) -> usize {
        self.partitions
            .values()
            .map(PartitionWatermark::pending)
            .sum()
    }

    pub fn pending_in(&self, partition: i32) -> usize {
        self.partitions
            .get(&partition)
            .map_or(0, PartitionWatermark::pending)
    }

    pub fn commit_lag(&self, partition: i32) -> i64 {
        self.partitions
            .get(&partition)
            .map_or(0, PartitionWatermark::commit_lag)
    }

    /// The current commit point of a partition.
    pub fn commit_point(&self, partition: i32) -> Option<i64> {
        self.partitions
            .get(&partition)
            .and_then(PartitionWatermark::commit_point)
    }

    /// Partitions with state.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.partitions.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_completion_advances() {
        let mut w = PartitionWatermark::new();
        assert_eq!(w.commit_point(), None);
        for o in 0..5 {
            w.received(o);
        }
        assert_eq!(w.commit_point(), Some(0));
        w.completed(0);
        w.completed(1);
        assert_eq!(w.commit_point(), Some(2));
        for o in 2..5 {
            w.completed(o);
        }
        assert_eq!(w.commit_point(), Some(5));
        assert_eq!(w.pending(), 0);
    }

    #[test]
    fn out_of_order_completion_never_passes_an_unfinished_offset() {
        let mut w = PartitionWatermark::new();
        for o in 10..20 {
            w.received(o);
        }
        for o in (11..20).rev() {
            w.completed(o);
            assert_eq!(w.commit_point(), Some(10));
        }
        assert_eq!(w.commit_lag(), 10);
        w.completed(10);
        assert_eq!(w.commit_point(), Some(20));
        assert_eq!(w.commit_lag(), 0);
    }

    #[test]
    fn gaps_in_offsets() {
        let mut w = PartitionWatermark::new();
        for o in [5, 7, 10] {
            w.received(o);
        }
        w.completed(7);
        assert_eq!(w.commit_point(), Some(5));
        w.completed(5);
        assert_eq!(w.commit_point(), Some(10));
        w.completed(10);
        assert_eq!(w.commit_point(), Some(11));
    }

    #[test]
    fn unknown_duplicate_and_old_offsets() {
        let mut w = PartitionWatermark::new();
        assert!(w.received(3));
        assert!(!w.received(3));
        assert!(!w.received(1));
        assert!(!w.completed(4));
        assert!(w.completed(3));
        assert!(!w.completed(3));
    }

    #[test]
    fn tracker_commits_only_moved_partitions_and_revokes() {
        let mut t = OffsetTracker::new();
        t.received(0, 0);
        t.received(0, 1);
        t.received(1, 0);
        assert_eq!(t.to_commit(), vec![(0, 0), (1, 0)]);
        t.mark_committed(0, 0);
        t.mark_committed(1, 0);
        assert_eq!(t.to_commit(), vec![]);
        t.completed(0, 1);
        assert_eq!(t.to_commit(), vec![], "offset 0 still pending");
        t.completed(0, 0);
        assert_eq!(t.to_commit(), vec![(0, 2)]);
        assert_eq!(t.pending(), 1);
        assert_eq!(t.pending_in(1), 1);
        assert_eq!(t.revoke(0), Some(2));
        assert_eq!(t.revoke(0), None);
        assert_eq!(t.revoke(1), None, "nothing new to commit");
        assert_eq!(t.pending(), 0);
        assert!(!t.completed(7, 0));
    }

    #[test]
    fn random_completion_orders_never_overshoot() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for _ in 0..20 {
            let mut w = PartitionWatermark::new();
            let offsets: Vec<i64> = (0..1000).map(|i| i * 2).collect();
            for &o in &offsets {
                w.received(o);
            }
            let mut order = offsets.clone();
            for i in (1..order.len()).rev() {
                order.swap(i, next() % (i + 1));
            }
            let mut done = std::collections::BTreeSet::new();
            for o in order {
                w.completed(o);
                done.insert(o);
                let smallest_unfinished = offsets.iter().find(|x| !done.contains(x));
                match smallest_unfinished {
                    Some(u) => assert_eq!(w.commit_point(), Some(*u)),
                    None => assert_eq!(w.commit_point(), Some(1999)),
                }
            }
        }
    }
}
