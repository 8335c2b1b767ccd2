-- The read API's indexes (issue 19, README "Reading the logs"). Every one ends with
-- (event_time DESC, event_id DESC), the API's order and keyset cursor, so a page is read in
-- index order and stops after `limit` rows. Created on the partitioned table, each index is
-- created on every partition and on partitions made later.
--
-- "the ERROR lines of service X in the last 15 minutes": source, severity, then time.
CREATE INDEX IF NOT EXISTS log_events_source_severity_time_idx
    ON log_events (source, severity, event_time DESC, event_id DESC);

-- "everything for correlation id Y": replaces (correlation_id, event_time).
DROP INDEX IF EXISTS log_events_correlation_id_idx;
CREATE INDEX IF NOT EXISTS log_events_correlation_time_idx
    ON log_events (correlation_id, event_time DESC, event_id DESC);

-- A time range alone (and the cursor's tie-break): replaces (event_time DESC).
DROP INDEX IF EXISTS log_events_event_time_idx;
CREATE INDEX IF NOT EXISTS log_events_time_id_idx
    ON log_events (event_time DESC, event_id DESC);

-- (severity, event_time DESC) stays: the dashboard's recent ERROR/FATAL panel.
