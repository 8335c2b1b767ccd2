#!/usr/bin/env bash
# Side-by-side benchmark of the ingest pipeline against real baseline programs.
#   ./bench/run.sh          full run (longer repetitions, 200 000-event backlog)
#   ./bench/run.sh --quick  3 short repetitions per measure, 20 000-event backlog, < 3 min
# Starts its own one-node Apache Kafka (scripts/kafka.sh, a free port, data under .run/bench), a
# fresh database, the services in release mode with the limiter out of the way, then writes
# bench/results.json and docs/BENCHMARKS.md. Every claim is a ratio of medians measured in the
# same run. The broker's data (gigabytes after a full run) is deleted at the end, its log kept;
# BENCH_KEEP_DATA=1 keeps the data.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=0
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done

REPS=3
# P1/P3: 256 connections, enough to saturate the machine (at 32 the gateway idles, waiting
# for linger.ms + the acks=all round trip; see docs/BENCHMARKS.md). P2: 32 connections of
# 100-event batches.
CONNS=${BENCH_CONNS:-256}
P2_CONNS=32
if [ "$QUICK" = 1 ]; then
  DUR=3s; WARM=1s; P2_EVENTS=100000; P4_EVENTS=20000
  P5_SEARCH=3; P5_HALF=3; P5_OVER=3; P5_REPS=1; P5_SETTLE=2; P6_OVER=3; P6_EVENTS=50000
  P3X_REPS=1   # keeps --quick under 3 minutes with P5's bound run
else
  DUR=10s; WARM=5s; P2_EVENTS=300000; P4_EVENTS=200000; REPS=${BENCH_REPS:-5}
  P5_SEARCH=10; P5_HALF=15; P5_OVER=20; P5_REPS=5; P5_SETTLE=6; P6_OVER=30; P6_EVENTS=1000000
  P3X_REPS=$REPS
fi

LIB_TAG=bench
RUN_DIR=$ROOT/.run
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
say() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { say "error: $*"; exit 1; }
# What the bench needs, installed when missing (the broker's JDK and jars by scripts/kafka.sh start).
ensure_rust
ensure_build_deps
ensure_postgres
ensure_oha
for t in psql curl python3; do command -v "$t" >/dev/null || die "$t not found"; done

clk_tck=$(getconf CLK_TCK)
# CPU seconds (user+system) a process has used so far.
cpu_s() { awk -v t="$clk_tck" '{print ($14+$15)/t}' "/proc/$1/stat" 2>/dev/null || echo 0; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.6f", a-b}'; }
hwm_kb() { awk '/VmHWM/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# Busy CPU seconds of the whole machine so far (user+nice+system+irq+softirq+steal, all cores).
machine_busy_s() { awk -v t="$clk_tck" '/^cpu /{print ($2+$3+$4+$7+$8+$9)/t}' /proc/stat; }
# "sum count" of a gateway's kafka_produce_duration_seconds (enqueue → delivery report).
produce_sum_count() {
  curl -fsS "http://127.0.0.1:$1/metrics" 2>/dev/null |
    awk '/^kafka_produce_duration_seconds_sum/{s=$2} /^kafka_produce_duration_seconds_count/{c=$2} END{print s+0, c+0}'
}

RUN=$ROOT/.run/bench/$(date +%Y%m%d-%H%M%S)
mkdir -p "$RUN"
RAW=$RUN/raw.jsonl
: >"$RAW"
record() { echo "$1" >>"$RAW"; }   # one JSON object per line, aggregated by bench/report.py
# The broker every number below was measured on (scripts/kafka.sh installs this version).
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/kafka/pom.xml)
[ -n "$KAFKA_VERSION" ] || die "no <kafka.version> in scripts/kafka/pom.xml"
record "{\"measure\":\"meta\",\"broker\":\"apache-kafka $KAFKA_VERSION\",\"git_head\":\"$(git rev-parse HEAD 2>/dev/null || echo unknown)\",\"uncommitted_paths\":$(git status --porcelain 2>/dev/null | wc -l),\"date\":\"$(date -u '+%Y-%m-%d %H:%M UTC')\"}"

PIDS=()
KAFKA_DATA=$RUN/kafka
REPORTED=0
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  stop_bench_broker "$KAFKA_DATA"
  if [ -n "${DB:-}" ]; then psql -h 127.0.0.1 -U postgres -qAtc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true; fi
  # A run that stopped part-way still reports what it measured (the rest: "not measured").
  if [ "$REPORTED" = 0 ] && [ "$rc" != 0 ] && [ -s "$RAW" ]; then
    say "run stopped (exit $rc): writing the report from the measurements taken so far"
    python3 bench/report.py "$RAW" "$QUICK" "$REPS" "$DUR" "$CONNS" "$P2_EVENTS" "$P4_EVENTS" "$RUN" >/dev/null || true
  fi
}
trap cleanup EXIT

say "building release binaries (no-op when up to date)"
cargo build --release -q -p api-gateway -p log-consumer -p bench-baselines
BIN=$ROOT/target/release

say "starting Apache Kafka (one node, data in $KAFKA_DATA)"
BROKERS=$(start_bench_broker "$KAFKA_DATA" "$RUN/kafka-start.log")
# The broker's CPU accounting (cpu_s) reads the node's java process.
BROKER_PID=$(cat "$KAFKA_DATA/node-1/pid")
say "Apache Kafka $KAFKA_VERSION at $BROKERS (pid $BROKER_PID)"
for topic in bench-events bench-backlog bench-p5 bench-p6; do
  scripts/kafka.sh create-topic "$topic" --partitions 3 --data "$KAFKA_DATA" 2>>"$RUN/kafka-start.log" ||
    { tail -n 20 "$RUN/kafka-start.log" >&2; die "creating topic $topic failed"; }
done

DB=bench_$(date +%s)
DBURL=postgres://postgres@127.0.0.1:5432/$DB
psql -h 127.0.0.1 -U postgres -qAtc "CREATE DATABASE $DB" >/dev/null
PSQL=(psql -h 127.0.0.1 -U postgres -d "$DB" -qAt)

start_gateway() { # name port extra-env...
  local name=$1 port=$2; shift 2
  env GATEWAY_ADDR="127.0.0.1:$port" KAFKA_BROKERS="$BROKERS" KAFKA_TOPIC=bench-events \
      KAFKA_GROUP_ID=bench-none REDIS_URL='' RATE_MAX=1000000 RATE_MIN=1000000 \
      SHED_BELOW=TRACE LOG_FORMAT=json RUST_LOG=warn "$@" \
      "$BIN/api-gateway" >"$RUN/$name.log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
  wait_for_http "http://127.0.0.1:$port/health/ready" 60 "$name (log: $RUN/$name.log)" "$STARTED"
}

start_consumer() { # name topic group → STARTED (pid), ready on CONS_PORT
  env CONSUMER_ADDR="127.0.0.1:$CONS_PORT" KAFKA_BROKERS="$BROKERS" KAFKA_TOPIC="$2" \
      KAFKA_GROUP_ID="$3" DATABASE_URL="$DBURL" LOG_FORMAT=json RUST_LOG=warn \
      "$BIN/log-consumer" >"$RUN/$1.log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
  wait_for_http "http://127.0.0.1:$CONS_PORT/health/ready" 60 "$1 (log: $RUN/$1.log)" "$STARTED"
}

sample_rss() { # pid seconds file → SAMPLER (pid): "epoch<TAB>VmRSS kB" lines until pid exits
  ( while kill -0 "$1" 2>/dev/null; do
      printf '%s\t%s\n' "$(date +%s.%N)" "$(awk '/VmRSS/{print $2}' "/proc/$1/status")"; sleep "$2"
    done ) >"$3" 2>/dev/null &
  SAMPLER=$!
  PIDS+=("$SAMPLER")
}

health_field() { # port field → that field of a gateway's /api/logs/health; -1 when unknown
  curl -fsS "http://127.0.0.1:$1/api/logs/health" 2>/dev/null |
    python3 -c 'import json,sys
try:
    v = json.load(sys.stdin).get(sys.argv[1])
except Exception:
    v = None
print(-1 if v is None else v)' "$2"
}

# ---------------------------------------------------------------- bodies
NOW_MS=$(($(date +%s) * 1000))
python3 - "$RUN" "$NOW_MS" <<'PY'
import json, sys
run, now = sys.argv[1], int(sys.argv[2])
def ev(i):
    return {"correlationId": f"bench-{i % 1024}", "severity": "info",
            "message": "user logged in from a benchmark client with a moderately long message",
            "source": "bench-service", "timestamp": now,
            "attributes": {"userId": i % 10000, "region": "eu-west-1"}}
open(f"{run}/single.json", "w").write(json.dumps(ev(7)))
err = dict(ev(8), severity="error", message="payment failed for a benchmark client")
open(f"{run}/single-error.json", "w").write(json.dumps(err))
# 90 % info, 10 % error: the share a log stream typically has, and what RESERVED_SHARE=0.1 expects.
open(f"{run}/batch100-mixed.ndjson", "w").write(
    "\n".join(json.dumps(dict(ev(i), severity="error") if i % 10 == 9 else ev(i)) for i in range(100)) + "\n")
open(f"{run}/batch100.ndjson", "w").write("\n".join(json.dumps(ev(i)) for i in range(100)) + "\n")
PY

# oha run → one JSON line: {rps_202, p99_s, n202, non202, seconds}
oha_run() { # label url body content-type duration [extra oha args]
  local label=$1 url=$2 body=$3 ct=$4 dur=$5; shift 5
  local out=$RUN/oha-$label-$RANDOM.json
  oha --no-tui --output-format json -z "$dur" -c "${OHA_CONNS:-$CONNS}" -m POST -T "$ct" -D "$body" "$@" "$url" >"$out"
  python3 - "$out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["summary"]; codes = d.get("statusCodeDistribution", {})
n202 = codes.get("202", 0); total = sum(codes.values())
lat = d.get("latencyPercentiles", {})
print(json.dumps({"n202": n202, "non202": total - n202, "seconds": s["total"],
                  "rps_202": n202 / s["total"], "p99_s": lat.get("p99"), "avg_s": s.get("average"),
                  "errors": len(d.get("errorDistribution", {}))}))
PY
}

# ---------------------------------------------------------------- services
GW_PORT=$(free_port); GWE_PORT=$(free_port); BARE_PORT=$(free_port)
say "starting gateway (:$GW_PORT), gateway with BENCH_ACK_ON_ENQUEUE (:$GWE_PORT), bare-axum (:$BARE_PORT)"
start_gateway gateway "$GW_PORT"; GW_PID=$STARTED
start_gateway gateway-enqueue "$GWE_PORT" BENCH_ACK_ON_ENQUEUE=true; GWE_PID=$STARTED
ADDR=127.0.0.1:$BARE_PORT "$BIN/bare-axum" >"$RUN/bare-axum.log" 2>&1 &
BARE_PID=$!; PIDS+=("$BARE_PID")
wait_http_post() { local d=$((SECONDS + 20)); until curl -s -o /dev/null -X POST -H 'content-type: application/json' --data @"$RUN/single.json" "$1"; do [ $SECONDS -lt $d ] || return 1; sleep 0.2; done; }
wait_http_post "http://127.0.0.1:$BARE_PORT/api/logs" || die "bare-axum not answering"

SINGLE_BARE=http://127.0.0.1:$BARE_PORT/api/logs
SINGLE_GW=http://127.0.0.1:$GW_PORT/api/logs
SINGLE_GWE=http://127.0.0.1:$GWE_PORT/api/logs
BATCH_GW=http://127.0.0.1:$GW_PORT/api/logs/batch

producer_queue() { health_field "$1" producerQueue; }   # live producer queue depth
# timed_wait SECONDS INTERVAL COMMAND...: polls until COMMAND succeeds, prints the seconds
# it took; fails at the deadline.
timed_wait() {
  local t0 deadline=$((SECONDS + $1)) interval=$2
  t0=$(date +%s.%N)
  shift 2
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep "$interval"
  done
  fsub "$(date +%s.%N)" "$t0"; echo
}
jget() { python3 -c 'import json,sys; d=json.loads(sys.argv[1])
for k in sys.argv[2].split("."): d = d[k]
print(d)' "$1" "$2"; }
queue_empty() { [ "$(producer_queue "$1")" = 0 ]; }
wait_queue_empty() { timed_wait "$2" 0.05 queue_empty "$1"; }   # port seconds

# inflight_producer C: closed-loop bare producer, C records awaiting their delivery report
# for $DUR, keyed like the single-event body (one correlationId, so one partition).
SINGLE_KEY=$(jget "$(cat "$RUN/single.json")" correlationId)
inflight_producer() {
  "$BIN/bare-producer" --brokers "$BROKERS" --topic bench-events --events 20000 \
    --key "$SINGLE_KEY" --in-flight "$1" --duration "${DUR%s}"
}

# ---------------------------------------------------------------- P1 + P3 (interleaved)
say "P1/P3 warm-up ($WARM each)"
oha_run warm "$SINGLE_BARE" "$RUN/single.json" application/json "$WARM" >/dev/null
oha_run warm "$SINGLE_GW" "$RUN/single.json" application/json "$WARM" >/dev/null
oha_run warm "$SINGLE_GWE" "$RUN/single.json" application/json "$WARM" >/dev/null
wait_queue_empty "$GWE_PORT" 120 >/dev/null || die "enqueue gateway's producer queue did not drain"
for rep in $(seq 1 "$REPS"); do
  say "P1/P3 repetition $rep/$REPS (-c $CONNS, $DUR each)"
  m0=$(machine_busy_s)
  r=$(oha_run bare "$SINGLE_BARE" "$RUN/single.json" application/json "$DUR")
  m1=$(machine_busy_s)
  record "{\"measure\":\"P1\",\"side\":\"baseline\",\"rep\":$rep,\"r\":$r,\"cpu\":{\"machine\":$(fsub "$m1" "$m0")}}"
  c0=$(cpu_s "$GW_PID"); t0=$(cpu_s "$BROKER_PID"); m0=$(machine_busy_s); read -r ps0 pc0 < <(produce_sum_count "$GW_PORT")
  r=$(oha_run gw "$SINGLE_GW" "$RUN/single.json" application/json "$DUR")
  c1=$(cpu_s "$GW_PID"); t1=$(cpu_s "$BROKER_PID"); m1=$(machine_busy_s); read -r ps1 pc1 < <(produce_sum_count "$GW_PORT")
  record "{\"measure\":\"P1\",\"side\":\"ours\",\"rep\":$rep,\"r\":$r,\"cpu\":{\"gateway\":$(fsub "$c1" "$c0"),\"broker\":$(fsub "$t1" "$t0"),\"machine\":$(fsub "$m1" "$m0")},\"produce\":{\"sum_s\":$(fsub "$ps1" "$ps0"),\"count\":$(fsub "$pc1" "$pc0")}}"
  record "{\"measure\":\"P3\",\"side\":\"ours\",\"rep\":$rep,\"r\":$r}"
  # The bound at these connections: a bare producer keeping $CONNS records awaiting their
  # acknowledgement (like $CONNS clients each waiting for a 202), same key as the body.
  t0=$(cpu_s "$BROKER_PID")
  r=$(inflight_producer "$CONNS")
  t1=$(cpu_s "$BROKER_PID")
  record "{\"measure\":\"P1\",\"side\":\"inflight\",\"rep\":$rep,\"r\":$r,\"cpu\":{\"broker\":$(fsub "$t1" "$t0")}}"
  e0=$(date +%s.%N)
  r=$(oha_run gwe "$SINGLE_GWE" "$RUN/single.json" application/json "$DUR")
  # Answered at enqueue, the events are not at the broker yet: time until its producer
  # queue is empty, so the sustained rate counts the work the early answer deferred.
  drained=$(wait_queue_empty "$GWE_PORT" 120) || die "enqueue gateway's producer queue did not drain"
  e1=$(date +%s.%N)
  record "{\"measure\":\"P3\",\"side\":\"baseline\",\"rep\":$rep,\"r\":$r,\"drain_s\":$drained,\"span_s\":$(fsub "$e1" "$e0")}"
done

# P3 again with 4x the connections: closed-loop clients that wait for an acknowledgement get
# connections ÷ latency, so at 256 connections P3 can be bound by the broker's ack latency
# rather than by work; with enough requests in flight the wait is covered (row P3x).
P3X_CONNS=$((CONNS * 4))
for rep in $(seq 1 "$P3X_REPS"); do
  say "P3 at $P3X_CONNS connections, repetition $rep/$P3X_REPS ($DUR each)"
  r=$(OHA_CONNS=$P3X_CONNS oha_run gw4 "$SINGLE_GW" "$RUN/single.json" application/json "$DUR")
  record "{\"measure\":\"P3x\",\"side\":\"ours\",\"rep\":$rep,\"r\":$r}"
  r=$(inflight_producer "$P3X_CONNS")
  record "{\"measure\":\"P3x\",\"side\":\"inflight\",\"rep\":$rep,\"r\":$r}"
  e0=$(date +%s.%N)
  r=$(OHA_CONNS=$P3X_CONNS oha_run gwe4 "$SINGLE_GWE" "$RUN/single.json" application/json "$DUR")
  drained=$(wait_queue_empty "$GWE_PORT" 120) || die "enqueue gateway's producer queue did not drain"
  e1=$(date +%s.%N)
  record "{\"measure\":\"P3x\",\"side\":\"baseline\",\"rep\":$rep,\"r\":$r,\"drain_s\":$drained,\"span_s\":$(fsub "$e1" "$e0")}"
done

# ---------------------------------------------------------------- P2 (interleaved)
say "P2 warm-up"
OHA_CONNS=$P2_CONNS oha_run warm "$BATCH_GW" "$RUN/batch100.ndjson" application/x-ndjson "$WARM" >/dev/null
"$BIN/bare-producer" --brokers "$BROKERS" --topic bench-events --events $((P2_EVENTS / 4)) >/dev/null
for rep in $(seq 1 "$REPS"); do
  say "P2 repetition $rep/$REPS"
  c0=$(cpu_s "$GW_PID"); t0=$(cpu_s "$BROKER_PID")
  r=$(OHA_CONNS=$P2_CONNS oha_run gwbatch "$BATCH_GW" "$RUN/batch100.ndjson" application/x-ndjson "$DUR")
  c1=$(cpu_s "$GW_PID"); t1=$(cpu_s "$BROKER_PID")
  record "{\"measure\":\"P2\",\"side\":\"ours\",\"rep\":$rep,\"events_per_request\":100,\"r\":$r,\"cpu\":{\"gateway\":$(fsub "$c1" "$c0"),\"broker\":$(fsub "$t1" "$t0")}}"
  t0=$(cpu_s "$BROKER_PID")
  r=$("$BIN/bare-producer" --brokers "$BROKERS" --topic bench-events --events "$P2_EVENTS")
  t1=$(cpu_s "$BROKER_PID")
  record "{\"measure\":\"P2\",\"side\":\"baseline\",\"rep\":$rep,\"r\":$r,\"cpu\":{\"broker\":$(fsub "$t1" "$t0")}}"
done
GW_HWM=$(hwm_kb "$GW_PID"); BARE_HWM=$(hwm_kb "$BARE_PID")
kill "$GW_PID" "$GWE_PID" "$BARE_PID" 2>/dev/null || true

# ---------------------------------------------------------------- P4
say "P4: producing a backlog of $P4_EVENTS events into bench-backlog"
"$BIN/bare-producer" --brokers "$BROKERS" --topic bench-backlog --events "$P4_EVENTS" >"$RUN/backlog.json"
CONS_PORT=$(free_port)
COLS="event_id,correlation_id,severity,message,source,event_time,received_at,stored_at,attributes,kafka_partition,kafka_offset"
metric_sum() { # metrics-text name → value of name (no labels) or 0
  awk -v n="$1" '$1==n {print $2; f=1} END {if (!f) print 0}' "$2"
}
for rep in $(seq 1 "$REPS"); do
  say "P4 repetition $rep/$REPS: consumer draining $P4_EVENTS events (group bench-g$rep)"
  [ "$rep" = 1 ] || "${PSQL[@]}" -c "TRUNCATE log_events" >/dev/null
  start_consumer "consumer-$rep" bench-backlog "bench-g$rep-$DB"; CONS_PID=$STARTED
  # The window runs from the first stored row to the last, so group join is not counted.
  deadline=$((SECONDS + (QUICK == 1 ? 120 : 900)))
  n=0; first_t=; first_n=0; ready_t=$(date +%s.%N); cc0=$(cpu_s "$CONS_PID"); tc0=$(cpu_s "$BROKER_PID")
  while [ "$n" -lt "$P4_EVENTS" ]; do
    [ $SECONDS -lt $deadline ] || die "consumer stored only $n/$P4_EVENTS rows in time"
    sleep 0.1
    n=$("${PSQL[@]}" -c "SELECT count(*) FROM log_events")
    if [ -z "$first_t" ] && [ "$n" -gt 0 ]; then first_t=$(date +%s.%N); first_n=$n; fi
  done
  last_t=$(date +%s.%N)
  cc1=$(cpu_s "$CONS_PID"); tc1=$(cpu_s "$BROKER_PID")
  curl -fsS "http://127.0.0.1:$CONS_PORT/metrics" >"$RUN/consumer-metrics-$rep.txt" || true
  bsum=$(metric_sum consumer_batch_duration_seconds_sum "$RUN/consumer-metrics-$rep.txt")
  bcnt=$(metric_sum consumer_batch_duration_seconds_count "$RUN/consumer-metrics-$rep.txt")
  rows=$(metric_sum consumer_batch_size_sum "$RUN/consumer-metrics-$rep.txt")
  CONS_HWM=$(hwm_kb "$CONS_PID")
  # stored_at = now() of each batch transaction: the span from the first batch to the last,
  # and the rows of the first batch (written at the start of the span), give a rate that
  # does not depend on the polling interval.
  IFS='|' read -r span first_batch <<<"$("${PSQL[@]}" -c "SELECT extract(epoch FROM max(stored_at) - min(stored_at)), count(*) FILTER (WHERE stored_at = (SELECT min(stored_at) FROM log_events)) FROM log_events")"
  kill "$CONS_PID"; wait "$CONS_PID" 2>/dev/null || true
  record "{\"measure\":\"P4\",\"side\":\"ours\",\"rep\":$rep,\"r\":{\"rows\":$n,\"first_rows\":$first_n,\"t0\":$first_t,\"t1\":$last_t,\"ready_t\":$ready_t,\"stored_span_s\":$span,\"first_batch_rows\":$first_batch,\"batch_seconds_sum\":$bsum,\"batches\":$bcnt,\"batch_rows\":$rows,\"hwm_kb\":$CONS_HWM},\"cpu\":{\"consumer\":$(fsub "$cc1" "$cc0"),\"broker\":$(fsub "$tc1" "$tc0")}}"
  # The broker's fetch ceiling: a bare consumer that reads the same backlog and stores nothing.
  t0=$(cpu_s "$BROKER_PID"); m0=$(machine_busy_s)
  r=$("$BIN/bare-consumer" --brokers "$BROKERS" --topic bench-backlog --events "$P4_EVENTS")
  t1=$(cpu_s "$BROKER_PID"); m1=$(machine_busy_s)
  record "{\"measure\":\"P4\",\"side\":\"ceiling\",\"rep\":$rep,\"r\":$r,\"cpu\":{\"broker\":$(fsub "$t1" "$t0"),\"machine\":$(fsub "$m1" "$m0")}}"
  if [ "$rep" = 1 ]; then
    "${PSQL[@]}" -c "\\copy log_events ($COLS) TO '$RUN/rows.csv' WITH (FORMAT csv)"
  fi
  "${PSQL[@]}" -c "TRUNCATE log_events" >/dev/null
  s0=$(date +%s.%N); m0=$(machine_busy_s)
  "${PSQL[@]}" -c "\\copy log_events ($COLS) FROM '$RUN/rows.csv' WITH (FORMAT csv)"
  s1=$(date +%s.%N); m1=$(machine_busy_s)
  record "{\"measure\":\"P4\",\"side\":\"baseline\",\"rep\":$rep,\"r\":{\"rows\":$P4_EVENTS,\"seconds\":$(fsub "$s1" "$s0")},\"cpu\":{\"machine\":$(fsub "$m1" "$m0")}}"
done

# ---------------------------------------------------------------- P5 + P6 (gateway)
# The whole pipeline runs: gateway → Kafka → consumer → PostgreSQL, single events, 90 % info
# and 10 % error bodies. First the sustainable rate S is searched with the limiter out of the
# way; then a gateway with its real flow control, configured for that capacity (RATE_MAX=S,
# RATE_MIN=S/10, default lag thresholds, lag measured every 5 s), gets 50 %, 100 % and 3x of S
# from the open-loop generator (latency from the scheduled send time), in turn, REPS times.
# The limiter-free gateway stays up as a lag probe (LAG_INTERVAL_MS=500, no traffic).
"${PSQL[@]}" -c "TRUNCATE log_events" >/dev/null
P5_GROUP="bench-p5-$DB"
start_consumer consumer-p5 bench-p5 "$P5_GROUP"; P5_CONS_PID=$STARTED
PROBE_PORT=$(free_port); LIM_PORT=$(free_port)
start_gateway gateway-open "$PROBE_PORT" KAFKA_TOPIC=bench-p5 KAFKA_GROUP_ID="$P5_GROUP" LAG_INTERVAL_MS=500
PROBE_PID=$STARTED
lag_now() { health_field "$PROBE_PORT" consumerLag; }   # as the probe last measured it
lag_below() { local l; l=$(lag_now); [ "$l" -ge 0 ] && [ "$l" -lt "$1" ]; }
wait_lag_below() { timed_wait "$2" 0.25 lag_below "$1"; }   # limit seconds
loadgen() { "$BIN/loadgen" "$@"; }
SINGLE_BODIES=()
for _ in 1 2 3 4 5 6 7 8 9; do SINGLE_BODIES+=(--body "$RUN/single.json"); done
SINGLE_BODIES+=(--body "$RUN/single-error.json")

say "P5: sustainable rate: closed loop, 256 connections, ${P5_SEARCH}s, consumer running"
wait_lag_below 1000 60 >/dev/null || die "lag probe never reported a lag below 1000"
r=$(loadgen --url "http://127.0.0.1:$PROBE_PORT/api/logs" "${SINGLE_BODIES[@]}" --rate 0 --concurrency 256 --duration "$P5_SEARCH")
record "{\"measure\":\"P5\",\"side\":\"search\",\"step\":\"closed-loop\",\"r\":$r,\"lag_after\":$(lag_now)}"
closed=$(jget "$r" accepted_per_sec)
S=$(awk -v c="$closed" 'BEGIN{printf "%d", int(c * 0.9 / 100) * 100}')
SUSTAINED=
for _ in 1 2 3 4 5; do
  wait_lag_below 1000 120 >/dev/null || die "consumer did not catch up between search steps"
  say "P5: is $S events/s sustainable? (open loop, ${P5_SEARCH}s)"
  r=$(loadgen --url "http://127.0.0.1:$PROBE_PORT/api/logs" "${SINGLE_BODIES[@]}" --rate "$S" --concurrency 512 --duration "$P5_SEARCH")
  sleep 1.5   # two probe intervals, so the lag below was measured after the last request
  lag=$(lag_now)
  record "{\"measure\":\"P5\",\"side\":\"search\",\"step\":$S,\"r\":$r,\"lag_after\":$lag}"
  ok=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); s=float(sys.argv[2]); lag=int(sys.argv[3])
want = s * d["nominal_seconds"]
p99 = (d["accepted_latency"] or {}).get("p99_ms", 1e9)
print(1 if d["accepted"] >= 0.99 * want and d["accepted_per_sec"] >= 0.97 * s and 0 <= lag < s and p99 < 250 else 0)' "$r" "$S" "$lag")
  if [ "$ok" = 1 ]; then SUSTAINED=$S; break; fi
  S=$(awk -v s="$S" 'BEGIN{printf "%d", int(s * 0.8 / 100) * 100}')
done
[ -n "$SUSTAINED" ] || die "no sustainable rate found (see $RAW)"
say "P5: sustainable rate S = $S events/s"
# p5_config NAME CAP: a gateway with its real flow control configured for CAP events/s
# (RATE_MAX=CAP, RATE_MIN=CAP/10); REPS x (50 %, 100 %, then 3x CAP offered). Leaves the
# gateway running (LIM_PID, LIM_PORT).
# catch_up WHEN: wait until the consumer has caught up (lag < 1000), then let the limited
# gateway see the low lag (5 s interval) and refill.
catch_up() {
  wait_lag_below 1000 120 >/dev/null || die "consumer did not catch up $1"
  sleep "$P5_SETTLE"
}
p5_config() {
  local name=$1 cap=$2 bound=${3:-} rep half over r c0 c1 t0 t1 k0 k1 m0 m1 lag_stop rec
  LIM_PORT=$(free_port)
  start_gateway "gateway-limited-$name" "$LIM_PORT" KAFKA_TOPIC=bench-p5 KAFKA_GROUP_ID="$P5_GROUP" \
    RATE_MAX="$cap" RATE_MIN="$((cap / 10))" SHED_BELOW=WARN LAG_INTERVAL_MS=5000
  LIM_PID=$STARTED
  half=$((cap / 2)); over=$((cap * 3))
  for rep in $(seq 1 "$P5_REPS"); do
    catch_up "before P5 repetition $rep"
    say "P5 [$name, RATE_MAX=$cap] repetition $rep/$P5_REPS: 50 % load ($half/s, ${P5_HALF}s)"
    r=$(loadgen --url "http://127.0.0.1:$LIM_PORT/api/logs" "${SINGLE_BODIES[@]}" --rate "$half" --concurrency 256 --duration "$P5_HALF")
    record "{\"measure\":\"P5\",\"side\":\"half\",\"config\":\"$name\",\"rep\":$rep,\"S\":$cap,\"peak\":$S,\"r\":$r}"
    catch_up "after the 50 % run"
    # 100 % of the capacity, same connections as the overload, through the limiter-free probe
    # gateway (the limited one refuses a few percent at exactly its rate: open-loop jitter
    # against the bucket): the latency accepted requests have at that rate with no overload.
    say "P5 [$name, RATE_MAX=$cap] repetition $rep/$P5_REPS: 100 % load, no limiter ($cap/s, ${P5_HALF}s)"
    r=$(loadgen --url "http://127.0.0.1:$PROBE_PORT/api/logs" "${SINGLE_BODIES[@]}" --rate "$cap" --concurrency 1024 --duration "$P5_HALF")
    record "{\"measure\":\"P5\",\"side\":\"full\",\"config\":\"$name\",\"rep\":$rep,\"S\":$cap,\"peak\":$S,\"r\":$r}"
    catch_up "after the 100 % run"
    if [ -n "$bound" ]; then
      # The machine's share of the overload: the same generator offers the same 3x, but one
      # request in three goes to the limiter-free gateway (the capacity) and the other two to
      # bare axum: every refusal answered at the cost of the cheapest HTTP answer on this
      # stack, and no limiter burst. What this adds to the 100 % p99 is what a 3x offered
      # load costs these two cores whatever the gateway does.
      say "P5 [$name, RATE_MAX=$cap] repetition $rep/$P5_REPS: bound: $over/s offered, 1 in 3 to the limiter-free gateway, 2 in 3 to bare axum, ${P5_OVER}s"
      m0=$(machine_busy_s)
      r=$(loadgen --url "http://127.0.0.1:$PROBE_PORT/api/logs" "${SINGLE_BODIES[@]}" --side-url "http://127.0.0.1:$BOUND_AXUM_PORT/api/logs" --side-share 2 --rate "$over" --concurrency 1024 --duration "$P5_OVER")
      m1=$(machine_busy_s)
      record "{\"measure\":\"P5\",\"side\":\"bound\",\"config\":\"$name\",\"rep\":$rep,\"S\":$cap,\"peak\":$S,\"r\":$r,\"cpu\":{\"machine\":$(fsub "$m1" "$m0")}}"
      catch_up "after the bound run"
    fi
    say "P5 [$name, RATE_MAX=$cap] repetition $rep/$P5_REPS: 3x overload ($over/s offered, ${P5_OVER}s)"
    c0=$(cpu_s "$LIM_PID"); t0=$(cpu_s "$BROKER_PID"); k0=$(cpu_s "$P5_CONS_PID"); m0=$(machine_busy_s)
    r=$(loadgen --url "http://127.0.0.1:$LIM_PORT/api/logs" "${SINGLE_BODIES[@]}" --rate "$over" --concurrency 1024 --duration "$P5_OVER")
    c1=$(cpu_s "$LIM_PID"); t1=$(cpu_s "$BROKER_PID"); k1=$(cpu_s "$P5_CONS_PID"); m1=$(machine_busy_s)
    lag_stop=$(lag_now)
    rec=$(wait_lag_below 10000 300) || rec=null
    record "{\"measure\":\"P5\",\"side\":\"over\",\"config\":\"$name\",\"rep\":$rep,\"S\":$cap,\"peak\":$S,\"r\":$r,\"lag_at_stop\":$lag_stop,\"recovery_s\":$rec,\"cpu\":{\"gateway\":$(fsub "$c1" "$c0"),\"broker\":$(fsub "$t1" "$t0"),\"consumer\":$(fsub "$k1" "$k0"),\"machine\":$(fsub "$m1" "$m0")}}"
  done
}
# "headroom": capacity set to half the peak, so that 3x of it (1.5x the peak) can actually be
# offered from this machine; "peak": capacity = the searched peak (3x of it cannot be offered
# by a generator sharing these two cores: the report shows what was reached).
BOUND_AXUM_PORT=$(free_port)
ADDR=127.0.0.1:$BOUND_AXUM_PORT "$BIN/bare-axum" >"$RUN/bare-axum-p5.log" 2>&1 &
BOUND_AXUM_PID=$!; PIDS+=("$BOUND_AXUM_PID")
wait_http_post "http://127.0.0.1:$BOUND_AXUM_PORT/api/logs" || die "bare-axum (P5 bound) not answering"
# shellcheck disable=SC2017 # rounding down to a multiple of 100 on purpose
p5_config headroom "$(( S / 200 * 100 ))" bound
kill "$LIM_PID" 2>/dev/null || true
# At the peak the bound run also bounds the goodput: what the pipeline accepts when a
# generator on these two cores offers 3x and bare axum answers the excess (full runs only:
# it would take --quick over 3 minutes).
if [ "$QUICK" = 1 ]; then p5_config peak "$S"; else p5_config peak "$S" bound; fi
kill "$BOUND_AXUM_PID" 2>/dev/null || true

say "P6: gateway RSS under 10x overload ($((S * 10)) events/s offered as 100-event batches, ${P6_OVER}s)"
wait_lag_below 1000 120 >/dev/null || true
sleep "$P5_SETTLE"
RSS_LOG=$RUN/rss-gateway.tsv
sample_rss "$LIM_PID" 0.25 "$RSS_LOG"
g0=$(date +%s.%N)
r=$(loadgen --url "http://127.0.0.1:$LIM_PORT/api/logs/batch" --content-type application/x-ndjson \
      --body "$RUN/batch100-mixed.ndjson" --rate "$(awk -v s="$S" 'BEGIN{print s / 10}')" --concurrency 256 --duration "$P6_OVER")
g1=$(date +%s.%N)
kill "$SAMPLER" 2>/dev/null || true
record "{\"measure\":\"P6\",\"side\":\"gateway\",\"S\":$S,\"t0\":$g0,\"t1\":$g1,\"hwm_kb\":$(hwm_kb "$LIM_PID"),\"rss_log\":\"$RSS_LOG\",\"r\":$r}"
kill "$LIM_PID" "$PROBE_PID" "$P5_CONS_PID" 2>/dev/null || true
wait "$P5_CONS_PID" 2>/dev/null || true

# ---------------------------------------------------------------- P6 (consumer)
say "P6: producing a backlog of $P6_EVENTS events into bench-p6"
"$BIN/bare-producer" --brokers "$BROKERS" --topic bench-p6 --events "$P6_EVENTS" >"$RUN/backlog-p6.json"
"${PSQL[@]}" -c "TRUNCATE log_events" >/dev/null
say "P6: consumer draining $P6_EVENTS events, RSS sampled every 0.5 s"
start_consumer consumer-p6 bench-p6 "bench-p6-$DB"; P6_CONS_PID=$STARTED
RSS_LOG6=$RUN/rss-consumer.tsv
sample_rss "$P6_CONS_PID" 0.5 "$RSS_LOG6"
d0=$(date +%s.%N); deadline=$((SECONDS + (QUICK == 1 ? 120 : 900))); n=0; last_say=$SECONDS
while [ "$n" -lt "$P6_EVENTS" ]; do
  [ $SECONDS -lt $deadline ] || die "P6 consumer stored only $n/$P6_EVENTS rows in time"
  sleep 0.5
  n=$("${PSQL[@]}" -c "SELECT count(*) FROM log_events")
  if [ $((SECONDS - last_say)) -ge 10 ]; then say "P6: $n/$P6_EVENTS rows stored"; last_say=$SECONDS; fi
done
d1=$(date +%s.%N)
kill "$SAMPLER" 2>/dev/null || true
record "{\"measure\":\"P6\",\"side\":\"consumer\",\"events\":$P6_EVENTS,\"t0\":$d0,\"t1\":$d1,\"hwm_kb\":$(hwm_kb "$P6_CONS_PID"),\"rss_log\":\"$RSS_LOG6\"}"
kill "$P6_CONS_PID" 2>/dev/null || true
wait "$P6_CONS_PID" 2>/dev/null || true

# ---------------------------------------------------------------- report
record "{\"measure\":\"rss\",\"r\":{\"gateway_hwm_kb\":$GW_HWM,\"bare_axum_hwm_kb\":$BARE_HWM,\"consumer_hwm_kb\":${CONS_HWM:-0}}}"
say "writing bench/results.json and docs/BENCHMARKS.md"
python3 bench/report.py "$RAW" "$QUICK" "$REPS" "$DUR" "$CONNS" "$P2_EVENTS" "$P4_EVENTS" "$RUN"
REPORTED=1
cat bench/results.json
