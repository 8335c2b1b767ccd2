#!/usr/bin/env bash
# The fault matrix: real api-gateway, log-consumer, a one-node Apache Kafka, PostgreSQL and a
# private Redis; per run a fresh database, topic and group, load through the HTTP API
# (integration-tests/faults.py), one fault injected and healed, then every acknowledged id
# checked against log_events. Prints a line per run and a table; a complete matrix writes
# docs/RELIABILITY.md. Exits non-zero on a lost, duplicated or unexpected row, or a run that
# did not heal.
set -euo pipefail

FAULTS=(kill-gateway kill-consumer term-gateway term-consumer kill-broker redis-kill)
usage() { echo "usage: integration-tests/faults.sh [--runs N (24)] [--seed S (random)] [--only FAULT] [--help]   faults: ${FAULTS[*]}   (env: BIN_DIR, TEST_DATABASE_ADMIN_URL, KEEP_TMP=1)"; }
RUNS=24 SEED=$((RANDOM * 32768 + RANDOM)) ONLY='' CMDLINE="integration-tests/faults.sh $*"
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { usage >&2; exit 2; }
[ -z "$ONLY" ] || [[ " ${FAULTS[*]} " == *" $ONLY "* ]] || { echo "unknown fault: $ONLY" >&2; usage >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
LIB_TAG=faults
TMP=$(mktemp -d "${TMPDIR:-/tmp}/faults.XXXXXX")
RUN_DIR=$TMP
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
PY="$ROOT/integration-tests/faults.py"
ADMIN_URL=${TEST_DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
KDATA=$TMP/kafka
RESULTS=$TMP/results.jsonl
KEEP_DBS=()
STARTED=$SECONDS

# shellcheck disable=SC2317
finish() {
  local rc=$? db
  set +e
  { for pf in "$TMP"/*.pid; do [ -f "$pf" ] && kill -9 "$(cat "$pf")" && wait "$(cat "$pf")"; rm -f "$pf"; done; } 2>/dev/null
  [ -f "$KDATA/watchdog.pid" ] && kill "$(cat "$KDATA/watchdog.pid")"  # kafka.sh's --owner watchdog: we stop it ourselves
  for f in "$KDATA"/node-*/server.log; do [ -f "$f" ] && cp "$f" "$TMP/kafka-$(basename "$(dirname "$f")").log"; done
  [ -d "$KDATA" ] && "$ROOT/scripts/kafka.sh" stop --data "$KDATA" --delete >/dev/null 2>&1
  stop_started_services
  for db in $(psql "$ADMIN_URL" -XAtqc "SELECT datname FROM pg_database WHERE datname LIKE 'faults\_$$\_%'"); do
    [[ " ${KEEP_DBS[*]} " == *" $db "* ]] || psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
  done
  [ ${#KEEP_DBS[@]} -eq 0 ] || log "databases kept for inspection: ${KEEP_DBS[*]}"
  if [ "$rc" -ne 0 ] || [ -n "${KEEP_TMP:-}" ]; then log "logs kept in $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

# A snapshot of the binaries: a rebuild in the work tree during the matrix changes nothing here.
BIN_DIR=${BIN_DIR:-$ROOT/target/debug}
if [ ! -x "$BIN_DIR/api-gateway" ] || [ ! -x "$BIN_DIR/log-consumer" ]; then
  step "building the binaries"; cargo build --bins; BIN_DIR=$ROOT/target/debug
fi
mkdir -p "$TMP/bin" && cp "$BIN_DIR/api-gateway" "$BIN_DIR/log-consumer" "$TMP/bin/"
ensure_postgres
REDIS_PORT=$(free_port)   # our own Redis, started (and killed) by the matrix only
ensure_redis
step "starting Apache Kafka (one node, data in $KDATA)"
KAFKA_BROKERS=$("$ROOT/scripts/kafka.sh" start --data "$KDATA" --owner $$ 2>"$TMP/kafka-start.log" | tail -n 1) \
  || { tail -n 20 "$TMP/kafka-start.log" >&2; die "scripts/kafka.sh start failed"; }
export KAFKA_BROKERS LOG_FORMAT=json REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

start_gateway() {
  GATEWAY_ADDR="127.0.0.1:$GW_PORT" nohup "$TMP/bin/api-gateway" >>"$RD/gateway.log" 2>&1 &
  echo $! > "$TMP/gateway.pid"
  (wait_for_http "http://127.0.0.1:$GW_PORT/health/ready" 60 api-gateway "$(cat "$TMP/gateway.pid")")
}
start_consumer() {
  CONSUMER_ADDR="127.0.0.1:$CONSUMER_PORT" DATABASE_URL=$DB_URL nohup "$TMP/bin/log-consumer" >>"$RD/consumer.log" 2>&1 &
  echo $! > "$TMP/consumer.pid"
  (wait_for_http "http://127.0.0.1:$CONSUMER_PORT/health/ready" 60 log-consumer "$(cat "$TMP/consumer.pid")")
}
# signal_proc NAME SIGNAL: signals the process and waits until it has exited (SIGKILL after 30 s).
signal_proc() {
  local pid i
  pid=$(cat "$TMP/$1.pid")
  { # the braces keep bash's "Killed" job notice out of the output
    kill "-$2" "$pid" || true
    for ((i = 0; i < 300; i++)); do kill -0 "$pid" || break; sleep 0.1; done
    if kill -0 "$pid"; then echo "FAILED $1-ignored-SIG$2" >> "$RD/heals"; kill -9 "$pid"; fi
    wait "$pid" || true
  } 2>/dev/null
  rm -f "$TMP/$1.pid"
}
healed() { echo "$1 $(date +%s.%N)" >> "$RD/heals"; }  # heal start / component ready again
inject() { # inject FAULT HOLD: the fault, HOLD seconds of it, then the heal
  case "$1" in
    kill-gateway|term-gateway) signal_proc gateway "$([ "$1" = kill-gateway ] && echo KILL || echo TERM)" ;;
    kill-consumer|term-consumer) signal_proc consumer "$([ "$1" = kill-consumer ] && echo KILL || echo TERM)" ;;
    kill-broker) "$ROOT/scripts/kafka.sh" kill-node 1 --signal KILL --data "$KDATA" >&2 ;;
    redis-kill) kill -9 "$(cat "$TMP/redis.pid")"; rm -f "$TMP/redis.pid" ;;
  esac
  log "fault $1 injected, healing in $2 s"
  sleep "$2"
  healed start
  case "$1" in
    *-gateway) start_gateway || echo "FAILED gateway-restart" >> "$RD/heals" ;;
    *-consumer) start_consumer || echo "FAILED consumer-restart" >> "$RD/heals" ;;
    kill-broker) "$ROOT/scripts/kafka.sh" restart-node 1 --data "$KDATA" >&2 || echo "FAILED broker-restart" >> "$RD/heals" ;;
    redis-kill) (ensure_redis) || echo "FAILED redis-restart" >> "$RD/heals" ;;
  esac
  healed ready
  log "fault $1 healed"
}

REV="$(git rev-parse --short HEAD)$(git diff-index --quiet HEAD -- 2>/dev/null || echo ' (work tree with uncommitted changes)')"
step "fault matrix: $RUNS runs, seed $SEED${ONLY:+, only $ONLY}, revision $REV"
for ((run = 1; run <= RUNS; run++)); do
  FAULT=${ONLY:-${FAULTS[$(((run - 1) % ${#FAULTS[@]}))]}}
  RD=$TMP/run-$run; mkdir -p "$RD"
  DB="faults_$$_$run"; DB_URL="${ADMIN_URL%/*}/$DB"
  export KAFKA_TOPIC="faults-$$-$run" KAFKA_GROUP_ID="faults-$$-$run"
  GW_PORT=$(free_port); CONSUMER_PORT=$(free_port)
  step "run $run/$RUNS: $FAULT (database $DB, topic $KAFKA_TOPIC)"
  psql "$ADMIN_URL" -qc "CREATE DATABASE $DB" >/dev/null
  for t in "$KAFKA_TOPIC" "$KAFKA_TOPIC.dlq"; do
    "$ROOT/scripts/kafka.sh" create-topic "$t" --partitions 3 --data "$KDATA" >/dev/null
  done
  start_consumer || die "log-consumer did not start (log: $RD/consumer.log)"
  start_gateway || die "api-gateway did not start (log: $RD/gateway.log)"
  python3 "$PY" run --seed "$SEED" --run "$run" --fault "$FAULT" --url "http://127.0.0.1:$GW_PORT" \
    --db "$DB_URL" --dir "$RD" --results "$RESULTS" &
  echo $! > "$TMP/driver.pid"
  while read -r wait_s hold_s; do
    sleep "$wait_s"
    inject "$FAULT" "$hold_s"
  done < <(python3 "$PY" plan --seed "$SEED" --run "$run" --fault "$FAULT")
  sleep 8
  touch "$RD/stop"
  wait "$(cat "$TMP/driver.pid")" || die "the driver failed in run $run"
  rm -f "$TMP/driver.pid"
  for p in gateway consumer; do [ -f "$TMP/$p.pid" ] && signal_proc "$p" TERM; done
  if python3 -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])][-1]; sys.exit(not (r["lost"] or r["duplicated"] or r["unexpected"] or r["dead_letters"]))' "$RESULTS"; then
    KEEP_DBS+=("$DB"); KEEP_TMP=1
  fi
  if [ -f "$TMP/redis.pid" ] && ! kill -0 "$(cat "$TMP/redis.pid")" 2>/dev/null; then die "Redis is gone"; fi
done

step "summary ($(((SECONDS - STARTED) / 60)) min)"
complete=()
# Only a full matrix (every fault at least four times) rewrites docs/RELIABILITY.md.
[ -z "$ONLY" ] && [ "$RUNS" -ge 24 ] && complete=(--complete --doc "$ROOT/docs/RELIABILITY.md")
python3 "$PY" summary --results "$RESULTS" --seed "$SEED" --rev "$REV" --cmd "$CMDLINE" \
  --minutes "$(((SECONDS - STARTED) / 60))" "${complete[@]}" || { KEEP_TMP=1; exit 1; }
