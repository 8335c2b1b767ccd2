//! Consumer lag → admitted events per second, and the health status an operator sees.

use std::fmt;

/// Load status derived from consumer lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LoadStatus {
    /// Lag below `lag_normal`: full rate.
    Healthy,
    /// Lag between the thresholds: the rate is being throttled.
    Degraded,
    /// Lag at or above `lag_critical`: minimum rate.
    Critical,
}

impl LoadStatus {
    /// The name used in health documents.
    pub fn as_str(&self) -> &'static str {
        match self {
            LoadStatus::Healthy => "healthy",
            LoadStatus::Degraded => "degraded",
            LoadStatus::Critical => "critical",
        }
    }

    /// The value of the `backpressure_status` gauge (0, 1, 2).
    pub fn as_gauge(&self) -> f64 {
        match self {
            LoadStatus::Healthy => 0.0,
            LoadStatus::Degraded => 1.0,
            LoadStatus::Critical => 2.0,
        }
    }
}

/// A policy whose numbers do not make sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

/// Continuous, piecewise-linear rate curve: `rate_max` up to `lag_normal`, falling linearly
/// to `rate_min` at `lag_critical`, `rate_min` beyond. (The Java original jumped from 300/s
/// to 100/s at the critical threshold; this one has no jump.)
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePolicy {
    /// Events/s admitted while the consumer keeps up.
    pub rate_max: f64,
    /// Events/s admitted however far behind the consumer is (never 0, so clients can still
    /// get ERROR/FATAL events through).
    pub rate_min: f64,
    /// Lag (records) up to which `rate_max` applies.
    pub lag_normal: u64,
    /// Lag (records) from which `rate_min` applies.
    pub lag_critical: u64,
}

/// 1000/s down to 100/s between 10 000 and 50 000 records of lag.
impl Default for RatePolicy {
    fn default() -> Self {
        Self {
            rate_max: 1000.0,
            rate_min: 100.0,
            lag_normal: 10_000,
            lag_critical: 50_000,
        }
    }
}

impl RatePolicy {
    /// A validated policy: finite rates with `0 < rate_min <= rate_max`, and
    /// `lag_normal < lag_critical`.
    pub fn new(
        rate_max: f64,
        rate_min: f64,
        lag_normal: u64,
        lag_critical: u64,
    ) -> Result<Self, PolicyError> {
        if !rate_max.is_finite() || !rate_min.is_finite() {
            return Err(PolicyError("rates must be finite".into()));
        }
        if rate_min <= 0.0 {
            return Err(PolicyError(format!("RATE_MIN must be > 0, got {rate_min}")));
        }
        if rate_min > rate_max {
            return Err(PolicyError(format!(
                "RATE_MIN ({rate_min}) must not exceed RATE_MAX ({rate_max})"
            )));
        }
        if lag_normal >= lag_critical {
            return Err(PolicyError(format!(
                "LAG_NORMAL ({lag_normal}) must be below LAG_CRITICAL ({lag_critical})"
            )));
        }
        Ok(Self {
            rate_max,
            rate_min,
            lag_normal,
            lag_critical,
        })
    }

    /// Events per second to admit at this lag.
    pub fn rate_for(&self, lag: u64) -> f64 {
        if lag <= self.lag_normal {
            return self.rate_max;
        }
        if lag >= self.lag_critical {
            return self.rate_min;
        }
        debug_assert!(self.lag_normal < lag && lag < self.lag_critical);
        let span = (self.lag_critical - self.lag_normal) as f64;
        let progress = (lag - self.lag_normal) as f64 / span;
        self.rate_max - (self.rate_max - self.rate_min) * progress
    }

    /// Status for health: healthy below `lag_normal`, critical at or above `lag_critical`.
    pub fn status_for(&self, lag: u64) -> LoadStatus {
        if lag < self.lag_normal {
            LoadStatus::Healthy
        } else if lag >= self.lag_critical {
            LoadStatus::Critical
        } else {
            LoadStatus::Degraded
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn default_values() {
        let p = RatePolicy::default();
        assert_eq!(p, RatePolicy::new(1000.0, 100.0, 10_000, 50_000).unwrap());
    }

    #[test]
    fn curve_at_and_around_every_threshold() {
        let p = RatePolicy::default();
        let step = 900.0 / 40_000.0;
        let cases = [
            (0, 1000.0),
            (9_999, 1000.0),
            (10_000, 1000.0),
            (10_001, 1000.0 - step),
            (20_000, 775.0),
            (30_000, 550.0),
            (40_000, 325.0),
            (49_999, 100.0 + step),
            (50_000, 100.0),
            (50_001, 100.0),
            (u64::MAX, 100.0),
        ];
        for (lag, want) in cases {
            let got = p.rate_for(lag);
            assert!(close(got, want), "lag {lag}: {got} != {want}");
        }
    }

    #[test]
    fn curve_is_continuous_at_both_ends() {
        let p = RatePolicy::new(500.0, 50.0, 1_000, 2_000).unwrap();
        let per_record = 450.0 / 1_000.0;
        assert!(close(p.rate_for(1_000) - p.rate_for(1_001), per_record));
        assert!(close(p.rate_for(1_999) - p.rate_for(2_000), per_record));
    }

    #[test]
    fn curve_is_non_increasing_without_jumps() {
        let p = RatePolicy::default();
        let step = 7;
        let max_drop = 900.0 / 40_000.0 * step as f64 + 1e-9;
        let mut prev = p.rate_for(0);
        for lag in (0..=60_000).step_by(step) {
            let r = p.rate_for(lag);
            assert!(r <= prev, "rises at {lag}: {prev} -> {r}");
            assert!(prev - r <= max_drop, "jumps at {lag}: {prev} -> {r}");
            assert!((100.0..=1000.0).contains(&r), "out of range at {lag}: {r}");
            prev = r;
        }
    }

    #[test]
    fn narrowest_policy() {
        let p = RatePolicy::new(10.0, 1.0, 0, 1).unwrap();
        assert_eq!(p.rate_for(0), 10.0);
        assert_eq!(p.rate_for(1), 1.0);
        assert_eq!(p.status_for(0), LoadStatus::Degraded);
        assert_eq!(p.status_for(1), LoadStatus::Critical);
    }

    #[test]
    fn flat_policy() {
        let p = RatePolicy::new(100.0, 100.0, 10, 20).unwrap();
        for lag in [0, 10, 15, 20, u64::MAX] {
            assert_eq!(p.rate_for(lag), 100.0);
        }
    }

    #[test]
    fn statuses_at_edges() {
        let p = RatePolicy::default();
        let cases = [
            (0, LoadStatus::Healthy),
            (9_999, LoadStatus::Healthy),
            (10_000, LoadStatus::Degraded),
            (10_001, LoadStatus::Degraded),
            (49_999, LoadStatus::Degraded),
            (50_000, LoadStatus::Critical),
            (50_001, LoadStatus::Critical),
            (u64::MAX, LoadStatus::Critical),
        ];
        for (lag, want) in cases {
            assert_eq!(p.status_for(lag), want, "lag {lag}");
        }
    }

    #[test]
    fn status_names_and_gauge_values() {
        let cases = [
            (LoadStatus::Healthy, "healthy", 0.0),
            (LoadStatus::Degraded, "degraded", 1.0),
            (LoadStatus::Critical, "critical", 2.0),
        ];
        for (s, name, gauge) in cases {
            assert_eq!(s.as_str(), name);
            assert_eq!(s.as_gauge(), gauge);
        }
    }

    #[test]
    fn invalid_policies_are_refused() {
        let bad = [
            (1000.0, 0.0, 1, 2),
            (1000.0, -1.0, 1, 2),
            (100.0, 1000.0, 1, 2),
            (100.0, 100.000_001, 1, 2),
            (1000.0, 100.0, 2, 2),
            (1000.0, 100.0, 3, 2),
            (f64::NAN, 100.0, 1, 2),
            (1000.0, f64::NAN, 1, 2),
            (f64::INFINITY, 100.0, 1, 2),
            (1000.0, f64::INFINITY, 1, 2),
        ];
        for (max, min, normal, critical) in bad {
            let err = RatePolicy::new(max, min, normal, critical);
            assert!(err.is_err(), "({max}, {min}, {normal}, {critical})");
            assert!(!err.unwrap_err().to_string().is_empty());
        }
        assert!(RatePolicy::new(1000.0, 1000.0, 1, 2).is_ok());
        assert!(RatePolicy::new(1000.0, 0.001, 0, u64::MAX).is_ok());
    }
}
