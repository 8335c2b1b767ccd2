#!/usr/bin/env bash
# The staged backpressure scenario as a person sees it (./load-test.sh --scenario stall
# --report), bounded to about two minutes: its own api-gateway (lower lag thresholds, a 2 s
# lag interval) and log-consumer on free ports, 1 500 events/s offered (1.5 x RATE_MAX), the
# consumer frozen until the gateway has been critical for a while, then resumed. Checks the run's JSON (status
# healthy -> degraded -> critical -> healthy, the rate down to RATE_MIN and back, ERROR/FATAL
# admitted in every status while INFO is shed, rows = events answered 202) and the HTML report
# in headless Chromium (scripts/report-screenshot.sh). Exits non-zero on the first failed check.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: integration-tests/test-scenario.sh [-h]

env: BIN_DIR (default target/debug, built when missing), KAFKA_BROKERS (reused with fresh
  topics; else an own node), TEST_DATABASE_ADMIN_URL, REDIS_URL, KEEP_TMP=1 (keep the report,
  its screenshot and the logs of a passing run too).
USAGE
}
case "${1:-}" in -h|--help) usage; exit 0 ;; "") ;; *) usage >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
LIB_TAG=scenario
TMP=$(mktemp -d "${TMPDIR:-/tmp}/scenario.XXXXXX")
RUN_DIR=$TMP
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

debug_bins
ensure_postgres
ensure_redis

# The thresholds this test gives its gateway (the defaults would need a 2-minute freeze).
LAG_NORMAL=2000 LAG_CRITICAL=6000 LAG_INTERVAL_MS=2000 RATE_MAX=1000 RATE_MIN=100
ADMIN_URL=${TEST_DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB="scenario_viz_$(date +%s)_$$"
DATABASE_URL="${ADMIN_URL%/*}/$DB"
GW_PORT=$(free_port)
CONSUMER_PORT=$(free_port)
TOPIC="scenario-viz-$$-$RANDOM"
own_kafka=
passed=0

# shellcheck disable=SC2317 # called by the trap
finish() {
  local rc=$?
  set +e
  [ -f "$TMP/consumer.pid" ] && kill -CONT "$(cat "$TMP/consumer.pid")" 2>/dev/null
  stop_pidfile "$TMP/gateway.pid" api-gateway 2>/dev/null
  stop_pidfile "$TMP/consumer.pid" log-consumer 2>/dev/null
  [ -n "$own_kafka" ] && "$ROOT/scripts/kafka.sh" stop --data "$TMP/kafka" >/dev/null 2>&1
  psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
  if [ "$rc" -ne 0 ] || [ -n "${KEEP_TMP:-}" ]; then log "report, screenshot and logs kept in $TMP"; else rm -rf "$TMP"; fi
  echo "staged scenario: $passed checks passed$([ "$rc" -ne 0 ] && echo ", then one failed")"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

if [ -n "${KAFKA_BROKERS:-}" ]; then
  step "reusing the broker at $KAFKA_BROKERS (topics $TOPIC, $TOPIC.dlq)"
else
  step "starting Apache Kafka (one node, data in $TMP/kafka)"
  own_kafka=1
  KAFKA_BROKERS=$("$ROOT/scripts/kafka.sh" start --data "$TMP/kafka" | tail -n 1)
fi
create_topics "$TOPIC" --bootstrap "$KAFKA_BROKERS"
export KAFKA_BROKERS KAFKA_TOPIC=$TOPIC KAFKA_GROUP_ID="scenario-viz-$$" LOG_FORMAT=json

step "log-consumer on :$CONSUMER_PORT, api-gateway on :$GW_PORT (LAG_NORMAL $LAG_NORMAL, LAG_CRITICAL $LAG_CRITICAL, LAG_INTERVAL_MS $LAG_INTERVAL_MS)"
CONSUMER_ADDR="127.0.0.1:$CONSUMER_PORT" DATABASE_URL=$DATABASE_URL \
  nohup "$BIN_DIR/log-consumer" >>"$TMP/consumer.log" 2>&1 &
echo $! > "$TMP/consumer.pid"
GATEWAY_ADDR="127.0.0.1:$GW_PORT" LAG_NORMAL=$LAG_NORMAL LAG_CRITICAL=$LAG_CRITICAL \
  LAG_INTERVAL_MS=$LAG_INTERVAL_MS RATE_MAX=$RATE_MAX RATE_MIN=$RATE_MIN \
  nohup "$BIN_DIR/api-gateway" >>"$TMP/gateway.log" 2>&1 &
echo $! > "$TMP/gateway.pid"
wait_for_http "http://127.0.0.1:$CONSUMER_PORT/health/ready" 60 "log-consumer" "$(cat "$TMP/consumer.pid")"
wait_for_http "http://127.0.0.1:$GW_PORT/health/ready" 60 "api-gateway" "$(cat "$TMP/gateway.pid")"
consumer_pid=$(cat "$TMP/consumer.pid")

step "./load-test.sh --scenario stall (1 500 events/s, warm-up 10 s, frozen until critical for 8 s)"
t0=$SECONDS
DATABASE_URL=$DATABASE_URL ./load-test.sh --scenario stall --rate 150 --url "http://127.0.0.1:$GW_PORT" \
  --consumer-url "http://127.0.0.1:$CONSUMER_PORT" --consumer-pid "$consumer_pid" \
  --warmup 10s --hold 8s --lag-normal "$LAG_NORMAL" --lag-critical "$LAG_CRITICAL" \
  --drain-timeout 120 --report "$TMP/report.html" | tee "$TMP/live.txt"
log "the scenario took $((SECONDS - t0))s"
topic_config() { "$ROOT/scripts/kafka.sh" topic-config "$1" "$2" --bootstrap "$KAFKA_BROKERS"; }
for t in "$TOPIC" "$TOPIC.dlq"; do
  check "$t keeps records as long as PostgreSQL keeps rows (retention.ms = 7 days)" \
    test "$(topic_config "$t" retention.ms)" = 604800000
  check "$t has no size limit that could delete unread records" \
    test "$(topic_config "$t" retention.bytes)" = -1
done
check "the report and its JSON were written" test -s "$TMP/report.html" -a -s "$TMP/report.json"
check "one live line per second ($(grep -c ' sent ' "$TMP/live.txt") lines)" \
  test "$(grep -c ' sent ' "$TMP/live.txt")" -ge 30
check "the consumer runs again (not stopped)" \
  bash -c "[ \"\$(awk '{print \$3}' /proc/$consumer_pid/stat)\" != T ]"

# j EXPR: a Python expression over the run's JSON (d), its summary (s), its seconds (secs).
j() {
  python3 - "$TMP/report.json" "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s, secs = d["summary"], d["seconds"]
def sev(sec, names, key):
    return sum(sec["by_severity"].get(n, {}).get(key, 0) for n in names)
print(eval(sys.argv[2]))
PY
}
log "status sequence $(j "' -> '.join(s['status_sequence'])"), max lag $(j "s['max_lag']"), rate $(j "s['min_rate']")..$(j "s['max_rate']"), $(j "s['rate_changes']") rate changes"
log "ERROR/FATAL 202/sent while critical $(j "s['error_in_critical']"); by status $(j "s['by_status_severity']")"
check "status walks healthy -> degraded -> critical -> healthy" \
  test "$(j "(lambda q: q[0] == q[-1] == 'healthy' and 'degraded' in q and 'critical' in q and q.index('degraded') < q.index('critical'))(s['status_sequence'])")" = True
check "lag passed LAG_CRITICAL ($LAG_CRITICAL)" test "$(j "s['max_lag']")" -ge "$LAG_CRITICAL"
check "rate fell to RATE_MIN ($RATE_MIN)" test "$(j "s['min_rate'] == $RATE_MIN")" = True
check "rate back at RATE_MAX ($RATE_MAX) at the end" test "$(j "[x['rate'] for x in secs if x['rate'] is not None][-1] == $RATE_MAX")" = True
check "the rate changed at least 4 times (once per lag interval on the way)" test "$(j "s['rate_changes']")" -ge 4
for st in healthy degraded critical; do
  check "ERROR/FATAL events answered 202 while $st" \
    test "$(j "sum(c['ok'] for n, c in s['by_status_severity'].get('$st', {}).items() if n in ('ERROR', 'FATAL'))")" -gt 0
done
check "ERROR/FATAL answered 202 in at least 80 % of the critical seconds" \
  test "$(j "(lambda c: sum(1 for x in c if sev(x, ('ERROR', 'FATAL'), 'ok') > 0) >= 0.8 * len(c))([x for x in secs if x['status'] == 'critical'])")" = True
check "INFO shed (429 shed_severity) while critical" test "$(j "sum(x['shed'] for x in secs if x['status'] == 'critical')")" -gt 0
# Inside a critical stretch no INFO event gets in; its first and last second may also hold
# requests answered just before or after the switch (health is sampled once a second).
check "no INFO answered 202 inside a critical stretch (its edge seconds aside)" \
  test "$(j "sum(sev(x, ('INFO',), 'ok') for i, x in enumerate(secs) if 0 < i < len(secs) - 1 and secs[i - 1]['status'] == x['status'] == secs[i + 1]['status'] == 'critical')")" -eq 0
check "rows = events answered 202 ($(j "d['accounting']['rows']") = $(j "d['accounting']['events_202']"))" \
  test "$(j "d['accounting']['pass']")" = True

step "the HTML report in headless Chromium"
RUN_DIR=$TMP scripts/report-screenshot.sh "$TMP/report.html" "$TMP/report.png"
check "the report renders its charts (self-check, no console message, not blank)" test -s "$TMP/report.png"
