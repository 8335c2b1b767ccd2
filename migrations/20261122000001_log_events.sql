-- Every event the gateway acknowledged, stored exactly once (event_id is the idempotency key).
CREATE TABLE IF NOT EXISTS log_events (
    event_id        uuid PRIMARY KEY,
    correlation_id  text        NOT NULL,
    severity        text        NOT NULL,
    message         text        NOT NULL,
    source          text        NOT NULL,
    event_time      timestamptz NOT NULL,
    received_at     timestamptz NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    attributes      jsonb,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL
);

-- The queries operators run: recent events, one request's trail, errors over time.
CREATE INDEX IF NOT EXISTS log_events_event_time_idx ON log_events (event_time DESC);
CREATE INDEX IF NOT EXISTS log_events_correlation_id_idx ON log_events (correlation_id, event_time);
CREATE INDEX IF NOT EXISTS log_events_severity_time_idx ON log_events (severity, event_time DESC);

-- Rows PostgreSQL permanently refused, with the raw record and the reason.
CREATE TABLE IF NOT EXISTS dead_letters (
    id              bigserial PRIMARY KEY,
    payload         bytea       NOT NULL,
    reason          text        NOT NULL,
    kafka_topic     text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
