-- log_events becomes range-partitioned on event_time (issue 19), rows kept.
--
-- A unique key on a partitioned table must contain the partition key, so the idempotency key
-- becomes (event_id, event_time). event_time is part of the event's content (the gateway
-- writes the same timestamp into the Kafka record on every redelivery), so a redelivered
-- event always targets the same partition and still lands once (docs/ARCHITECTURE.md).
--
-- The old rows move in this migration's one transaction (INSERT ... SELECT), which is fine
-- for the sizes this service has had so far; for a big table see README "Partitions and
-- retention" (attach the old table as one partition instead of copying it).
SET LOCAL TimeZone = 'UTC';

ALTER TABLE log_events RENAME TO log_events_unpartitioned;
ALTER TABLE log_events_unpartitioned RENAME CONSTRAINT log_events_pkey TO log_events_unpartitioned_pkey;
DROP INDEX IF EXISTS log_events_event_time_idx;
DROP INDEX IF EXISTS log_events_correlation_id_idx;
DROP INDEX IF EXISTS log_events_severity_time_idx;

CREATE TABLE log_events (
    event_id        uuid        NOT NULL,
    correlation_id  text        NOT NULL,
    severity        text        NOT NULL,
    message         text        NOT NULL,
    source          text        NOT NULL,
    event_time      timestamptz NOT NULL,
    received_at     timestamptz NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    attributes      jsonb,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    PRIMARY KEY (event_id, event_time)
) PARTITION BY RANGE (event_time);

-- The safety net: an event outside every partition lands here instead of failing. Retention
-- never drops it (README "Partitions and retention").
CREATE TABLE log_events_default PARTITION OF log_events DEFAULT;

-- One daily partition (UTC) per day the old rows cover, named like the consumer names them
-- (log_events_pYYYYMMDDHH), so retention later drops them like any other.
DO $$
DECLARE
    d timestamptz;
BEGIN
    FOR d IN
        SELECT generate_series(date_trunc('day', min(event_time)), max(event_time), interval '1 day')
        FROM log_events_unpartitioned
    LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF log_events FOR VALUES FROM (%L) TO (%L)',
            'log_events_p' || to_char(d, 'YYYYMMDDHH24'), d, d + interval '1 day');
    END LOOP;
END
$$;

INSERT INTO log_events
    (event_id, correlation_id, severity, message, source, event_time, received_at,
     stored_at, attributes, kafka_partition, kafka_offset)
SELECT event_id, correlation_id, severity, message, source, event_time, received_at,
     stored_at, attributes, kafka_partition, kafka_offset
FROM log_events_unpartitioned;

DROP TABLE log_events_unpartitioned;

-- Created after the copy (one build per partition instead of per-row maintenance).
CREATE INDEX log_events_event_time_idx ON log_events (event_time DESC);
CREATE INDEX log_events_correlation_id_idx ON log_events (correlation_id, event_time);
CREATE INDEX log_events_severity_time_idx ON log_events (severity, event_time DESC);
