"""Schemathesis hooks for integration-tests/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

Two things the OpenAPI document states but cannot make machine-checkable:
- NDJSON batches: the spec gives `application/x-ndjson` the batch's array schema; this
  serializer writes the array's items one JSON object per line, so the generated batches
  reach the NDJSON framing for real.
- The timestamp's upper bound moves with the clock (now + 24 h): the served `maximum` is the
  bound when the document was served. A negative case whose only fault may be a timestamp
  above that `maximum` but within the bound at request time is legitimately accepted, so
  negative cases holding a timestamp in that window are dropped (they are few: coverage's
  `maximum + 1` and a rare fuzzed value); timestamps beyond it are still sent and refused.
- GET /api/logs's rules across parameters (README "Reading the logs"): without
  `correlationId`, `from` is required and `to - from` at most READ_MAX_RANGE_HOURS; `to`
  after `from`. A positive case is made to follow them (its other values are kept), so it
  reaches the database; negative cases are sent as generated.
"""

import json
import time

import schemathesis

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS
MAX_TIME_MS = 253_402_300_799_999
# The served maximum is at least this (the document is fetched after this module loads) and
# the gateway's bound at request time is below the window's end for runs under a day.
WINDOW_START = int(time.time() * 1000) + DAY_MS
WINDOW_END = WINDOW_START + DAY_MS


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item) + "\n" for item in items).encode()


def _events(body):
    if isinstance(body, dict):
        return [body]
    if isinstance(body, list):
        return [item for item in body if isinstance(item, dict)]
    return []


def _in_moving_window(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and WINDOW_START < value <= WINDOW_END


@schemathesis.hook
def filter_case(ctx, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_negative:
        return True
    return not any(_in_moving_window(event.get("timestamp")) for event in _events(case.body))


def _int(value):
    """An integer query value, as generated (int) or already rendered (str)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _is_read(case):
    return case.operation.path == "/api/logs" and case.method.upper() == "GET"


@schemathesis.hook
def map_case(ctx, case):
    meta = case.meta
    if not _is_read(case) or meta is None or not meta.generation.mode.is_positive:
        return case
    query = dict(case.query or {})
    start, end = _int(query.get("from")), _int(query.get("to"))
    if "correlationId" not in query:
        if start is None:
            start = (end if end is not None else int(time.time() * 1000)) - HOUR_MS
        start = max(0, min(start, MAX_TIME_MS - HOUR_MS))
        if end is None or end <= start or end - start > HOUR_MS:
            end = start + HOUR_MS
        query["from"], query["to"] = start, end
    elif start is not None and end is not None and end <= start:
        query["from"], query["to"] = min(start, MAX_TIME_MS - 1), min(start, MAX_TIME_MS - 1) + 1
    case.query = query
    return case
