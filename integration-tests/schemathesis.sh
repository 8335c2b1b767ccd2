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
~/.cache/log-ingest/ (once), starts api-gateway from BIN_DIR (default target/debug; built
when missing) on a free port with its own topic on KAFKA_BROKERS (or on an Apache Kafka node
it starts and stops itself), and runs every check (--checks all) with at most N examples per
operation and phase [default 100]. The seed is random unless given (schemathesis prints it).
Hooks: integration-tests/schemathesis_hooks.py (NDJSON bodies; the moving timestamp bound).

env: BIN_DIR, KAFKA_BROKERS, KEEP_TMP=1 (keep the gateway's and schemathesis' logs of a passing run too).
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
own_kafka=

cleanup() {
  local rc=$?
  set +e
  stop_pidfile "$TMP/api-gateway.pid" api-gateway 2>/dev/null
  [ -n "$own_kafka" ] && "$ROOT/scripts/kafka.sh" stop --data "$TMP/kafka" >/dev/null 2>&1
  if [ "$rc" -eq 0 ] && [ -z "${KEEP_TMP:-}" ]; then
    rm -rf "$TMP"
  else
    log "api-gateway.log and schemathesis.log kept in $TMP"
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

if [ ! -x "$BIN_DIR/api-gateway" ]; then
  step "building api-gateway into $BIN_DIR"
  profile=()
  [ "$(basename "$BIN_DIR")" = release ] && profile=(--release)
  cargo build "${profile[@]}" --bin api-gateway >&2
fi

topic="schemathesis-$(date +%s)-$RANDOM"
if [ -n "${KAFKA_BROKERS:-}" ]; then
  step "reusing the broker at $KAFKA_BROKERS (topic $topic)"
else
  step "starting Apache Kafka (one node, data in $TMP/kafka)"
  own_kafka=1
  KAFKA_BROKERS=$("$ROOT/scripts/kafka.sh" start --data "$TMP/kafka" | tail -n 1)
fi
"$ROOT/scripts/kafka.sh" create-topic "$topic" --partitions 3 --bootstrap "$KAFKA_BROKERS"

port=$(free_port)
url="http://127.0.0.1:$port"
step "starting api-gateway on $url ($BIN_DIR)"
# No Redis and a rate far above what the test sends: the requests reach validation and the
# producer instead of stopping at the limiter (429 is documented and unit-tested).
env KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_TOPIC="$topic" KAFKA_GROUP_ID="$topic-group" \
  GATEWAY_ADDR="127.0.0.1:$port" REDIS_URL= RATE_MAX=1000000 RATE_MIN=1000000 \
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
[ "$rc" -eq 0 ] || die "schemathesis found disagreements between /openapi.json and the gateway (exit $rc)"
log "schemathesis: no failures ($((SECONDS - t0))s)"
