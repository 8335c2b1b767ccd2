//! The gateway's integration tests as one binary: each module drives real gateways against
//! the shared Apache Kafka broker (and Redis where it says so).

mod backpressure;
mod edge;
mod helpers;
mod ingest;
mod routes;
mod shutdown;
