#!/usr/bin/env bash
# Every query of every Grafana dashboard must parse and return data from a real Prometheus
# scraping the real services under real traffic (integration-tests/check-dashboards.py), and
# every SQL panel must use a provisioned datasource and return rows from the real database
# the consumer filled (integration-tests/check-dashboard-sql.py).
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: integration-tests/test-dashboards.sh [-h]

Default: starts what it needs and stops it again —
  an Apache Kafka node on free ports (or, when KAFKA_BROKERS is set, that broker with fresh topics),
  a fresh database on TEST_DATABASE_ADMIN_URL's server, api-gateway and log-consumer from
  BIN_DIR (default target/release; built when missing) on free ports, Prometheus on a free
  port scraping them every second; sends traffic (single and batch events, invalid events,
  a burst above RATE_MAX for 429s, one poison record for the DLQ), waits until the consumer
  stored the accepted events and two more scrapes happened, then checks the queries.
With GATEWAY_URL and CONSUMER_URL (loopback only, e.g. http://127.0.0.1:8080 and :8081):
  uses those running services instead (e.g. after ./setup.sh) and sends a little traffic;
  the SQL panels then run against DATABASE_URL when it is set (else only their datasource
  is checked).

env: BIN_DIR, KAFKA_BROKERS, TEST_DATABASE_ADMIN_URL (postgres://postgres@127.0.0.1:5432/postgres),
  REDIS_URL (redis://127.0.0.1:6379; must answer), DASHBOARD_SPARSE_METRICS (metric names
  allowed to be absent), KEEP_TMP=1 (keep logs and data of a passing run too).
USAGE
}
case "${1:-}" in -h|--help) usage; exit 0 ;; "") ;; *) usage >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
LIB_TAG=dashboards
TMP=$(mktemp -d "${TMPDIR:-/tmp}/test-dashboards.XXXXXX")
RUN_DIR=$TMP
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

BIN_DIR=${BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
ADMIN_URL=${TEST_DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
own_kafka=
db_name=

cleanup() {
  local rc=$?
  set +e
  stop_pidfile "$TMP/prometheus.pid" Prometheus 2>/dev/null
  stop_pidfile "$TMP/api-gateway.pid" api-gateway 2>/dev/null
  stop_pidfile "$TMP/log-consumer.pid" log-consumer 2>/dev/null
  [ -n "$own_kafka" ] && "$ROOT/scripts/kafka.sh" stop --data "$TMP/kafka" >/dev/null 2>&1
  [ -n "$db_name" ] && psql "$ADMIN_URL" -qc "drop database if exists $db_name with (force)" >/dev/null 2>&1
  if [ "$rc" -eq 0 ] && [ -z "${KEEP_TMP:-}" ]; then
    rm -rf "$TMP"
  else
    log "logs and data kept in $TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

prom_value() { # PromQL -> first value, or empty
  curl -fsS --max-time 5 "$PROM_URL/api/v1/query" --data-urlencode "query=$1" 2>/dev/null \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")' 2>/dev/null || true
}
prom_at_least() { # PromQL N: the query's first value is >= N
  local v; v=$(prom_value "$1")
  [ -n "$v" ] && python3 -c "import sys; sys.exit(0 if float('$v') >= float('$2') else 1)"
}

event() { # severity -> one event JSON
  printf '{"correlationId":"dash-%s","severity":"%s","message":"dashboard test","source":"test-dashboards","timestamp":%s}' \
    "$RANDOM" "$1" "$(date +%s%3N)"
}
post() { # path body -> HTTP status
  curl -sS -o /dev/null -w '%{http_code}' --max-time 15 -H 'content-type: application/json' \
    -X POST "$GATEWAY_URL$1" --data-binary "$2" || echo 000
}

if [ -n "${GATEWAY_URL:-}" ] || [ -n "${CONSUMER_URL:-}" ]; then
  if [ -z "${GATEWAY_URL:-}" ] || [ -z "${CONSUMER_URL:-}" ]; then
    die "set both GATEWAY_URL and CONSUMER_URL (or neither)"
  fi
  mode=external
  gateway_target=$(loopback_hostport "$GATEWAY_URL") || exit 1
  consumer_target=$(loopback_hostport "$CONSUMER_URL") || exit 1
  # Nothing here can make the running consumer dead-letter an event.
  DASHBOARD_SPARSE_METRICS=${DASHBOARD_SPARSE_METRICS-consumer_dead_letters_total}
  export DASHBOARD_SPARSE_METRICS
  step "using running services: api-gateway $gateway_target, log-consumer $consumer_target"
else
  mode=own
  redis_answers || die "Redis does not answer on 127.0.0.1:6379 (integration-tests/run.sh or ./setup.sh starts it)"
  psql "$ADMIN_URL" -Atqc 'select 1' >/dev/null || die "PostgreSQL does not accept $ADMIN_URL (set TEST_DATABASE_ADMIN_URL)"
  if [ ! -x "$BIN_DIR/api-gateway" ] || [ ! -x "$BIN_DIR/log-consumer" ]; then
    profile=()
    [ "$(basename "$BIN_DIR")" = release ] && profile=(--release)
    step "building api-gateway and log-consumer into $BIN_DIR"
    cargo build "${profile[@]}" --bin api-gateway --bin log-consumer >&2
  fi

  suffix=$(date +%s)-$RANDOM
  topic="dash-$suffix"
  if [ -n "${KAFKA_BROKERS:-}" ]; then
    step "reusing the broker at $KAFKA_BROKERS (topics $topic, $topic.dlq)"
  else
    step "starting Apache Kafka (one node, data in $TMP/kafka)"
    own_kafka=1
    KAFKA_BROKERS=$("$ROOT/scripts/kafka.sh" start --data "$TMP/kafka" | tail -n 1)
  fi
  create_topics "$topic" --bootstrap "$KAFKA_BROKERS"

  db_name="dash_$(date +%s)_$RANDOM"
  psql "$ADMIN_URL" -qc "create database $db_name" >/dev/null
  database_url="${ADMIN_URL%/*}/$db_name"

  gateway_port=$(free_port)
  consumer_port=$(free_port)
  gateway_target="127.0.0.1:$gateway_port"
  consumer_target="127.0.0.1:$consumer_port"
  GATEWAY_URL="http://$gateway_target"
  CONSUMER_URL="http://$consumer_target"
  common=(KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_TOPIC="$topic" KAFKA_GROUP_ID="dash-group-$suffix"
    LOG_FORMAT=text RUST_LOG="${RUST_LOG:-info}")
  step "starting api-gateway on $gateway_target and log-consumer on $consumer_target ($BIN_DIR)"
  # A low RATE_MAX so that the burst below meets the limiter; a short LAG_INTERVAL_MS so
  # the lag gauges appear within seconds.
  env "${common[@]}" GATEWAY_ADDR="$gateway_target" REDIS_URL="$REDIS_URL" \
    RATE_MAX=50 RATE_MIN=10 LAG_INTERVAL_MS=1000 \
    "$BIN_DIR/api-gateway" >"$TMP/api-gateway.log" 2>&1 &
  echo $! >"$TMP/api-gateway.pid"
  env "${common[@]}" CONSUMER_ADDR="$consumer_target" KAFKA_DLQ_TOPIC="$topic.dlq" DATABASE_URL="$database_url" \
    "$BIN_DIR/log-consumer" >"$TMP/log-consumer.log" 2>&1 &
  echo $! >"$TMP/log-consumer.pid"
  wait_for_http "$GATEWAY_URL/health/ready" 90 "api-gateway (log $TMP/api-gateway.log)" "$(cat "$TMP/api-gateway.pid")"
  wait_for_http "$CONSUMER_URL/health/ready" 90 "log-consumer (log $TMP/log-consumer.log)" "$(cat "$TMP/log-consumer.pid")"
fi

prom_port=$(free_port)
PROM_URL="http://127.0.0.1:$prom_port"
{
  printf 'global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n'
  printf 'rule_files:\n  - %s/prometheus/alerts.yml\n' "$ROOT"
  printf 'scrape_configs:\n'
  printf '  - job_name: api-gateway\n    static_configs:\n      - targets: ["%s"]\n' "$gateway_target"
  printf '  - job_name: log-consumer\n    static_configs:\n      - targets: ["%s"]\n' "$consumer_target"
} >"$TMP/prometheus.yml"
ensure_prometheus
step "starting Prometheus on 127.0.0.1:$prom_port"
start_prometheus "$TMP/prometheus.yml" "$TMP/prometheus-data" "$prom_port" "$TMP/prometheus.log" "$TMP/prometheus.pid"

scrapes_since() { # EPOCH N: both services were scraped at least N times since EPOCH
  local window=$(( $(date +%s) - $1 ))
  [ "$window" -ge 1 ] || return 1
  prom_at_least "min(count_over_time(up{job=~\"api-gateway|log-consumer\"}[${window}s]))" "$2"
}
declare -A statuses=()
count() { statuses[$1]=$(( ${statuses[$1]:-0} + 1 )); }
accepted=0
some_traffic() { # singles, a batch, invalid requests
  local i s sev
  for i in $(seq 1 10); do
    sev=INFO; [ $((i % 4)) -eq 0 ] && sev=ERROR
    s=$(post /api/logs "$(event "$sev")"); count "$s"
    if [ "$s" = 202 ]; then accepted=$((accepted + 1)); fi
  done
  s=$(post /api/logs/batch "[$(event INFO),$(event WARN),$(event ERROR),$(event INFO),$(event DEBUG)]"); count "$s"
  if [ "$s" = 202 ]; then accepted=$((accepted + 5)); fi
  count "$(post /api/logs '{"correlationId":"dash-bad","message":"no severity"}')"
  count "$(post /api/logs 'not json')"
}
# Two rounds with scrapes between them, so that counters which appear with the first round
# have grown by the next scrapes and rates are above zero.
step "sending traffic to $GATEWAY_URL (round 1)"
some_traffic
round1=$(date +%s)
wait_until 60 "a scrape of both services after round 1" scrapes_since "$round1" 2
step "sending traffic to $GATEWAY_URL (round 2)"
some_traffic
if [ "$mode" = own ]; then
  # 200 requests from 8 workers against RATE_MAX=50: the limiter must answer some 429s.
  event INFO >"$TMP/burst.json"
  while read -r s; do
    count "$s"
    [ "$s" = 202 ] && accepted=$((accepted + 1))
  done < <(seq 1 200 | xargs -P 8 -I{} curl -sS -o /dev/null -w '%{http_code}\n' --max-time 15 \
    -H 'content-type: application/json' -X POST "$GATEWAY_URL/api/logs" --data-binary "@$TMP/burst.json")
  # One record that is no log event, straight to the topic: the consumer must dead-letter it.
  echo '{"not":"a log event"}' \
    | timeout 60 "$ROOT/scripts/kafka.sh" produce "$topic" --key dash-poison --bootstrap "$KAFKA_BROKERS" >/dev/null 2>&1 \
    || warn "could not produce the poison record"
fi
summary=""
for s in "${!statuses[@]}"; do summary+="$s:${statuses[$s]} "; done
log "HTTP statuses: $summary; events accepted: $accepted"
[ "$accepted" -gt 0 ] || die "the gateway accepted no event (statuses $summary); see its log"
[ "$mode" = external ] || [ -n "${statuses[429]:-}" ] || warn "the burst met no 429 (RATE_MAX not honoured?)"

if [ "$mode" = own ]; then
  step "waiting until log-consumer stored the $accepted accepted events"
  wait_until 90 "log-consumer to store $accepted events (log $TMP/log-consumer.log)" \
    prom_at_least 'sum(consumer_events_processed_total{outcome=~"stored|duplicate"})' "$accepted"
fi
after=$(date +%s)
step "waiting for two scrapes after the traffic"
wait_until 60 "two scrapes of both services after the traffic" scrapes_since "$after" 2

step "checking the dashboard queries"
python3 "$ROOT/integration-tests/check-dashboards.py" "$PROM_URL" "$ROOT"/grafana/dashboards/*.json

step "checking the dashboards' SQL panels"
if [ "$mode" = own ]; then
  sql_url=$database_url
elif [ -n "${DATABASE_URL:-}" ]; then
  sql_url=$DATABASE_URL
else
  warn "DATABASE_URL is not set: the SQL panels' datasource is checked, their queries are not run"
  sql_url=-
fi
python3 "$ROOT/integration-tests/check-dashboard-sql.py" "$sql_url" "$ROOT"/grafana/dashboards/*.json
