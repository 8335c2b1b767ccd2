//! log-consumer's integration tests, one binary: the consumer against Apache Kafka and
//! PostgreSQL (`consume`), the whole pipeline while brokers fail (`broker_faults`), and the
//! batch insert against `\copy` (`insert_benchmark`, run explicitly).

mod broker_faults;
mod consume;
mod insert_benchmark;
mod partitions;
