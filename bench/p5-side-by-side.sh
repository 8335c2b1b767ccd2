#!/usr/bin/env bash
# P5's overload, side by side for several gateway configurations in one run.
#   ./bench/p5-side-by-side.sh [--cap N] [--reps N] [--half S] [--over S] [--prefill GB] NAME=[ENV,ENV...] ...
# e.g.  ./bench/p5-side-by-side.sh --cap 6200 --reps 5 capped= uncapped=RATE_BURST_MAX_EVENTS=0
# One Apache Kafka node (scripts/kafka.sh), consumer and PostgreSQL; one limited gateway per
# NAME (RATE_MAX=cap, RATE_MIN=cap/10, SHED_BELOW=WARN, lag every 5 s, plus that NAME's env).
# Every repetition gives each configuration, in a rotated order, 50 % of the cap for --half
# seconds, then 3x for --over seconds, each after the consumer has caught up. Prints every
# run's accepted p99 and the p99 ratio (3x / 50 %) per configuration, with the median; raw
# loadgen output goes to .run/bench/side-<stamp>/raw.jsonl. For decisions that bench/run.sh's
# single limited gateway cannot make: on this shared host, configurations measured minutes
# apart differ by more than most changes do.
# --prefill GB: after the repetitions, fill the broker (another topic, bare rdkafka producer)
# until its log directory holds GB gigabytes, then run the repetitions again, each
# configuration named NAME@GBgb: the same pipeline, only the broker's size differs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

CAP=6000 REPS=5 HALF=10 OVER=20 SETTLE=6 PREFILL=0
CONFIGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cap) CAP=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --half) HALF=$2; shift 2 ;;
    --over) OVER=$2; shift 2 ;;
    --prefill) PREFILL=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *=*) CONFIGS+=("$1"); shift ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#CONFIGS[@]} -ge 1 ] || { echo "name at least one configuration, NAME=[ENV,...] (see --help)" >&2; exit 2; }

LIB_TAG=side
RUN_DIR=$ROOT/.run
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
say() { printf '[side %s] %s\n' "$(date +%T)" "$*" >&2; }
ensure_rust
ensure_build_deps
ensure_postgres

RUN=$ROOT/.run/bench/side-$(date +%Y%m%d-%H%M%S)
mkdir -p "$RUN"
RAW=$RUN/raw.jsonl
: >"$RAW"
PIDS=()
KAFKA_DATA=$RUN/kafka
CONS_PORT=$(free_port); PROBE_PORT=$(free_port)
DB=side_$(date +%s)
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  stop_bench_broker "$KAFKA_DATA"
  psql -h 127.0.0.1 -U postgres -qAtc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

say "building release binaries (no-op when up to date)"
cargo build --release -q -p api-gateway -p log-consumer -p bench-baselines
BIN=$ROOT/target/release
say "starting Apache Kafka (one node, data in $KAFKA_DATA)"
BROKERS=$(start_bench_broker "$KAFKA_DATA" "$RUN/kafka-start.log")
scripts/kafka.sh create-topic side --partitions 3 --data "$KAFKA_DATA" 2>>"$RUN/kafka-start.log"
psql -h 127.0.0.1 -U postgres -qAtc "CREATE DATABASE $DB" >/dev/null
GROUP=side-$DB

env CONSUMER_ADDR="127.0.0.1:$CONS_PORT" KAFKA_BROKERS="$BROKERS" KAFKA_TOPIC=side KAFKA_GROUP_ID="$GROUP" \
    DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB" LOG_FORMAT=json RUST_LOG=warn \
    "$BIN/log-consumer" >"$RUN/consumer.log" 2>&1 &
PIDS+=("$!")
wait_for_http "http://127.0.0.1:$CONS_PORT/health/ready" 60 "consumer (log: $RUN/consumer.log)" "$!"

start_gateway() { # name port extra-env...
  local name=$1 port=$2; shift 2
  env GATEWAY_ADDR="127.0.0.1:$port" KAFKA_BROKERS="$BROKERS" KAFKA_TOPIC=side KAFKA_GROUP_ID="$GROUP" \
      REDIS_URL='' LOG_FORMAT=json RUST_LOG=warn "$@" "$BIN/api-gateway" >"$RUN/$name.log" 2>&1 &
  PIDS+=("$!")
  wait_for_http "http://127.0.0.1:$port/health/ready" 60 "$name (log: $RUN/$name.log)" "$!"
}
# The lag probe: limiter out of the way, lag read every 0.5 s, no traffic.
start_gateway probe "$PROBE_PORT" RATE_MAX=1000000 RATE_MIN=1000000 SHED_BELOW=TRACE LAG_INTERVAL_MS=500
NAMES=(); PORTS=()
for c in "${CONFIGS[@]}"; do
  name=${c%%=*}; envs=${c#*=}; port=$(free_port)
  IFS=, read -r -a extra <<<"$envs"
  start_gateway "gateway-$name" "$port" RATE_MAX="$CAP" RATE_MIN="$((CAP / 10))" SHED_BELOW=WARN \
    LAG_INTERVAL_MS=5000 "${extra[@]}"
  NAMES+=("$name"); PORTS+=("$port")
done

lag_below() {
  local l
  l=$(curl -fsS "http://127.0.0.1:$PROBE_PORT/api/logs/health" 2>/dev/null |
      python3 -c 'import json,sys; print(json.load(sys.stdin).get("consumerLag", -1))' 2>/dev/null || echo -1)
  [ "$l" -ge 0 ] && [ "$l" -lt "$1" ]
}
catch_up() { # wait for lag < 1000, then let the limited gateways see it (5 s interval)
  local deadline=$((SECONDS + 120))
  until lag_below 1000; do
    [ $SECONDS -lt $deadline ] || { say "error: the consumer did not catch up"; exit 1; }
    sleep 0.25
  done
  sleep "$SETTLE"
}

python3 - "$RUN" <<'PY'
import json, sys, time
now = int(time.time() * 1000)
def ev(sev, msg):
    return {"correlationId": "bench-7", "severity": sev, "message": msg, "source": "bench-service",
            "timestamp": now, "attributes": {"userId": 7, "region": "eu-west-1"}}
open(f"{sys.argv[1]}/single.json", "w").write(json.dumps(ev("info", "user logged in from a benchmark client with a moderately long message")))
open(f"{sys.argv[1]}/single-error.json", "w").write(json.dumps(ev("error", "payment failed for a benchmark client")))
PY
BODIES=()
for _ in 1 2 3 4 5 6 7 8 9; do BODIES+=(--body "$RUN/single.json"); done
BODIES+=(--body "$RUN/single-error.json")

half=$((CAP / 2)); over=$((CAP * 3)); n=${#NAMES[@]}
broker_gb() { du -cb "$KAFKA_DATA"/node-*/data 2>/dev/null | awk 'END{printf "%.2f", $1/1e9}'; }
repetitions() { # SUFFIX: REPS rounds over every configuration, recorded as NAME$SUFFIX
  for rep in $(seq 1 "$REPS"); do
    for k in $(seq 0 $((n - 1))); do
      i=$(((k + rep - 1) % n)); name=${NAMES[$i]}$1; port=${PORTS[$i]}
      for phase in half over; do
        catch_up
        if [ "$phase" = half ]; then rate=$half dur=$HALF conc=256; else rate=$over dur=$OVER conc=1024; fi
        say "repetition $rep/$REPS, $name: $phase ($rate/s, ${dur}s; broker $(broker_gb) GB)"
        r=$("$BIN/loadgen" --url "http://127.0.0.1:$port/api/logs" "${BODIES[@]}" --rate "$rate" --concurrency "$conc" --duration "$dur")
        echo "{\"config\":\"$name\",\"rep\":$rep,\"phase\":\"$phase\",\"broker_gb\":$(broker_gb),\"r\":$r}" >>"$RAW"
      done
    done
  done
}
repetitions ""
if [ "$PREFILL" != 0 ]; then
  scripts/kafka.sh create-topic filler --partitions 3 --data "$KAFKA_DATA" 2>>"$RUN/kafka-start.log"
  while awk -v a="$(broker_gb)" -v b="$PREFILL" 'BEGIN{exit !(a < b)}'; do
    say "prefill: broker at $(broker_gb) GB of $PREFILL; producing 2 000 000 more records"
    "$BIN/bare-producer" --brokers "$BROKERS" --topic filler --events 2000000 --payload-file "$RUN/single.json" >>"$RUN/prefill.log"
  done
  say "prefill: broker at $(broker_gb) GB"
  repetitions "@${PREFILL}gb"
fi

python3 - "$RAW" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def p99(r): return (r["r"]["accepted_latency"] or {}).get("p99_ms")
names = list(dict.fromkeys(r["config"] for r in rows))
print(f"{'config':<12} {'rep':>3} {'50% p99':>9} {'3x p99':>9} {'ratio':>7} {'3x max':>9} {'3x goodput/s':>13}")
for name in names:
    ratios = []
    for rep in sorted({r["rep"] for r in rows if r["config"] == name}):
        h = next(r for r in rows if r["config"] == name and r["rep"] == rep and r["phase"] == "half")
        o = next((r for r in rows if r["config"] == name and r["rep"] == rep and r["phase"] == "over"), None)
        if o is None or not p99(h) or not p99(o):
            continue
        ratio = p99(o) / p99(h); ratios.append(ratio)
        print(f"{name:<12} {rep:>3} {p99(h):>9.1f} {p99(o):>9.1f} {ratio:>7.2f} {o['r']['accepted_latency']['max_ms']:>9.1f} {o['r']['accepted_per_sec']:>13.0f}")
    if ratios:
        print(f"{name:<12} median ratio {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}, {len(ratios)} repetitions)")
PY
say "raw data: $RAW"
