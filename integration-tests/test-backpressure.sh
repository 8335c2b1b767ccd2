#!/usr/bin/env bash
# The backpressure story, asserted end to end on real processes: nominal load is all 202s;
# with the consumer stopped and a 60 000-event backlog the gateway turns critical within two
# lag intervals, sheds INFO with 429 + Retry-After and still accepts ERROR; with the consumer
# back the lag drains and the rate returns to 1000; every 202 is exactly one row; Prometheus
# saw the episode. Exits non-zero on the first failed check.
set -euo pipefail

usage() { echo "usage: integration-tests/test-backpressure.sh   (env: BIN_DIR, TEST_DATABASE_ADMIN_URL, KEEP_TMP=1)"; }
case "${1:-}" in -h|--help) usage; exit 0 ;; "") ;; *) usage >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
LIB_TAG=backpressure
TMP=$(mktemp -d "${TMPDIR:-/tmp}/backpressure.XXXXXX")
RUN_DIR=$TMP
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

debug_bins
ensure_postgres
ensure_redis
ensure_prometheus

passed=0
failed=0
# shellcheck disable=SC2317
finish() {
  local rc=$?
  set +e
  for pf in "$TMP"/*.pid; do [ -f "$pf" ] && kill "$(cat "$pf")" 2>/dev/null; done
  sleep 1
  for pf in "$TMP"/*.pid; do [ -f "$pf" ] && kill -9 "$(cat "$pf")" 2>/dev/null; done
  [ -d "$TMP/kafka" ] && "$ROOT/scripts/kafka.sh" stop --data "$TMP/kafka" >/dev/null 2>&1
  psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
  if [ "$rc" -ne 0 ] || [ -n "${KEEP_TMP:-}" ]; then log "logs kept in $TMP"; else rm -rf "$TMP"; fi
  echo "backpressure scenario: $passed passed, $failed failed"
  exit "$rc"
}
trap finish EXIT

ADMIN_URL=${TEST_DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB="scenario_$(date +%s)_$$"
DATABASE_URL="${ADMIN_URL%/*}/$DB"
GW_PORT=$(free_port); LOADER_PORT=$(free_port)
CONSUMER_PORT=$(free_port); PROM_PORT=$(free_port)
TOPIC="scenario-$$-$RANDOM"
GROUP="scenario-$$"
GW="http://127.0.0.1:$GW_PORT"
LAG_INTERVAL_S=5

if [ -n "${KAFKA_BROKERS:-}" ]; then
  step "reusing the broker at $KAFKA_BROKERS (topics $TOPIC, $TOPIC.dlq)"
else
  step "starting Apache Kafka (one node, data in $TMP/kafka)"
  KAFKA_BROKERS=$("$ROOT/scripts/kafka.sh" start --data "$TMP/kafka" | tail -n 1)
fi
create_topics "$TOPIC" --bootstrap "$KAFKA_BROKERS"
export KAFKA_BROKERS KAFKA_TOPIC=$TOPIC LOG_FORMAT=json

start_consumer() {
  CONSUMER_ADDR="127.0.0.1:$CONSUMER_PORT" KAFKA_GROUP_ID=$GROUP DATABASE_URL=$DATABASE_URL \
    nohup "$BIN_DIR/log-consumer" >>"$TMP/consumer.log" 2>&1 &
  echo $! > "$TMP/consumer.pid"
  wait_for_http "http://127.0.0.1:$CONSUMER_PORT/health/ready" 60 "log-consumer" "$(cat "$TMP/consumer.pid")"
}
stop_consumer() {
  kill "$(cat "$TMP/consumer.pid")"
  wait_until 30 "log-consumer to exit" bash -c "! kill -0 $(cat "$TMP/consumer.pid") 2>/dev/null"
  rm -f "$TMP/consumer.pid"
}

step "log-consumer, api-gateway (lag interval ${LAG_INTERVAL_S}s), a loader gateway, Prometheus"
start_consumer
GATEWAY_ADDR="127.0.0.1:$GW_PORT" KAFKA_GROUP_ID=$GROUP LAG_INTERVAL_MS=$((LAG_INTERVAL_S * 1000)) \
  nohup "$BIN_DIR/api-gateway" >>"$TMP/gateway.log" 2>&1 &
echo $! > "$TMP/gateway.pid"
# The loader fills the topic fast: its own group, an unlimited rate, nothing shed.
GATEWAY_ADDR="127.0.0.1:$LOADER_PORT" KAFKA_GROUP_ID="loader-$$" RATE_MAX=1000000 RATE_MIN=1000000 SHED_BELOW=TRACE REDIS_URL='' \
  nohup "$BIN_DIR/api-gateway" >>"$TMP/loader.log" 2>&1 &
echo $! > "$TMP/loader.pid"
wait_for_http "$GW/health/ready" 60 "api-gateway" "$(cat "$TMP/gateway.pid")"
wait_for_http "http://127.0.0.1:$LOADER_PORT/health/ready" 60 "loader gateway" "$(cat "$TMP/loader.pid")"
cat > "$TMP/prometheus.yml" <<YAML
global: {scrape_interval: 2s, evaluation_interval: 2s}
scrape_configs:
  - job_name: api-gateway
    static_configs: [{targets: ["127.0.0.1:$GW_PORT"]}]
  - job_name: log-consumer
    static_configs: [{targets: ["127.0.0.1:$CONSUMER_PORT"]}]
YAML
start_prometheus "$TMP/prometheus.yml" "$TMP/prom-data" "$PROM_PORT" "$TMP/prometheus.log" "$TMP/prometheus.pid"

health() { curl -fsS --max-time 5 "$GW/api/logs/health"; }
field() { health | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
jq_py() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
# The load generator (crates/bench-baselines): BIN_DIR's loadgen, else built here. --rate is
# requests/s; every event is fresh and its eventId is appended to accepted.txt when accepted.
if [ ! -x "$BIN_DIR/loadgen" ]; then
  step "building loadgen"
  cargo build -q -p bench-baselines --bin loadgen
fi
LOADGEN=$BIN_DIR/loadgen
[ -x "$LOADGEN" ] || LOADGEN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/loadgen
drive() { "$LOADGEN" --ids "$TMP/accepted.txt" "$@"; }
all_202() { jq_py 'list(d["by_status"]) == ["202"] and d["errors"] == 0'; }
: > "$TMP/accepted.txt"

# 1. Nominal
step "1. nominal: 30 s at 500 events/s"
summary=$(drive --url "$GW/api/logs/batch" --rate $((500 / 10)) --duration 30 --batch 10 --concurrency 8)
log "$summary"
check "every nominal request answered 202" \
  test "$(echo "$summary" | all_202)" = True
check "15 000 events accepted" test "$(echo "$summary" | jq_py 'd["accepted_events"]')" -ge 14000
check "health healthy after nominal load" test "$(field status)" = healthy
check "lag below 10 000 after nominal load" test "$(field consumerLag)" -lt 10000

# 2. Overload
step "2. overload: consumer stopped, 60 000+ events pushed"
stop_consumer
summary=$(drive --url "http://127.0.0.1:$LOADER_PORT/api/logs/batch" --rate 13 --duration 5 --batch 1000 --concurrency 4)
log "$summary"
pushed=$(echo "$summary" | jq_py 'd["accepted_events"]')
check "more than 60 000 events in the backlog ($pushed)" test "$pushed" -gt 60000
pushed_at=$SECONDS
wait_until $((2 * LAG_INTERVAL_S + 3)) "health critical" bash -c "curl -fsS '$GW/api/logs/health' | grep -q '\"status\":\"critical\"'"
log "critical $((SECONDS - pushed_at)) s after the push"
check "critical within two lag intervals (+ query time)" test $((SECONDS - pushed_at)) -le $((2 * LAG_INTERVAL_S + 3))
check "current rate is 100" test "$(field currentRate)" = 100.0
summary=$(drive --url "$GW/api/logs" --rate 200 --duration 3 --severity INFO --concurrency 4)
log "INFO under critical load: $summary"
check "INFO gets 429s" test "$(echo "$summary" | jq_py 'd["by_status"].get("429", 0)')" -gt 0
check "every 429 carries Retry-After >= 1" test "$(echo "$summary" | jq_py 'd["missing_retry_after"]')" -eq 0
summary=$(drive --url "$GW/api/logs" --rate 5 --duration 3 --severity ERROR --concurrency 2)
log "ERROR under critical load: $summary"
check "ERROR events still accepted" test "$(echo "$summary" | all_202)" = True

# 3. Recovery
step "3. recovery: consumer restarted"
start_consumer
recovery_started=$SECONDS
wait_until 400 "the backlog to drain" bash -c "[ \"\$(curl -fsS '$GW/api/logs/health' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"consumerLag\"])')\" -lt 10000 ]"
log "lag below 10 000 after $((SECONDS - recovery_started)) s"
wait_until 400 "the lag to reach zero" bash -c "[ \"\$(curl -fsS '$GW/api/logs/health' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"consumerLag\"])')\" -eq 0 ]"
drained_at=$SECONDS
wait_until 60 "healthy at rate 1000" bash -c "curl -fsS '$GW/api/logs/health' | grep -q '\"currentRate\":1000.0'"
check "rate back to 1000 within 60 s of the drain" test $((SECONDS - drained_at)) -le 60
check "health healthy again" test "$(field status)" = healthy

# 4. Accounting
step "4. accounting"
accepted=$(sort -u "$TMP/accepted.txt" | wc -l)
psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1 <<SQL
CREATE TEMP TABLE accepted (event_id uuid);
\copy accepted FROM '$TMP/accepted.txt'
CREATE TABLE scenario_result AS
SELECT (SELECT count(*) FROM log_events) AS rows,
       (SELECT count(DISTINCT event_id) FROM log_events) AS distinct_rows,
       (SELECT count(*) FROM (SELECT DISTINCT event_id FROM accepted) a
          WHERE NOT EXISTS (SELECT 1 FROM log_events l WHERE l.event_id = a.event_id)) AS missing;
SQL
read -r rows distinct_rows missing < <(psql "$DATABASE_URL" -tA -F' ' -c "SELECT rows, distinct_rows, missing FROM scenario_result")
log "accepted ids: $accepted, rows: $rows, distinct: $distinct_rows, missing: $missing"
check "no duplicate rows" test "$rows" -eq "$distinct_rows"
check "every 202 is a row" test "$missing" -eq 0
check "rows = distinct eventIds that got 202" test "$rows" -eq "$accepted"

promq() { curl -fsS --max-time 10 "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1" \
  | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "nan")'; }
check "Prometheus saw the lag peak above 50 000" \
  python3 -c "import sys; sys.exit(not float('$(promq 'max_over_time(kafka_consumer_lag{partition=""}[30m])')') >= 50000)"
check "Prometheus saw the critical state" \
  python3 -c "import sys; sys.exit(not float('$(promq 'max_over_time(backpressure_status[30m])')') == 2)"
check "Prometheus saw the 429s" \
  python3 -c "import sys; sys.exit(not float('$(promq 'sum(increase(http_requests_total{status="429"}[30m]))')') > 0)"
