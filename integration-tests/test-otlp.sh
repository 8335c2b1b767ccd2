#!/usr/bin/env bash
# OpenTelemetry logs in, tested with real OpenTelemetry SDKs that no one here wrote: the
# Python SDK (logging bridge, OTLP/HTTP protobuf) and the JavaScript SDK (OTLP/JSON) each send
# 5 000 records to a real gateway → Kafka → consumer → PostgreSQL and exactly 5 000 rows appear,
# mapped as the README's table says; under throttling (RATE_MAX=300) the Python exporter gets
# 429s with Retry-After, waits them out and every record is stored once; an export with
# invalid records gets 200 with rejected_log_records and the rest stored; the same export twice
# is stored once. The SDKs are installed into a virtual environment and node_modules in the
# temporary folder (pinned in integration-tests/otlp/). Exits non-zero on the first failure.
set -euo pipefail

usage() { echo "usage: integration-tests/test-otlp.sh   (env: BIN_DIR, KAFKA_BROKERS (else its own broker), TEST_DATABASE_ADMIN_URL, KEEP_TMP=1)"; }
case "${1:-}" in -h|--help) usage; exit 0 ;; "") ;; *) usage >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
LIB_TAG=otlp
TMP=$(mktemp -d "${TMPDIR:-/tmp}/otlp.XXXXXX")
RUN_DIR=$TMP
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

debug_bins
ensure_postgres
passed=0 failed=0
ADMIN_URL=${TEST_DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB="otlp_$(date +%s)_$$"
DATABASE_URL="${ADMIN_URL%/*}/$DB"
# shellcheck disable=SC2317
finish() {
  local rc=$?
  set +e
  for pf in "$TMP"/*.pid; do [ -f "$pf" ] && kill "$(cat "$pf")" 2>/dev/null; done
  sleep 1
  for pf in "$TMP"/*.pid; do [ -f "$pf" ] && kill -9 "$(cat "$pf")" 2>/dev/null; done
  [ -d "$TMP/kafka" ] && "$ROOT/scripts/kafka.sh" stop --data "$TMP/kafka" --delete >/dev/null 2>&1
  psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
  if [ "$rc" -ne 0 ] || [ -n "${KEEP_TMP:-}" ]; then log "logs kept in $TMP"; else rm -rf "$TMP"; fi
  echo "otlp: $passed passed, $failed failed"
  exit "$rc"
}
trap finish EXIT

step "installing the OpenTelemetry Python SDK into $TMP/venv (integration-tests/otlp/requirements.txt)"
python3 -m venv "$TMP/venv" >/dev/null 2>&1 || { apt_install python3-venv; python3 -m venv "$TMP/venv"; }
"$TMP/venv/bin/pip" install -q --disable-pip-version-check -r integration-tests/otlp/requirements.txt >"$TMP/pip.log" 2>&1 \
  || { tail -n 20 "$TMP/pip.log" >&2; die "pip install of the OpenTelemetry SDK failed (see $TMP/pip.log)"; }
step "installing the OpenTelemetry JavaScript SDK into $TMP/js (integration-tests/otlp/package-lock.json)"
command -v npm >/dev/null || apt_install nodejs npm
mkdir -p "$TMP/js" && cp integration-tests/otlp/package.json integration-tests/otlp/package-lock.json integration-tests/otlp/sdk_js.mjs "$TMP/js/"
(cd "$TMP/js" && npm ci --silent --no-audit --no-fund >"$TMP/npm.log" 2>&1) \
  || { tail -n 20 "$TMP/npm.log" >&2; die "npm ci of the OpenTelemetry JavaScript SDK failed (see $TMP/npm.log)"; }

TOPIC="otlp-$$-$RANDOM"
if [ -z "${KAFKA_BROKERS:-}" ]; then
  step "starting Apache Kafka (one node, data in $TMP/kafka)"
  KAFKA_BROKERS=$("$ROOT/scripts/kafka.sh" start --data "$TMP/kafka" | tail -n 1)
fi
create_topics "$TOPIC" --bootstrap "$KAFKA_BROKERS" >/dev/null
export KAFKA_BROKERS KAFKA_TOPIC=$TOPIC KAFKA_GROUP_ID=$TOPIC LOG_FORMAT=json REDIS_URL=
GW_PORT=$(free_port) SLOW_PORT=$(free_port) CONSUMER_PORT=$(free_port)
step "starting log-consumer, an api-gateway (RATE_MAX=50000) and a throttled one (RATE_MAX=300) on topic $TOPIC"
CONSUMER_ADDR="127.0.0.1:$CONSUMER_PORT" DATABASE_URL=$DATABASE_URL nohup "$BIN_DIR/log-consumer" >"$TMP/consumer.log" 2>&1 &
echo $! > "$TMP/consumer.pid"
# The first gateway's rate is far above what the SDKs send, so that their runs test the mapping
# and exactly-once delivery; throttling is the second gateway's job. (The JavaScript SDK sends
# a flush's batches concurrently and gives up on a batch after 5 tries or its 10 s timeout, so a
# burst well above RATE_MAX can lose records in the SDK: README, "OpenTelemetry (OTLP) logs".)
GATEWAY_ADDR="127.0.0.1:$GW_PORT" RATE_MAX=50000 nohup "$BIN_DIR/api-gateway" >"$TMP/gateway.log" 2>&1 &
echo $! > "$TMP/gateway.pid"
GATEWAY_ADDR="127.0.0.1:$SLOW_PORT" RATE_MAX=300 RATE_MIN=100 nohup "$BIN_DIR/api-gateway" >"$TMP/gateway-slow.log" 2>&1 &
echo $! > "$TMP/gateway-slow.pid"
wait_for_http "http://127.0.0.1:$CONSUMER_PORT/health/ready" 90 log-consumer "$(cat "$TMP/consumer.pid")"
wait_for_http "http://127.0.0.1:$GW_PORT/health/ready" 60 api-gateway "$(cat "$TMP/gateway.pid")"
wait_for_http "http://127.0.0.1:$SLOW_PORT/health/ready" 60 "api-gateway (throttled)" "$(cat "$TMP/gateway-slow.pid")"
URL="http://127.0.0.1:$GW_PORT/v1/logs" SLOW="http://127.0.0.1:$SLOW_PORT/v1/logs"
RUN="r$$"

sql() { psql "$DATABASE_URL" -XAtqc "$1"; }
# rows_reach N WHERE: waits (60 s at most) until N rows match, then checks there are no more.
rows_reach() {
  local n=$1 where=$2 got deadline=$((SECONDS + 60))
  while got=$(sql "SELECT count(*) FROM log_events WHERE $where"); [ "$got" -lt "$n" ] && [ $SECONDS -lt $deadline ]; do sleep 1; done
  sleep 2  # a late duplicate would show now
  got=$(sql "SELECT count(*) || ' ' || count(DISTINCT event_id) FROM log_events WHERE $where")
  log "rows where $where: $got (want $n $n)"
  [ "$got" = "$n $n" ]
}
# check_eq DESCRIPTION ACTUAL EXPECTED: like check, printing both on a failure.
check_eq() {
  [ "$2" = "$3" ] || { log "got:  $2"; log "want: $3"; }
  check "$1" test "$2" = "$3"
}
jq_py() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2], {}, {'d': d}) else 1)" "$@"; }

step "Python SDK: 5 000 records through logging → BatchLogRecordProcessor → OTLP/HTTP protobuf"
"$TMP/venv/bin/python" integration-tests/otlp/sdk_python.py sdk "$URL" --count 5000 --run "py$RUN" | tee "$TMP/py.json"
check "the Python exporter flushed without errors" jq_py "$TMP/py.json" 'd["flushed"] and not d["errors"]'
check "5 000 Python records are 5 000 rows" rows_reach 5000 "source = 'py-py$RUN'"
check_eq "severities map by number: 1 000 each of DEBUG, INFO, WARN, ERROR, FATAL" \
  "$(sql "SELECT string_agg(severity || '=' || n, ',' ORDER BY severity) FROM (SELECT severity, count(*) n FROM log_events WHERE source = 'py-py$RUN' GROUP BY 1) s")" \
  "DEBUG=1000,ERROR=1000,FATAL=1000,INFO=1000,WARN=1000"
trace=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['trace_of_0'])" "$TMP/py.json")
check_eq "record 0: message, trace id → correlationId, attributes (span_id, seq, scope, resource)" \
  "$(sql "SELECT message || '|' || correlation_id || '|' || (attributes->>'seq') || '|' || (attributes ? 'span_id') || '|' || (attributes->>'scope.name') || '|' || (attributes->>'resource.telemetry.sdk.language') FROM log_events WHERE source = 'py-py$RUN' AND attributes->>'seq' = '0'")" \
  "python record 0 of py$RUN|$trace|0|true|otlp.test.py$RUN|python"
check_eq "a record outside a span has correlationId none" \
  "$(sql "SELECT correlation_id FROM log_events WHERE source = 'py-py$RUN' AND attributes->>'seq' = '1'")" none
check_eq "timestamps are the records' own times (within the run)" \
  "$(sql "SELECT count(*) FROM log_events WHERE source = 'py-py$RUN' AND (event_time > received_at OR event_time < received_at - interval '5 minutes')")" 0

step "JavaScript SDK: 5 000 records through BatchLogRecordProcessor → OTLP/HTTP JSON"
(cd "$TMP/js" && node sdk_js.mjs "$URL" 5000 "js$RUN") | tee "$TMP/js.json"
check "5 000 JavaScript records are 5 000 rows" rows_reach 5000 "source = 'js-js$RUN'"
check_eq "JS fields: message, severity, attributes, scope version" \
  "$(sql "SELECT message || '|' || severity || '|' || (attributes->>'http.route') || '|' || (attributes->>'scope.version') FROM log_events WHERE source = 'js-js$RUN' AND attributes->>'seq' = '3'")" \
  "js record 3 of js$RUN|ERROR|/checkout|1.0.0"

step "throttled: 3 000 Python records, gzip-compressed, to a gateway at RATE_MAX=300"
"$TMP/venv/bin/python" integration-tests/otlp/sdk_python.py sdk "$SLOW" --count 3000 --run "slow$RUN" --gzip | tee "$TMP/slow.json"
check "the exporter was answered 429 and retried" jq_py "$TMP/slow.json" 'd["retries"] > 0 and "Too Many Requests" in d["retry_lines"][0]'
check "it waited exactly the Retry-After (a whole number of seconds, no jitter)" jq_py "$TMP/slow.json" \
  'any(l.rstrip("s.").endswith(".00") for l in d["retry_lines"])'
check "the throttled gateway counted throttled OTLP records" \
  bash -c "curl -fsS http://127.0.0.1:$SLOW_PORT/metrics | grep -qE '^otlp_log_records_total\{outcome=\"throttled\"\} [1-9]'"
check "every throttled record is stored exactly once" rows_reach 3000 "source = 'py-slow$RUN'"

step "hand-built exports: partial success, the same export twice, bad bodies, a 429"
"$TMP/venv/bin/python" integration-tests/otlp/sdk_python.py raw "$URL" --run "raw$RUN" --throttled-url "$SLOW" | tee "$TMP/raw.json"
check "3 invalid of 10 records: 200, rejected_log_records 3, reasons named" jq_py "$TMP/raw.json" \
  'd["partial"]["status"] == 200 and d["partial"]["rejected"] == 3 and "U+0000" in d["partial"]["message"] and "body is empty" in d["partial"]["message"]'
check "the 7 valid records of that export are stored" rows_reach 7 "source = 'raw-raw$RUN' AND message LIKE 'partial %'"
check "the same export twice: 200 both times" jq_py "$TMP/raw.json" 'd["twice"] == [200, 200]'
check "... and each of its 5 records stored once" rows_reach 5 "source = 'raw-raw$RUN' AND message LIKE 'twice %'"
check "undecodable protobuf: 400, a protobuf Status" jq_py "$TMP/raw.json" \
  'd["garbage"]["status"] == 400 and d["garbage"]["type"] == "application/x-protobuf"'
check "invalid OTLP/JSON: 400, a JSON Status with code 3 (INVALID_ARGUMENT)" jq_py "$TMP/raw.json" \
  'd["bad_json"]["status"] == 400 and d["bad_json"]["body"]["code"] == 3'
check "throttled: 429 with Retry-After and a protobuf Status" jq_py "$TMP/raw.json" \
  'd["throttled"]["status"] == 429 and int(d["throttled"]["retry_after"]) >= 1 and d["throttled"]["type"] == "application/x-protobuf"'
check_eq "nothing went to dead_letters" "$(sql "SELECT count(*) FROM dead_letters")" 0
