#!/usr/bin/env bash
# The fault matrix: real api-gateway(s), log-consumer(s), Apache Kafka (one node, and three
# nodes for leader-kill), a private PostgreSQL cluster and a private Redis; per run a fresh
# database, topic and group, load through the HTTP API (integration-tests/faults.py), one
# fault injected and healed, then every acknowledged id checked against log_events. Prints a
# line per run and a table; a complete matrix writes docs/RELIABILITY.md. Exits non-zero on a
# lost, duplicated or unexpected row, a broken bound, or a run that did not heal.
set -Eeuo pipefail

# Run N uses FAULTS[(N-1) mod 12]: `--runs 6` (the short form in run.sh) takes the first six.
FAULTS=(kill-gateway kill-consumer leader-kill pg-freeze replicas-kill redis-freeze
  term-gateway term-consumer kill-broker redis-kill pg-stop pg-disk-full)
usage() {
  cat <<USAGE
usage: integration-tests/faults.sh [--runs N] [--seed S] [--only FAULT] [--help]

  --runs N      runs, fault (N-1) mod ${#FAULTS[@]} each [24: every fault twice]
  --seed S      the moments and holds of the faults [random, printed]
  --only FAULT  repeat one fault: ${FAULTS[*]}

env: BIN_DIR (binaries to copy [target/debug, built if missing]), KEEP_TMP=1 (keep logs),
     FREEZE_RATE (RATE_MAX of the redis-freeze run's gateways [200])
docs/RELIABILITY.md says what each fault does and how the checker counts.
USAGE
}
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
chmod 755 "$TMP"  # the private PostgreSQL runs as user postgres inside it
RUN_DIR=$TMP
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
PY="$ROOT/integration-tests/faults.py"
KDATA=$TMP/kafka KDATA3=$TMP/kafka3 PGDIR=$TMP/pg SMALL=$TMP/pg-small
RESULTS=$TMP/results.jsonl
FREEZE_RATE=${FREEZE_RATE:-200}
STARTED=$SECONDS

# shellcheck disable=SC2317
finish() {
  local rc=$? d
  set +e
  { for pf in "$TMP"/*.pid; do [ -f "$pf" ] && kill -CONT "$(cat "$pf")" && kill -9 "$(cat "$pf")" && wait "$(cat "$pf")"; rm -f "$pf"; done; } 2>/dev/null
  for d in "$KDATA" "$KDATA3"; do
    [ -f "$d/watchdog.pid" ] && kill "$(cat "$d/watchdog.pid")"  # kafka.sh's --owner watchdog: we stop it ourselves
    for f in "$d"/node-*/server.log; do [ -f "$f" ] && cp "$f" "$TMP/$(basename "$d")-$(basename "$(dirname "$f")").log"; done
    [ -d "$d" ] && "$ROOT/scripts/kafka.sh" stop --data "$d" --delete >/dev/null 2>&1
  done
  if [ -f "$PGDIR/data/postmaster.pid" ]; then
    pg_thaw
    as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate stop >/dev/null 2>&1
  fi
  mountpoint -q "$SMALL" && { rm -f "$SMALL/filler"; umount "$SMALL"; }
  stop_started_services
  if [ "$rc" -ne 0 ] || [ -n "${KEEP_TMP:-}" ]; then
    log "logs kept in $TMP (the PostgreSQL cluster of the runs is $PGDIR/data, stopped)"
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap finish EXIT
trap 'log "error: \"$BASH_COMMAND\" failed (line $LINENO)"' ERR
trap 'exit 130' INT TERM

# A snapshot of the binaries: a rebuild in the work tree during the matrix changes nothing here.
debug_bins
mkdir -p "$TMP/bin" && cp "$BIN_DIR/api-gateway" "$BIN_DIR/log-consumer" "$TMP/bin/"

# --- a private PostgreSQL cluster: stopped, frozen and filled by the faults, nobody else's ---
PGBIN=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
  step "installing PostgreSQL (for initdb and pg_ctl)"; apt_install postgresql postgresql-client
  PGBIN=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d | sort -V | tail -n 1)
fi
command -v psql >/dev/null || apt_install postgresql-client
# as_pg COMMAND...: PostgreSQL refuses to run as root; as root we run it as user postgres.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PG_PORT=$(free_port)
ADMIN_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
step "starting a private PostgreSQL ($("$PGBIN/postgres" --version | awk '{print $3}')) on 127.0.0.1:$PG_PORT, data in $PGDIR/data"
mkdir -p "$PGDIR" && { [ "$(id -u)" != 0 ] || chown postgres: "$PGDIR"; }
as_pg "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust -E UTF8 --no-sync >"$TMP/initdb.log" 2>&1 \
  || { tail -n 20 "$TMP/initdb.log" >&2; die "initdb failed"; }
pg_start() {
  as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/postgres.log" -w -t 120 \
    -o "-p $PG_PORT -k $PGDIR -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
}
# pg_thaw / pg_freeze: SIGCONT / SIGSTOP the postmaster and every backend and helper process.
pg_freeze() {
  local pm procs
  pm=$(head -n 1 "$PGDIR/data/postmaster.pid")
  mapfile -t procs < <(echo "$pm"; pgrep -P "$pm")
  printf '%s\n' "${procs[@]}" > "$TMP/pg-frozen"
  kill -STOP "${procs[@]}"
}
pg_thaw() {
  local procs
  [ -f "$TMP/pg-frozen" ] || return 0
  mapfile -t procs < "$TMP/pg-frozen"
  kill -CONT "${procs[@]}" 2>/dev/null
  rm -f "$TMP/pg-frozen"
}
pg_start || { tail -n 20 "$PGDIR/postgres.log" >&2; die "the private PostgreSQL did not start"; }

# pg-disk-full: the run's database lives in a tablespace on a 64 MiB tmpfs that the fault fills.
DISK_FULL=''
disk_full_setup() {
  [ -n "$DISK_FULL" ] && return 0
  mkdir -p "$SMALL"
  if ! mount -t tmpfs -o size=64m,mode=0700 tmpfs "$SMALL" 2>"$TMP/mount.log"; then
    DISK_FULL="no: mounting a small tmpfs was refused ($(head -n 1 "$TMP/mount.log"))"
    warn "pg-disk-full runs are skipped: $DISK_FULL"
    return 1
  fi
  [ "$(id -u)" != 0 ] || chown postgres: "$SMALL"
  psql "$ADMIN_URL" -qc "CREATE TABLESPACE small LOCATION '$SMALL'" >/dev/null
  DISK_FULL=yes
}

REDIS_PORT=$(free_port)   # our own Redis, started (and killed, frozen) by the matrix only
ensure_redis
step "starting Apache Kafka (one node, data in $KDATA)"
KAFKA1=$("$ROOT/scripts/kafka.sh" start --data "$KDATA" --owner $$ 2>"$TMP/kafka-start.log" | tail -n 1) \
  || { tail -n 20 "$TMP/kafka-start.log" >&2; die "scripts/kafka.sh start failed"; }
KAFKA3=''  # the three-node cluster, started by the first leader-kill run
export LOG_FORMAT=json REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

# start_gateway N / start_consumer N: instance N of the run (logs gateway-N.log, consumer-N.log).
start_gateway() {
  GATEWAY_ADDR="127.0.0.1:${GW_PORTS[$1]}" KAFKA_BROKERS=$BROKERS nohup env "${GW_ENV[@]}" \
    "$TMP/bin/api-gateway" >>"$RD/gateway-$1.log" 2>&1 &
  echo $! > "$TMP/gateway-$1.pid"
  (wait_for_http "http://127.0.0.1:${GW_PORTS[$1]}/health/ready" 60 "api-gateway $1" "$(cat "$TMP/gateway-$1.pid")")
}
start_consumer() {
  CONSUMER_ADDR="127.0.0.1:${CONSUMER_PORTS[$1]}" KAFKA_BROKERS=$BROKERS DATABASE_URL=$DB_URL \
    nohup "$TMP/bin/log-consumer" >>"$RD/consumer-$1.log" 2>&1 &
  echo $! > "$TMP/consumer-$1.pid"
  (wait_for_http "http://127.0.0.1:${CONSUMER_PORTS[$1]}/health/ready" 90 "log-consumer $1" "$(cat "$TMP/consumer-$1.pid")")
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
mark() { echo "$1 $(date +%s.%N)" >> "$RD/heals"; }  # fault injected / heal start / component ready again
failed() { echo "FAILED $1" >> "$RD/heals"; }
# The leader of the run's partition 0 (the admin tool may time out on a loaded machine: tries 5 times).
leader_of_partition_0() {
  local i out
  for ((i = 0; i < 5; i++)); do
    out=$("$ROOT/scripts/kafka.sh" describe "$KAFKA_TOPIC" --bootstrap "$BROKERS" 2>>"$RD/describe.log" \
      | awk '$1 == 0 { sub("leader=", "", $2); print $2 }') || true
    [[ "$out" =~ ^[1-3]$ ]] && { echo "$out"; return 0; }
    sleep 1
  done
}
inject() { # inject FAULT HOLD: the fault, HOLD seconds of it, then the heal
  local node=''
  mark fault
  case "$1" in
    kill-gateway|term-gateway) signal_proc gateway-1 "$([ "$1" = kill-gateway ] && echo KILL || echo TERM)" ;;
    kill-consumer|term-consumer) signal_proc consumer-1 "$([ "$1" = kill-consumer ] && echo KILL || echo TERM)" ;;
    replicas-kill) signal_proc gateway-2 KILL; signal_proc consumer-2 KILL ;;
    kill-broker) "$ROOT/scripts/kafka.sh" kill-node 1 --signal KILL --data "$KDATA" >&2 ;;
    leader-kill)
      node=$(leader_of_partition_0)
      [[ "$node" =~ ^[1-3]$ ]] || { failed "no-leader-for-partition-0"; node=1; }
      "$ROOT/scripts/kafka.sh" kill-node "$node" --signal KILL --data "$KDATA3" >&2 ;;
    redis-kill) kill -9 "$(cat "$TMP/redis.pid")"; rm -f "$TMP/redis.pid" ;;
    redis-freeze) kill -STOP "$(cat "$TMP/redis.pid")" ;;
    pg-stop) as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate stop >/dev/null ;;
    pg-freeze) pg_freeze ;;
    pg-disk-full) dd if=/dev/zero of="$SMALL/filler" bs=1M >/dev/null 2>&1 || true ;;  # until ENOSPC
  esac
  log "fault $1${node:+ (node $node)} injected, healing in $2 s"
  sleep "$2"
  mark start
  case "$1" in
    *-gateway) start_gateway 1 || failed gateway-restart ;;
    *-consumer) start_consumer 1 || failed consumer-restart ;;
    replicas-kill) { start_gateway 2 && start_consumer 2; } || failed replica-restart ;;
    kill-broker) "$ROOT/scripts/kafka.sh" restart-node 1 --data "$KDATA" >&2 || failed broker-restart ;;
    leader-kill) "$ROOT/scripts/kafka.sh" restart-node "$node" --data "$KDATA3" >&2 || failed broker-restart ;;
    redis-kill) (ensure_redis) || failed redis-restart ;;
    redis-freeze) kill -CONT "$(cat "$TMP/redis.pid")" ;;
    pg-stop) pg_start || failed postgres-restart ;;
    pg-freeze) pg_thaw ;;
    pg-disk-full) rm -f "$SMALL/filler" ;;
  esac
  mark ready
  log "fault $1 healed"
}

REV="$(git rev-parse --short HEAD)$(git diff-index --quiet HEAD -- 2>/dev/null || echo ' (work tree with uncommitted changes)')"
step "fault matrix: $RUNS runs, seed $SEED${ONLY:+, only $ONLY}, revision $REV"
for ((run = 1; run <= RUNS; run++)); do
  FAULT=${ONLY:-${FAULTS[$(((run - 1) % ${#FAULTS[@]}))]}}
  RD=$TMP/run-$run; mkdir -p "$RD"
  DB="faults_$run"; DB_URL="${ADMIN_URL%/*}/$DB"
  export KAFKA_TOPIC="faults-$$-$run" KAFKA_GROUP_ID="faults-$$-$run"
  GATEWAYS=1 CONSUMERS=1 BROKERS=$KAFKA1 KDIR=$KDATA GW_ENV=() DB_OPTS=''
  case "$FAULT" in
    replicas-kill) GATEWAYS=2 CONSUMERS=2 ;;
    redis-freeze) GATEWAYS=2 GW_ENV=("RATE_MAX=$FREEZE_RATE") ;;
    leader-kill)
      if [ -z "$KAFKA3" ]; then
        step "starting Apache Kafka (three nodes, data in $KDATA3)"
        KAFKA3=$("$ROOT/scripts/kafka.sh" start --data "$KDATA3" --nodes 3 --owner $$ 2>"$TMP/kafka3-start.log" | tail -n 1) \
          || { tail -n 20 "$TMP/kafka3-start.log" >&2; die "scripts/kafka.sh start --nodes 3 failed"; }
      fi
      BROKERS=$KAFKA3 KDIR=$KDATA3 ;;
    pg-disk-full)
      if ! disk_full_setup; then
        python3 "$PY" skip --run "$run" --fault "$FAULT" --why "$DISK_FULL" --results "$RESULTS"; continue
      fi
      DB_OPTS="TABLESPACE small" ;;
  esac
  GW_PORTS=(- "$(free_port)" "$(free_port)") CONSUMER_PORTS=(- "$(free_port)" "$(free_port)")
  step "run $run/$RUNS: $FAULT (database $DB, topic $KAFKA_TOPIC, $GATEWAYS gateway(s), $CONSUMERS consumer(s))"
  psql "$ADMIN_URL" -qc "CREATE DATABASE $DB $DB_OPTS" >/dev/null
  for t in "$KAFKA_TOPIC" "$KAFKA_TOPIC.dlq"; do
    "$ROOT/scripts/kafka.sh" create-topic "$t" --partitions 3 --data "$KDIR" >/dev/null
  done
  urls=()
  for ((i = 1; i <= CONSUMERS; i++)); do start_consumer $i || die "log-consumer $i did not start (log: $RD/consumer-$i.log)"; done
  for ((i = 1; i <= GATEWAYS; i++)); do
    start_gateway $i || die "api-gateway $i did not start (log: $RD/gateway-$i.log)"
    urls+=("http://127.0.0.1:${GW_PORTS[$i]}")
  done
  bound=()
  [ "$FAULT" != redis-freeze ] || bound=(--rate-bound "$FREEZE_RATE" --replicas "$GATEWAYS")
  python3 "$PY" run --seed "$SEED" --run "$run" --fault "$FAULT" --url "$(IFS=,; echo "${urls[*]}")" \
    --db "$DB_URL" --dir "$RD" --results "$RESULTS" "${bound[@]}" &
  echo $! > "$TMP/driver.pid"
  while read -r wait_s hold_s; do
    sleep "$wait_s"
    inject "$FAULT" "$hold_s"
  done < <(python3 "$PY" plan --seed "$SEED" --run "$run" --fault "$FAULT")
  sleep 8
  touch "$RD/stop"
  wait "$(cat "$TMP/driver.pid")" || die "the driver failed in run $run"
  rm -f "$TMP/driver.pid"
  for pf in "$TMP"/gateway-*.pid "$TMP"/consumer-*.pid; do [ -f "$pf" ] && signal_proc "$(basename "$pf" .pid)" TERM; done
  if python3 "$PY" ok --results "$RESULTS"; then
    psql "$ADMIN_URL" -qc "DROP DATABASE $DB WITH (FORCE)" >/dev/null
  else
    KEEP_TMP=1
  fi
  if [ -f "$TMP/redis.pid" ] && ! kill -0 "$(cat "$TMP/redis.pid")" 2>/dev/null; then die "Redis is gone"; fi
done

step "summary ($(((SECONDS - STARTED) / 60)) min)"
complete=()
# Only a full matrix (every fault at least twice) rewrites docs/RELIABILITY.md.
[ -z "$ONLY" ] && [ "$RUNS" -ge $((2 * ${#FAULTS[@]})) ] && complete=(--complete --doc "$ROOT/docs/RELIABILITY.md")
python3 "$PY" summary --results "$RESULTS" --seed "$SEED" --rev "$REV" --cmd "$CMDLINE" \
  --minutes "$(((SECONDS - STARTED) / 60))" "${complete[@]}" || { KEEP_TMP=1; exit 1; }
