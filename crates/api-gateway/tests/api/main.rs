//! The gateway's integration tests as one binary: each module drives real gateways against
//! the shared Apache Kafka broker (and Redis where it says so).

mod auth;
mod backpressure;
mod byte_budget;
mod edge;
mod helpers;
mod ingest;
mod key_quota;
mod read;
mod routes;
mod shutdown;
