//! Pure flow-control logic for the ingest pipeline: the lag→rate policy, token buckets with a
//! severity-reserved share, the database circuit breaker, per-partition offset watermarks and
//! retry backoff. No I/O and no clock of its own: every time-dependent call takes `now`, so
//! everything here is unit-tested without sleeping.

pub mod backoff;
pub mod burst_policy;
pub mod circuit_breaker;
pub mod priority;
pub mod rate_policy;
pub mod token_bucket;
pub mod watermark;

pub use backoff::Backoff;
pub use burst_policy::BurstPolicy;
pub use circuit_breaker::{
    BreakerConfig, BreakerState, CircuitBreaker, NotPermitted, Outcome, Transition,
};
pub use priority::{Burst, Class, Pool, PriorityBudget, Rejection, MIN_BURST_EVENTS};
pub use rate_policy::{LoadStatus, PolicyError, RatePolicy};
pub use token_bucket::{retry_after_secs, Deficit, TokenBucket};
pub use watermark::{OffsetTracker, PartitionWatermark};
