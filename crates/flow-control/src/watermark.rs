//! Per-partition offset watermarks for at-least-once commits: records arrive and complete in
//! any order, but the committed offset only ever advances over a contiguous run of finished
//! records, and only for partitions that are assigned.

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
    /// Nothing received yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tracks a received offset, in whatever order offsets arrive; false (ignore the record)
    /// only when the same offset is still tracked: pending (its first copy will finish it)
    /// or durable behind an unfinished one.
    /// An offset below others already seen (a seek or a reset moved the position back) is
    /// tracked again: the commit point cannot pass it before it is durable (rows are
    /// idempotent, so writing a record twice costs time, never correctness).
    pub fn received(&mut self, offset: i64) -> bool {
        let Err(at) = self.pending.binary_search_by_key(&offset, |(o, _)| *o) else {
            return false;
        };
        self.pending.insert(at, (offset, false));
        self.last_received = Some(self.last_received.map_or(offset, |last| last.max(offset)));
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
        debug_assert!(!self.pending.front().is_some_and(|(_, done)| *done));
        true
    }

    /// The offset to commit (next to read): the first unfinished offset, or one past the
    /// last received when all are done; None before anything was received.
    pub fn commit_point(&self) -> Option<i64> {
        match self.pending.front() {
            Some((offset, _)) => Some(*offset),
            None => self.last_received.map(|o| o.saturating_add(1)),
        }
    }

    /// Received but not yet durable.
    pub fn pending(&self) -> usize {
        self.pending.iter().filter(|(_, done)| !done).count()
    }

    /// Records that `offset` (a commit point) was committed to Kafka.
    pub fn mark_committed(&mut self, offset: i64) {
        self.committed = Some(offset);
    }

    /// There is a commit point beyond the one last committed (after a rewind the point can
    /// fall below it for a while: committing that would only make a restart re-read more).
    pub fn needs_commit(&self) -> bool {
        match (self.commit_point(), self.committed) {
            (Some(point), Some(committed)) => point > committed,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Offsets between the commit point and the last received one: how far a restart would
    /// rewind (0 when nothing was received).
    pub fn commit_lag(&self) -> i64 {
        match (self.last_received, self.commit_point()) {
            (Some(last), Some(point)) => last.saturating_add(1) - point,
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
    /// No partitions.
    pub fn new() -> Self {
        Self::default()
    }

    /// The partitions this consumer now owns: each starts afresh (its position may differ
    /// from where this consumer left it), and every other partition's state is dropped.
    pub fn assign(&mut self, partitions: &[i32]) {
        self.partitions = partitions
            .iter()
            .map(|&p| (p, PartitionWatermark::new()))
            .collect();
    }

    /// Tracks a received offset (see [`PartitionWatermark::received`]); false (ignore the
    /// record, never commit it) for a partition that is not assigned.
    pub fn received(&mut self, partition: i32, offset: i64) -> bool {
        self.partitions
            .get_mut(&partition)
            .is_some_and(|w| w.received(offset))
    }

    /// Marks an offset durable; false if the partition or offset is not pending.
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

    /// Records a successful commit; ignored for a partition that is not tracked (revoked
    /// while the commit was in flight).
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

    /// Received but not yet durable, over all partitions.
    pub fn pending(&self) -> usize {
        self.partitions
            .values()
            .map(PartitionWatermark::pending)
            .sum()
    }

    /// Received but not yet durable in one partition.
    pub fn pending_in(&self, partition: i32) -> usize {
        self.partitions
            .get(&partition)
            .map_or(0, PartitionWatermark::pending)
    }

    /// See [`PartitionWatermark::commit_lag`]; 0 for an untracked partition.
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

    /// Partitions with state, ascending.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.partitions.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive_all(w: &mut PartitionWatermark, offsets: &[i64]) {
        for &o in offsets {
            assert!(w.received(o), "{o}");
        }
    }

    #[test]
    fn nothing_received() {
        let w = PartitionWatermark::new();
        assert_eq!(w.commit_point(), None);
        assert_eq!((w.pending(), w.commit_lag()), (0, 0));
        assert!(!w.needs_commit());
    }

    #[test]
    fn in_order_completion_advances() {
        let mut w = PartitionWatermark::new();
        receive_all(&mut w, &[0, 1, 2, 3, 4]);
        assert_eq!(w.commit_point(), Some(0));
        assert_eq!(w.pending(), 5);
        for o in 0..5 {
            assert!(w.completed(o));
            assert_eq!(w.commit_point(), Some(o + 1));
            assert_eq!(w.pending(), (4 - o) as usize);
        }
    }

    #[test]
    fn out_of_order_completion_never_passes_an_unfinished_offset() {
        let mut w = PartitionWatermark::new();
        receive_all(&mut w, &(10..20).collect::<Vec<_>>());
        for o in (11..20).rev() {
            assert!(w.completed(o));
            assert_eq!(w.commit_point(), Some(10));
        }
        assert_eq!((w.pending(), w.commit_lag()), (1, 10));
        assert!(w.completed(10));
        assert_eq!(w.commit_point(), Some(20));
        assert_eq!((w.pending(), w.commit_lag()), (0, 0));
    }

    #[test]
    fn a_hole_in_the_middle_holds_the_watermark() {
        let mut w = PartitionWatermark::new();
        receive_all(&mut w, &[0, 1, 2, 3, 4]);
        for o in [0, 1, 3, 4] {
            w.completed(o);
        }
        assert_eq!(w.commit_point(), Some(2));
        assert_eq!((w.pending(), w.commit_lag()), (1, 3));
        w.completed(2);
        assert_eq!(w.commit_point(), Some(5));
    }

    #[test]
    fn gaps_in_offsets() {
        let mut w = PartitionWatermark::new();
        receive_all(&mut w, &[5, 7, 10]);
        assert_eq!(w.commit_point(), Some(5));
        w.completed(7);
        assert_eq!(w.commit_point(), Some(5));
        w.completed(5);
        assert_eq!(w.commit_point(), Some(10), "8 and 9 were never there");
        w.completed(10);
        assert_eq!(w.commit_point(), Some(11));
    }

    #[test]
    fn receiving_after_everything_finished() {
        let mut w = PartitionWatermark::new();
        receive_all(&mut w, &[0, 1]);
        w.completed(0);
        w.completed(1);
        assert_eq!(w.commit_point(), Some(2));
        receive_all(&mut w, &[5]);
        assert_eq!(w.commit_point(), Some(5));
        assert_eq!(w.commit_lag(), 1);
    }

    #[test]
    fn unknown_duplicate_and_old_offsets() {
        let mut w = PartitionWatermark::new();
        assert!(w.received(3));
        assert!(!w.received(3), "duplicate of a pending offset");
        assert!(w.received(1), "older: tracked again, never dropped");
        assert_eq!(w.pending(), 2);
        assert!(!w.completed(4), "never received");
        assert!(!w.completed(2), "never received, below");
        assert!(w.completed(3));
        assert!(!w.completed(3), "already done");
        assert_eq!(w.commit_point(), Some(1), "1 is not durable yet");
        assert!(w.completed(1));
        assert_eq!(w.commit_point(), Some(4));
        assert!(
            w.received(3),
            "a redelivery of a durable offset is written again"
        );
        assert_eq!(w.commit_point(), Some(3));
    }

    /// The hole the old "ignore anything not above the last received" rule left: after the
    /// position jumped ahead and then back (a seek, an offset reset), the skipped offsets were
    /// dropped on arrival and the commit point passed them although they were never written.
    #[test]
    fn a_rewind_never_lets_the_commit_point_pass_an_unwritten_offset() {
        let mut w = PartitionWatermark::new();
        receive_all(&mut w, &[0, 1, 5]);
        receive_all(&mut w, &[2, 3, 4]);
        for o in [0, 1, 5] {
            assert!(w.completed(o));
        }
        assert_eq!(w.commit_point(), Some(2), "2, 3 and 4 are not written yet");
        for o in [4, 2] {
            assert!(w.completed(o));
        }
        assert_eq!(w.commit_point(), Some(3));
        assert!(w.completed(3));
        assert_eq!(w.commit_point(), Some(6));
    }

    #[test]
    fn a_rewind_below_the_committed_point_never_commits_backwards() {
        let mut w = PartitionWatermark::new();
        receive_all(&mut w, &[10, 11]);
        assert!(w.completed(10) && w.completed(11));
        w.mark_committed(12);
        assert!(w.received(10), "the position moved back: 10 comes again");
        assert_eq!(w.commit_point(), Some(10));
        assert!(!w.needs_commit(), "12 stays committed");
        assert!(w.completed(10));
        assert!(!w.needs_commit());
        assert!(w.received(12));
        assert!(w.completed(12));
        assert!(w.needs_commit());
        assert_eq!(w.commit_point(), Some(13));
    }

    #[test]
    fn completing_twice_before_the_front_moves() {
        let mut w = PartitionWatermark::new();
        receive_all(&mut w, &[0, 1]);
        assert!(w.completed(1));
        assert!(!w.completed(1));
        assert_eq!(w.pending(), 1);
    }

    #[test]
    fn needs_commit_tracks_the_last_commit() {
        let mut w = PartitionWatermark::new();
        receive_all(&mut w, &[0, 1]);
        assert!(w.needs_commit(), "first commit point");
        w.mark_committed(0);
        assert!(!w.needs_commit());
        w.completed(1);
        assert!(!w.needs_commit(), "0 still pending");
        w.completed(0);
        assert!(w.needs_commit());
        w.mark_committed(2);
        assert!(!w.needs_commit());
    }

    #[test]
    fn extreme_offsets_do_not_overflow() {
        let mut w = PartitionWatermark::new();
        receive_all(&mut w, &[i64::MAX]);
        w.completed(i64::MAX);
        assert_eq!(w.commit_point(), Some(i64::MAX));
        assert_eq!(w.commit_lag(), 0);
    }

    #[test]
    fn tracker_commits_only_moved_partitions() {
        let mut t = OffsetTracker::new();
        t.assign(&[0, 1]);
        assert_eq!(t.to_commit(), vec![]);
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
        assert_eq!(t.commit_point(0), Some(2));
        t.mark_committed(0, 2);
        assert_eq!(t.to_commit(), vec![]);
        t.mark_committed(9, 5); // untracked: ignored
        assert_eq!(t.partitions().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn tracker_counts() {
        let mut t = OffsetTracker::new();
        t.assign(&[1, 3, 7]);
        for o in 0..5 {
            t.received(3, o);
        }
        t.received(7, 100);
        t.completed(3, 1);
        assert_eq!(t.pending(), 5);
        assert_eq!(
            (t.pending_in(3), t.pending_in(7), t.pending_in(8)),
            (4, 1, 0)
        );
        assert_eq!(
            (t.commit_lag(3), t.commit_lag(7), t.commit_lag(8)),
            (5, 1, 0)
        );
        assert!(!t.completed(8, 0), "unknown partition");
        assert!(!t.received(3, 4), "per-partition duplicate");
        assert!(t.received(1, 4), "other partitions have their own order");
        assert!(
            !t.received(8, 0),
            "not assigned: never tracked, never committed"
        );
    }

    #[test]
    fn revoke_returns_the_durable_point_and_drops_state() {
        let mut t = OffsetTracker::new();
        t.assign(&[0, 1]);
        for o in 0..3 {
            t.received(0, o);
            t.received(1, o);
        }
        t.completed(0, 0);
        t.completed(0, 2);
        t.mark_committed(1, 0);
        assert_eq!(t.revoke(0), Some(1), "2 is done but 1 is not");
        assert_eq!(t.revoke(0), None, "already gone");
        assert_eq!(t.revoke(1), None, "nothing new to commit");
        assert_eq!((t.pending(), t.commit_point(0)), (0, None));
        assert_eq!(t.to_commit(), vec![]);
        assert!(!t.received(0, 0), "revoked: not tracked any more");
        t.assign(&[0]);
        assert!(t.received(0, 0), "starts afresh after reassignment");
    }

    #[test]
    fn assign_starts_afresh_and_drops_other_partitions() {
        let mut t = OffsetTracker::new();
        t.assign(&[0, 1]);
        for o in 10..20 {
            t.received(0, o);
        }
        t.received(1, 0);
        t.assign(&[0, 2]);
        assert_eq!((t.pending_in(0), t.commit_point(0)), (0, None));
        assert_eq!(t.pending_in(1), 0, "no longer assigned: state dropped");
        assert!(!t.received(1, 1));
        assert!(t.received(0, 12), "a seek back is accepted");
        assert_eq!(t.commit_point(0), Some(12));
        assert_eq!(t.partitions().collect::<Vec<_>>(), vec![0, 2]);
    }

    /// Any arrival order, duplicates included, then any completion order: the commit point
    /// is always the smallest offset received but not yet durable.
    #[test]
    fn random_arrival_and_completion_orders_never_overshoot() {
        let mut next = lcg(0xDEAD_BEEF);
        for _ in 0..50 {
            let mut w = PartitionWatermark::new();
            let mut unfinished = std::collections::BTreeSet::new();
            let mut durable = std::collections::BTreeSet::new();
            for _ in 0..400 {
                let offset = next(60) as i64;
                if next(3) > 0 {
                    if w.received(offset) {
                        assert!(!unfinished.contains(&offset), "{offset} tracked twice");
                        unfinished.insert(offset);
                        durable.remove(&offset);
                    } else {
                        // Ignored only when its first copy finishes it or already did.
                        assert!(unfinished.contains(&offset) || durable.contains(&offset));
                    }
                } else if let Some(&pick) = unfinished.iter().nth(next(unfinished.len().max(1))) {
                    assert!(w.completed(pick));
                    unfinished.remove(&pick);
                    durable.insert(pick);
                }
                if let (Some(point), Some(&smallest)) = (w.commit_point(), unfinished.first()) {
                    assert_eq!(point, smallest);
                }
                if let Some(point) = w.commit_point() {
                    assert!((0..point).all(|o| !unfinished.contains(&o)));
                }
            }
        }
    }

    /// Tiny LCG so the orders are fixed without a rand dependency.
    fn lcg(mut seed: u64) -> impl FnMut(usize) -> usize {
        move |n| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % n
        }
    }

    #[test]
    fn random_completion_orders_never_overshoot() {
        let mut next = lcg(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20 {
            // 1000 offsets with random gaps of 1..=3.
            let mut offsets = Vec::with_capacity(1000);
            let mut o = next(10) as i64;
            for _ in 0..1000 {
                offsets.push(o);
                o += 1 + next(3) as i64;
            }
            let mut w = PartitionWatermark::new();
            receive_all(&mut w, &offsets);
            let mut order = offsets.clone();
            for i in (1..order.len()).rev() {
                order.swap(i, next(i + 1));
            }
            let mut done = std::collections::BTreeSet::new();
            for (n, o) in order.into_iter().enumerate() {
                assert!(w.completed(o));
                done.insert(o);
                let smallest_unfinished = offsets.iter().find(|x| !done.contains(x));
                let want = smallest_unfinished.map_or(offsets[999] + 1, |u| *u);
                assert_eq!(w.commit_point(), Some(want));
                assert_eq!(w.pending(), 999 - n);
            }
        }
    }

    #[test]
    fn random_interleaving_of_receive_and_complete() {
        let mut next = lcg(7);
        let mut w = PartitionWatermark::new();
        let mut unfinished = std::collections::BTreeSet::new();
        let mut offset = 0i64;
        for _ in 0..5_000 {
            if unfinished.is_empty() || next(2) == 0 {
                offset += 1 + next(2) as i64;
                assert!(w.received(offset));
                unfinished.insert(offset);
            } else {
                let pick = *unfinished.iter().nth(next(unfinished.len())).unwrap();
                assert!(w.completed(pick));
                unfinished.remove(&pick);
            }
            let point = w.commit_point().unwrap();
            match unfinished.first() {
                Some(&smallest) => assert_eq!(point, smallest),
                None => assert_eq!(point, offset + 1),
            }
            assert_eq!(w.pending(), unfinished.len());
        }
    }
}
