//! Time partitions of `log_events`: which ranges should exist (pure, clock passed in), and the
//! maintenance loop that creates them ahead of need and drops the expired ones whole.
//!
//! Created: every range from `now − LOG_RETENTION_DAYS` to `now + 2 days` (the gateway accepts
//! events up to 24 h ahead). Dropped: partitions whose upper bound is at or before
//! `now − LOG_RETENTION_DAYS`. The DEFAULT partition catches anything else (older than the
//! window, or a range that could not be created) and is never dropped.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use tokio::task::JoinHandle;

use crate::db::Db;
use crate::metrics;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Partitions are created this far past now: the gateway's 24 h future skew plus a day of
/// margin for a maintenance loop that could not run.
pub const AHEAD_MS: i64 = 2 * DAY_MS;

/// The width of one partition (`PARTITION_INTERVAL`), aligned on UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Interval {
    Hour,
    Day,
    /// ISO weeks, Monday 00:00 UTC.
    Week,
}

impl Interval {
    fn width_ms(self) -> i64 {
        match self {
            Interval::Hour => HOUR_MS,
            Interval::Day => DAY_MS,
            Interval::Week => 7 * DAY_MS,
        }
    }

    /// The start of the partition holding `ms` (epoch milliseconds).
    pub fn floor(self, ms: i64) -> i64 {
        // 1970-01-01 was a Thursday: weeks are aligned four days later, on Monday.
        let origin = if self == Interval::Week {
            4 * DAY_MS
        } else {
            0
        };
        let w = self.width_ms();
        (ms - origin).div_euclid(w) * w + origin
    }
}

/// One partition's range, `[start_ms, end_ms)` in epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl Range {
    /// `log_events_pYYYYMMDDHH` (UTC start): the same names whatever the interval, and the
    /// ones the partitioning migration gives the old rows' days.
    pub fn table_name(&self) -> String {
        let days = self.start_ms.div_euclid(DAY_MS);
        let hour = self.start_ms.rem_euclid(DAY_MS) / HOUR_MS;
        let (y, m, d) = civil_from_days(days);
        format!("log_events_p{y:04}{m:02}{d:02}{hour:02}")
    }
}

/// The partitions that should exist at `now_ms`: from the one holding `now − retention` to
/// the one holding `now + AHEAD_MS`.
pub fn wanted(now_ms: i64, interval: Interval, retention_days: u32) -> Vec<Range> {
    let first = interval.floor(now_ms - i64::from(retention_days) * DAY_MS);
    let last = interval.floor(now_ms + AHEAD_MS);
    let w = interval.width_ms();
    let mut out = Vec::new();
    let mut start = first;
    while start <= last {
        out.push(Range {
            start_ms: start,
            end_ms: start + w,
        });
        start += w;
    }
    out
}

/// Partitions ending at or before this instant hold only expired events.
pub fn drop_before(now_ms: i64, retention_days: u32) -> i64 {
    now_ms - i64::from(retention_days) * DAY_MS
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What one maintenance round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub created: usize,
    pub dropped: usize,
    /// Partitions attached to `log_events` afterwards, DEFAULT included.
    pub partitions: usize,
}

/// Creates the missing partitions and drops the expired ones. A range that cannot be created
/// (it overlaps one made with another `PARTITION_INTERVAL`, or DEFAULT already holds rows
/// in it) is logged and skipped: its events keep landing in DEFAULT, never failing.
pub async fn maintain(
    db: &Db,
    now_ms: i64,
    interval: Interval,
    retention_days: u32,
) -> Result<Round, sqlx::Error> {
    let mut round = Round::default();
    let existing = db.partitions().await?;
    for range in wanted(now_ms, interval, retention_days) {
        let name = range.table_name();
        if existing.iter().any(|p| p.name == name) {
            continue;
        }
        match db
            .create_partition(&name, range.start_ms, range.end_ms)
            .await
        {
            Ok(()) => {
                round.created += 1;
                tracing::info!(partition = %name, "created partition");
            }
            Err(e) => {
                tracing::warn!(partition = %name, error = %e, "partition not created; its events go to the DEFAULT partition");
            }
        }
    }
    let cutoff = drop_before(now_ms, retention_days);
    for p in db.partitions().await? {
        let Some(upper_ms) = p.upper_ms else {
            continue; // DEFAULT
        };
        if upper_ms > cutoff {
            continue;
        }
        db.drop_partition(&p.name).await?;
        round.dropped += 1;
        metrics::partition_dropped();
        tracing::info!(partition = %p.name, retention_days, "dropped expired partition");
    }
    round.partitions = db.partitions().await?.len();
    metrics::partitions(round.partitions);
    Ok(round)
}

/// Runs [`maintain`] every `every`; a failed round is logged and retried at the next tick.
pub fn spawn_partition_maintenance(
    db: Db,
    interval: Interval,
    retention_days: u32,
    every: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match maintain(&db, now_ms(), interval, retention_days).await {
                Ok(r) => {
                    tracing::debug!(
                        created = r.created,
                        dropped = r.dropped,
                        partitions = r.partitions,
                        "partition maintenance"
                    )
                }
                Err(e) => tracing::warn!(error = %e, "partition maintenance failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-30T15:20:00Z, a Monday.
    const NOW: i64 = 1_796_052_000_000;

    #[test]
    fn names_are_the_utc_start_hour() {
        let day = Interval::Day.floor(NOW);
        assert_eq!(
            Range {
                start_ms: day,
                end_ms: day + DAY_MS
            }
            .table_name(),
            "log_events_p2026113000"
        );
        let hour = Interval::Hour.floor(NOW);
        assert_eq!(
            Range {
                start_ms: hour,
                end_ms: hour + HOUR_MS
            }
            .table_name(),
            "log_events_p2026113015"
        );
        assert_eq!(
            Range {
                start_ms: 946_684_800_000,
                end_ms: 0
            }
            .table_name(),
            "log_events_p2000010100"
        );
        assert_eq!(
            Range {
                start_ms: 951_782_400_000,
                end_ms: 0
            }
            .table_name(),
            "log_events_p2000022900"
        );
    }

    #[test]
    fn weeks_start_on_monday() {
        let monday = Interval::Day.floor(NOW);
        assert_eq!(Interval::Week.floor(NOW), monday);
        assert_eq!(Interval::Week.floor(NOW + 6 * DAY_MS), monday);
        assert_eq!(Interval::Week.floor(NOW - DAY_MS), monday - 7 * DAY_MS);
    }

    #[test]
    fn wanted_covers_retention_back_and_two_days_ahead() {
        let ranges = wanted(NOW, Interval::Day, 7);
        assert_eq!(ranges.len(), 7 + 1 + 2);
        assert!(ranges[0].start_ms <= NOW - 7 * DAY_MS);
        let last = ranges.last().unwrap();
        assert!(last.start_ms <= NOW + AHEAD_MS && NOW + AHEAD_MS < last.end_ms);
        assert!(ranges.windows(2).all(|w| w[0].end_ms == w[1].start_ms));
        let hours = wanted(NOW, Interval::Hour, 1);
        assert_eq!(hours.len(), 24 + 1 + 48);
    }

    #[test]
    fn the_partition_holding_the_cutoff_is_kept() {
        let cutoff = drop_before(NOW, 7);
        let oldest = wanted(NOW, Interval::Day, 7)[0];
        assert!(
            oldest.end_ms > cutoff,
            "a wanted partition is never expired"
        );
        assert!(oldest.start_ms <= cutoff);
    }
}
