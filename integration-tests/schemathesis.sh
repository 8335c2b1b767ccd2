#!/usr/bin/env bash
# Schema-driven API test: schemathesis generates valid and invalid requests from the gateway's
# own /openapi.json and checks every answer against it (status, headers, content type, body
# schema, valid data accepted, invalid data refused). Any disagreement fails the run.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5

usage() {
  cat <<USAGE
usage: integration-tests/schemathesis.sh [--examples N] [--seed S] [-h]

Installs schemathesis ${SCHEMATHESIS_VERSION} from PyPI into a venv cached under
~/.cache/log-ingest/ (once), starts api-gateway and log-consumer from BIN_DIR (default
target/debug; built when missing) on free ports with their own topic on KAFKA_BROKERS (or on
an Apache Kafka node it starts and stops itself) and a fresh database on
TEST_DATABASE_ADMIN_URL's server (the consumer migrates it and stores what schemathesis
sends; the gateway's read API, GET /api/logs, reads it), and runs every check (--checks all)
with at most N examples per operation and phase [default 100]. The seed is random unless
given (schemathesis prints it).
Hooks: integration-tests/schemathesis_hooks.py (NDJSON bodies; the moving timestamp bound;
the read API's range rules).

env: BIN_DIR, KAFKA_BROKERS, TEST_DATABASE_ADMIN_URL (postgres://postgres@127.0.0.1:5432/postgres),
  KEEP_TMP=1 (keep the services' and schemathesis' logs of a passing run too).
USAGE
}
examples=100
seed=()
while [ $# -gt 0 ]; do
  case "$1" in
    --examples) examples=$2; shift 2 ;;
    --seed) seed=(--seed "$2"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
LIB_TAG=schemathesis
TMP=$(mktemp -d "${TMPDIR:-/tmp}/schemathesis.XXXXXX")
RUN_DIR=$TMP
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

BIN_DIR=${BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/debug}
VENV=${XDG_CACHE_HOME:-$HOME/.cache}/log-ingest/schemathesis-$SCHEMATHESIS_VERSION
ADMIN_URL=${TEST_DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
own_kafka=
db_name=

cleanup() {
  local rc=$?
  set +e
  stop_pidfile "$TMP/api-gateway.pid" api-gateway 2>/dev/null
  stop_pidfile "$TMP/log-consumer.pid" log-consumer 2>/dev/null
  [ -n "$own_kafka" ] && "$ROOT/scripts/kafka.sh" stop --data "$TMP/kafka" >/dev/null 2>&1
  [ -n "$db_name" ] && psql "$ADMIN_URL" -qc "drop database if exists $db_name with (force)" >/dev/null 2>&1
  if [ "$rc" -eq 0 ] && [ -z "${KEEP_TMP:-}" ]; then
    rm -rf "$TMP"
  else
    log "api-gateway.log, log-consumer.log and schemathesis.log kept in $TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The venv is complete only once the marker is written: an interrupted install starts over.
if [ ! -f "$VENV/.installed" ]; then
  t0=$SECONDS
  step "installing schemathesis $SCHEMATHESIS_VERSION from PyPI into $VENV (once)"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2 \
    || die "pip install schemathesis==$SCHEMATHESIS_VERSION failed"
  touch "$VENV/.installed"
  log "schemathesis installed ($((SECONDS - t0))s)"
fi

if [ ! -x "$BIN_DIR/api-gateway" ] || [ ! -x "$BIN_DIR/log-consumer" ]; then
  step "building api-gateway and log-consumer into $BIN_DIR"
  profile=()
  [ "$(basename "$BIN_DIR")" = release ] && profile=(--release)
  cargo build "${profile[@]}" --bin api-gateway --bin log-consumer >&2
fi
psql "$ADMIN_URL" -Atqc 'select 1' >/dev/null || die "PostgreSQL does not accept $ADMIN_URL (set TEST_DATABASE_ADMIN_URL)"

topic="schemathesis-$(date +%s)-$RANDOM"
if [ -n "${KAFKA_BROKERS:-}" ]; then
  step "reusing the broker at $KAFKA_BROKERS (topic $topic)"
else
  step "starting Apache Kafka (one node, data in $TMP/kafka)"
  own_kafka=1
  KAFKA_BROKERS=$("$ROOT/scripts/kafka.sh" start --data "$TMP/kafka" | tail -n 1)
fi
"$ROOT/scripts/kafka.sh" create-topic "$topic" --partitions 3 --bootstrap "$KAFKA_BROKERS"
"$ROOT/scripts/kafka.sh" create-topic "$topic.dlq" --partitions 3 --bootstrap "$KAFKA_BROKERS"

db_name="schemathesis_$(date +%s)_$RANDOM"
psql "$ADMIN_URL" -qc "create database $db_name" >/dev/null
database_url="${ADMIN_URL%/*}/$db_name"
consumer_port=$(free_port)
step "starting log-consumer on 127.0.0.1:$consumer_port (database $db_name)"
env KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_TOPIC="$topic" KAFKA_GROUP_ID="$topic-group" \
  KAFKA_DLQ_TOPIC="$topic.dlq" CONSUMER_ADDR="127.0.0.1:$consumer_port" DATABASE_URL="$database_url" \
  LOG_FORMAT=text RUST_LOG="${RUST_LOG:-warn}" \
  "$BIN_DIR/log-consumer" >"$TMP/log-consumer.log" 2>&1 &
echo $! >"$TMP/log-consumer.pid"
wait_for_http "http://127.0.0.1:$consumer_port/health/ready" 90 "log-consumer (log $TMP/log-consumer.log)" "$(cat "$TMP/log-consumer.pid")"

port=$(free_port)
url="http://127.0.0.1:$port"
step "starting api-gateway on $url ($BIN_DIR)"
# No Redis and a rate far above what the test sends: the requests reach validation and the
# producer instead of stopping at the limiter (429 is documented and unit-tested).
env KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_TOPIC="$topic" KAFKA_GROUP_ID="$topic-group" \
  GATEWAY_ADDR="127.0.0.1:$port" REDIS_URL= RATE_MAX=1000000 RATE_MIN=1000000 \
  DATABASE_READ_URL="$database_url" \
  LOG_FORMAT=text RUST_LOG="${RUST_LOG:-warn}" \
  "$BIN_DIR/api-gateway" >"$TMP/api-gateway.log" 2>&1 &
echo $! >"$TMP/api-gateway.pid"
wait_for_http "$url/health/ready" 90 "api-gateway (log $TMP/api-gateway.log)" "$(cat "$TMP/api-gateway.pid")"

step "schemathesis run $url/openapi.json --checks all --max-examples $examples"
t0=$SECONDS
set +e
# From the temp folder: schemathesis keeps its example database in the working directory.
(cd "$TMP" && PYTHONPATH="$ROOT/integration-tests${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=schemathesis_hooks \
  PYTHONDONTWRITEBYTECODE=1 NO_COLOR=1 timeout 600 "$VENV/bin/schemathesis" run "$url/openapi.json" \
  --checks all --max-examples "$examples" "${seed[@]}" --workers 2 --request-timeout 15 \
  --output-truncate true >"$TMP/schemathesis.log" 2>&1)
rc=$?
set -e
# The summary on success; everything (long lines cut) on failure.
if [ "$rc" -eq 0 ]; then
  sed -n '/SUMMARY/,$p' "$TMP/schemathesis.log"
else
  cut -c1-2000 "$TMP/schemathesis.log"
fi
kill -0 "$(cat "$TMP/api-gateway.pid")" 2>/dev/null || die "api-gateway died during the run (log $TMP/api-gateway.log)"
stored=$(psql "$database_url" -Atqc 'select count(*) from log_events' 2>/dev/null || echo '?')
log "log_events holds $stored rows the read API was queried over"
[ "$rc" -eq 0 ] || die "schemathesis found disagreements between /openapi.json and the gateway (exit $rc)"
log "schemathesis: no failures ($((SECONDS - t0))s)"
