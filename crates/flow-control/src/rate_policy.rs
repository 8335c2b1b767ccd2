//! Consumer lag → admitted events per second, and the health status an operator sees.

use std::fmt;

/// Load status derived from consumer lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LoadStatus {
    Healthy,
    Degraded,
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
    pub rate_max: f64,
    pub rate_min: f64,
    pub lag_normal: u64,
    pub lag_critical: u64,
}

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
    /// A validated policy.
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

    #[test]
    fn curve_at_and_around_every_threshold() {
        let p = RatePolicy::default();
        let cases = [
            (0, 1000.0),
            (9_999, 1000.0),
            (10_000, 1000.0),
            (10_001, 1000.0 - 900.0 / 40_000.0),
            (30_000, 550.0),
            (49_999, 100.0 + 900.0 / 40_000.0),
            (50_000, 100.0),
            (50_001, 100.0),
            (u64::MAX, 100.0),
        ];
        for (lag, want) in cases {
            let got = p.rate_for(lag);
            assert!((got - want).abs() < 1e-9, "lag {lag}: {got} != {want}");
        }
    }

    #[test]
    fn curve_is_continuous_and_non_increasing() {
        let p = RatePolicy::default();
        let mut prev = p.rate_for(0);
        for lag in (0..=60_000).step_by(7) {
            let r = p.rate_for(lag);
            assert!(r <= prev + 1e-9, "rises at {lag}");
            assert!(prev - r < 1.0, "jumps at {lag}: {prev} -> {r}");
            prev = r;
        }
    }

    #[test]
    fn statuses_at_edges() {
        let p = RatePolicy::default();
        assert_eq!(p.status_for(9_999), LoadStatus::Healthy);
        assert_eq!(p.status_for(10_000), LoadStatus::Degraded);
        assert_eq!(p.status_for(49_999), LoadStatus::Degraded);
        assert_eq!(p.status_for(50_000), LoadStatus::Critical);
        assert_eq!(LoadStatus::Critical.as_str(), "critical");
        assert_eq!(LoadStatus::Degraded.as_gauge(), 1.0);
    }

    #[test]
    fn invalid_policies_are_refused() {
        assert!(RatePolicy::new(1000.0, 0.0, 1, 2).is_err());
        assert!(RatePolicy::new(100.0, 1000.0, 1, 2).is_err());
        assert!(RatePolicy::new(1000.0, 100.0, 2, 2).is_err());
        assert!(RatePolicy::new(f64::NAN, 100.0, 1, 2).is_err());
        assert!(RatePolicy::new(1000.0, 1000.0, 1, 2).is_ok());
    }
}
