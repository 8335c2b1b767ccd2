#!/usr/bin/env bash
# Side-by-side benchmark of the ingest pipeline against real baseline programs.
#   ./bench/run.sh          full run (longer repetitions, 200 000-event backlog)
#   ./bench/run.sh --quick  3 short repetitions per measure, 20 000-event backlog, < 3 min
# Starts its own tansu (free ports, data under .run/bench), a fresh database, the services in
# release mode with the limiter out of the way, then writes bench/results.json and
# docs/BENCHMARKS.md. Every claim is a ratio of medians measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=0
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done

REPS=3
CONNS=32
if [ "$QUICK" = 1 ]; then
  DUR=3s; WARM=2s; P2_EVENTS=100000; P4_EVENTS=20000
else
  DUR=10s; WARM=5s; P2_EVENTS=300000; P4_EVENTS=200000; REPS=${BENCH_REPS:-5}
fi

say() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { say "error: $*"; exit 1; }
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
for t in oha psql curl python3; do command -v "$t" >/dev/null || die "$t not found"; done

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
clk_tck=$(getconf CLK_TCK)
# CPU seconds (user+system) a process has used so far.
cpu_s() { awk -v t="$clk_tck" '{print ($14+$15)/t}' "/proc/$1/stat" 2>/dev/null || echo 0; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.6f", a-b}'; }
hwm_kb() { awk '/VmHWM/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

RUN=$ROOT/.run/bench/$(date +%Y%m%d-%H%M%S)
mkdir -p "$RUN"
RAW=$RUN/raw.jsonl
: >"$RAW"
record() { echo "$1" >>"$RAW"; }   # one JSON object per line, aggregated by bench/report.py

PIDS=()
TANSU_DATA=$RUN/tansu
KPORT=$(free_port); MPORT=$(free_port)
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  scripts/tansu.sh stop --data "$TANSU_DATA" >/dev/null 2>&1 || true
  if [ -n "${DB:-}" ]; then psql -h 127.0.0.1 -U postgres -qAtc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

say "building release binaries (no-op when up to date)"
cargo build --release -q -p api-gateway -p log-consumer -p bench-baselines
BIN=$ROOT/target/release

say "starting tansu on 127.0.0.1:$KPORT"
scripts/tansu.sh start --port "$KPORT" --metrics-port "$MPORT" --data "$TANSU_DATA" 2>"$RUN/tansu-start.log"
TANSU_PID=$(cat "$TANSU_DATA/tansu.pid")
BROKERS=127.0.0.1:$KPORT
for topic in bench-events bench-backlog; do
  scripts/tansu.sh create-topic "$topic" --partitions 3 --port "$KPORT" 2>>"$RUN/tansu-start.log"
done

DB=bench_$(date +%s)
DBURL=postgres://postgres@127.0.0.1:5432/$DB
psql -h 127.0.0.1 -U postgres -qAtc "CREATE DATABASE $DB" >/dev/null
PSQL=(psql -h 127.0.0.1 -U postgres -d "$DB" -qAt)

wait_http() { # url seconds
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

start_gateway() { # name port extra-env...
  local name=$1 port=$2; shift 2
  env GATEWAY_ADDR="127.0.0.1:$port" KAFKA_BROKERS="$BROKERS" KAFKA_TOPIC=bench-events \
      KAFKA_GROUP_ID=bench-none REDIS_URL='' RATE_MAX=1000000 RATE_MIN=1000000 \
      SHED_BELOW=TRACE LOG_FORMAT=json RUST_LOG=warn "$@" \
      "$BIN/api-gateway" >"$RUN/$name.log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
  wait_http "http://127.0.0.1:$port/health/ready" 60 || die "$name not ready; see $RUN/$name.log"
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
open(f"{run}/batch100.ndjson", "w").write("\n".join(json.dumps(ev(i)) for i in range(100)) + "\n")
PY

# oha run → one JSON line: {rps_202, p99_s, n202, non202, seconds}
oha_run() { # label url body content-type duration [extra oha args]
  local label=$1 url=$2 body=$3 ct=$4 dur=$5; shift 5
  local out=$RUN/oha-$label-$RANDOM.json
  oha --no-tui --output-format json -z "$dur" -c "$CONNS" -m POST -T "$ct" -D "$body" "$@" "$url" >"$out"
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

# ---------------------------------------------------------------- P1 + P3 (interleaved)
say "P1/P3 warm-up ($WARM each)"
oha_run warm "$SINGLE_BARE" "$RUN/single.json" application/json "$WARM" >/dev/null
oha_run warm "$SINGLE_GW" "$RUN/single.json" application/json "$WARM" >/dev/null
oha_run warm "$SINGLE_GWE" "$RUN/single.json" application/json "$WARM" >/dev/null
for rep in $(seq 1 "$REPS"); do
  say "P1/P3 repetition $rep/$REPS (-c $CONNS, $DUR each)"
  r=$(oha_run bare "$SINGLE_BARE" "$RUN/single.json" application/json "$DUR")
  record "{\"measure\":\"P1\",\"side\":\"baseline\",\"rep\":$rep,\"r\":$r}"
  c0=$(cpu_s "$GW_PID"); t0=$(cpu_s "$TANSU_PID")
  r=$(oha_run gw "$SINGLE_GW" "$RUN/single.json" application/json "$DUR")
  c1=$(cpu_s "$GW_PID"); t1=$(cpu_s "$TANSU_PID")
  record "{\"measure\":\"P1\",\"side\":\"ours\",\"rep\":$rep,\"r\":$r,\"cpu\":{\"gateway\":$(fsub "$c1" "$c0"),\"broker\":$(fsub "$t1" "$t0")}}"
  record "{\"measure\":\"P3\",\"side\":\"ours\",\"rep\":$rep,\"r\":$r}"
  r=$(oha_run gwe "$SINGLE_GWE" "$RUN/single.json" application/json "$DUR")
  record "{\"measure\":\"P3\",\"side\":\"baseline\",\"rep\":$rep,\"r\":$r}"
done

# ---------------------------------------------------------------- P2 (interleaved)
say "P2 warm-up"
oha_run warm "$BATCH_GW" "$RUN/batch100.ndjson" application/x-ndjson "$WARM" >/dev/null
"$BIN/bare-producer" --brokers "$BROKERS" --topic bench-events --events $((P2_EVENTS / 4)) >/dev/null
for rep in $(seq 1 "$REPS"); do
  say "P2 repetition $rep/$REPS"
  c0=$(cpu_s "$GW_PID"); t0=$(cpu_s "$TANSU_PID")
  r=$(oha_run gwbatch "$BATCH_GW" "$RUN/batch100.ndjson" application/x-ndjson "$DUR")
  c1=$(cpu_s "$GW_PID"); t1=$(cpu_s "$TANSU_PID")
  record "{\"measure\":\"P2\",\"side\":\"ours\",\"rep\":$rep,\"events_per_request\":100,\"r\":$r,\"cpu\":{\"gateway\":$(fsub "$c1" "$c0"),\"broker\":$(fsub "$t1" "$t0")}}"
  t0=$(cpu_s "$TANSU_PID")
  r=$("$BIN/bare-producer" --brokers "$BROKERS" --topic bench-events --events "$P2_EVENTS")
  t1=$(cpu_s "$TANSU_PID")
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
  env CONSUMER_ADDR="127.0.0.1:$CONS_PORT" KAFKA_BROKERS="$BROKERS" KAFKA_TOPIC=bench-backlog \
      KAFKA_GROUP_ID="bench-g$rep-$DB" DATABASE_URL="$DBURL" LOG_FORMAT=json RUST_LOG=warn \
      "$BIN/log-consumer" >"$RUN/consumer-$rep.log" 2>&1 &
  CONS_PID=$!; PIDS+=("$CONS_PID")
  wait_http "http://127.0.0.1:$CONS_PORT/health/ready" 60 || die "consumer not ready; see $RUN/consumer-$rep.log"
  # The window runs from the first stored row to the last, so group join is not counted.
  deadline=$((SECONDS + (QUICK == 1 ? 120 : 900)))
  n=0; first_t=; first_n=0; ready_t=$(date +%s.%N); cc0=$(cpu_s "$CONS_PID"); tc0=$(cpu_s "$TANSU_PID")
  while [ "$n" -lt "$P4_EVENTS" ]; do
    [ $SECONDS -lt $deadline ] || die "consumer stored only $n/$P4_EVENTS rows in time"
    sleep 0.1
    n=$("${PSQL[@]}" -c "SELECT count(*) FROM log_events")
    if [ -z "$first_t" ] && [ "$n" -gt 0 ]; then first_t=$(date +%s.%N); first_n=$n; fi
  done
  last_t=$(date +%s.%N)
  cc1=$(cpu_s "$CONS_PID"); tc1=$(cpu_s "$TANSU_PID")
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
  if [ "$rep" = 1 ]; then
    "${PSQL[@]}" -c "\\copy log_events ($COLS) TO '$RUN/rows.csv' WITH (FORMAT csv)"
  fi
  "${PSQL[@]}" -c "TRUNCATE log_events" >/dev/null
  s0=$(date +%s.%N)
  "${PSQL[@]}" -c "\\copy log_events ($COLS) FROM '$RUN/rows.csv' WITH (FORMAT csv)"
  s1=$(date +%s.%N)
  record "{\"measure\":\"P4\",\"side\":\"baseline\",\"rep\":$rep,\"r\":{\"rows\":$P4_EVENTS,\"seconds\":$(fsub "$s1" "$s0")}}"
done

# ---------------------------------------------------------------- report
record "{\"measure\":\"rss\",\"r\":{\"gateway_hwm_kb\":$GW_HWM,\"bare_axum_hwm_kb\":$BARE_HWM,\"consumer_hwm_kb\":${CONS_HWM:-0}}}"
say "writing bench/results.json and docs/BENCHMARKS.md"
python3 bench/report.py "$RAW" "$QUICK" "$REPS" "$DUR" "$CONNS" "$P2_EVENTS" "$P4_EVENTS" "$RUN"
cat bench/results.json
