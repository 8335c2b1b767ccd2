#!/usr/bin/env bash
# Install, start, stop and provision tansu, the Kafka-compatible broker used for development,
# tests and CI. setup.sh, the test runner and the Rust test harness all call this one script.
set -euo pipefail

TANSU_VERSION=0.6.0
usage() {
  cat <<USAGE
usage: scripts/tansu.sh <command> [options]

commands:
  install                       install tansu ${TANSU_VERSION} into ~/.cargo/bin if missing
  start                         start a broker (idempotent) and wait until it answers
  stop                          stop the broker started with the same --data
  status                        say whether it runs
  create-topic NAME             create a topic (an existing one is fine)

options (env var in brackets):
  --port P          listener port [TANSU_PORT, default 9092]
  --metrics-port M  its Prometheus port [TANSU_METRICS_PORT, default 9644]
  --data DIR        data folder: sqlite log, pid and log file [TANSU_DATA, default .run/tansu]
  --partitions N    for create-topic [default 3]
  --owner PID       start: the broker belongs to process PID; when PID exits, stop the
                    broker and delete its --data folder (the Rust test harness passes its
                    own pid and a temporary folder, so no broker outlives its tests)
USAGE
}

say() { printf '[tansu] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

cmd=${1:-}; [ -n "$cmd" ] || { usage; exit 2; }; shift
port=${TANSU_PORT:-9092}
metrics_port=${TANSU_METRICS_PORT:-9644}
data=${TANSU_DATA:-.run/tansu}
partitions=3
topic=
owner=
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port=$2; shift 2 ;;
    --metrics-port) metrics_port=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --partitions) partitions=$2; shift 2 ;;
    --owner) owner=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) topic=$1; shift ;;
  esac
done

bin_dir="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$bin_dir:$PATH"

installed_version() { tansu --version 2>/dev/null | awk '{print $2}'; }

do_install() {
  if [ "$(installed_version)" = "$TANSU_VERSION" ]; then return 0; fi
  command -v cargo >/dev/null || die "cargo is required to install tansu (install Rust via rustup)"
  say "installing tansu $TANSU_VERSION with cargo (8-11 minutes on 2 cores, once; cached in $bin_dir)"
  # --locked is required: without it the build fails on a deadpool version mismatch.
  cargo install tansu --locked --version "$TANSU_VERSION" --features dynostore,libsql >&2
}

pid_file() { echo "$data/tansu.pid"; }

running() {
  local pf; pf=$(pid_file)
  [ -f "$pf" ] && kill -0 "$(cat "$pf")" 2>/dev/null
}

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

do_start() {
  do_install
  mkdir -p "$data"
  data=$(cd "$data" && pwd)
  if running && answers; then say "already running on 127.0.0.1:$port (pid $(cat "$(pid_file)"))"; return 0; fi
  if answers; then die "port $port is taken by another process (not the broker in $data)"; fi
  say "starting on 127.0.0.1:$port, data in $data"
  (
    cd "$data"
    LISTENER_URL="tcp://127.0.0.1:$port" \
    ADVERTISED_LISTENER_URL="tcp://127.0.0.1:$port" \
    STORAGE_ENGINE="sqlite://tansu.db" \
    PROMETHEUS_LISTENER_URL="tcp://127.0.0.1:$metrics_port" \
    RUST_LOG="${TANSU_LOG:-warn}" \
      nohup tansu broker >>tansu.log 2>&1 &
    echo $! > tansu.pid
    echo "$port" > tansu.port
  )
  if [ -n "$owner" ]; then
    # Watchdog, detached from the caller's stdio (a test runner waits for those to close):
    # once the owner has exited, stop the broker it started and delete the data folder.
    local tpid; tpid=$(cat "$(pid_file)")
    # shellcheck disable=SC2016 # the inner bash expands $1..$3 (owner, broker pid, data)
    nohup bash -c 'while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done
      kill -0 "$1" 2>/dev/null && exit 0   # the broker was stopped; its owner goes on
      if kill -0 "$2" 2>/dev/null; then
        kill "$2"; for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$2" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$2" 2>/dev/null
      fi
      rm -rf "$3"' tansu-watchdog "$owner" "$tpid" "$data" </dev/null >/dev/null 2>&1 &
  fi
  local deadline=$((SECONDS + 30))
  until answers; do
    running || die "tansu exited at start; see $data/tansu.log: $(tail -n 5 "$data/tansu.log" 2>/dev/null)"
    [ $SECONDS -lt $deadline ] || die "tansu did not answer on port $port within 30 s; see $data/tansu.log"
    sleep 0.2
  done
  say "ready on 127.0.0.1:$port"
}

do_stop() {
  local pf; pf=$(pid_file)
  if ! running; then rm -f "$pf"; say "not running"; return 0; fi
  local pid; pid=$(cat "$pf")
  kill "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then kill -9 "$pid" 2>/dev/null || true; break; fi
    sleep 0.1
  done
  rm -f "$pf"
  say "stopped (pid $pid)"
}

do_create_topic() {
  [ -n "$topic" ] || die "create-topic needs a NAME"
  local deadline=$((SECONDS + 30)) out
  while true; do
    if tansu topic list --broker "tcp://127.0.0.1:$port" 2>/dev/null | grep -qF "\"name\":\"$topic\""; then
      say "topic $topic exists"; return 0
    fi
    if out=$(tansu topic create "$topic" --partitions "$partitions" --broker "tcp://127.0.0.1:$port" 2>&1); then
      say "created topic $topic ($partitions partitions)"; return 0
    fi
    case "$out" in *xists*) say "topic $topic exists"; return 0 ;; esac
    [ $SECONDS -lt $deadline ] || die "could not create topic $topic: $out"
    sleep 0.5
  done
}

case "$cmd" in
  install) do_install ;;
  start) do_start ;;
  stop) do_stop ;;
  status) if running; then echo "running (pid $(cat "$(pid_file)"), 127.0.0.1:$(cat "$data/tansu.port" 2>/dev/null || echo "$port"))"; else echo "stopped"; exit 3; fi ;;
  create-topic) do_create_topic ;;
  -h|--help|help) usage ;;
  *) usage; exit 2 ;;
esac
