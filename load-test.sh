#!/usr/bin/env bash
# Drives api-gateway with oha at a fixed rate, prints what clients saw (statuses, 429 share,
# latency), then waits for log-consumer to drain and checks that log_events grew by exactly
# the number of events answered 202: no acknowledged event lost, none stored twice.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: ./load-test.sh [--rate N] [--duration D] [--concurrency N] [--batch N]
                      [--severity-mix SEV:W,...] [--url URL] [--drain-timeout S]

  --rate N            requests per second, all connections together (default 200)
  --duration D        30s, 2m or seconds (default 30s, at most 10m)
  --concurrency N     connections (default 16, at most 1000)
  --batch N           events per request; >1 posts JSON arrays to /api/logs/batch (default 1)
  --severity-mix MIX  share of requests per severity (default ERROR:5,WARN:15,INFO:70,DEBUG:10)
  --url URL           gateway base URL, loopback only (default http://127.0.0.1:8080)
  --drain-timeout S   how long to wait for the consumer to store everything (default 180)

The bodies: one line per request (oha -Z takes one line per request), severities in the
proportions of --severity-mix. No body carries an eventId and the gateway derives it from the
content, so every event is different (its line and position are in its message): a
repeated body would be one event, stored once. At most 2 000 000 events per run (rate x
seconds x batch). The row check assumes nothing else writes to
log_events meanwhile (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/logs).
Needs oha (installed with cargo when missing), python3 and psql.
USAGE
}

MAX_SECONDS=600
rate=200 duration=30s concurrency=16 batch=1 mix="ERROR:5,WARN:15,INFO:70,DEBUG:10"
url=http://127.0.0.1:8080 drain_timeout=180
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate=${2:?}; shift 2 ;;
    --duration) duration=${2:?}; shift 2 ;;
    --concurrency) concurrency=${2:?}; shift 2 ;;
    --batch) batch=${2:?}; shift 2 ;;
    --severity-mix) mix=${2:?}; shift 2 ;;
    --url) url=${2:?}; shift 2 ;;
    --drain-timeout) drain_timeout=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")"
ROOT=$(pwd)
LIB_TAG=load-test
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/logs}

is_uint() { case "$1" in ''|*[!0-9]*) return 1 ;; *) return 0 ;; esac; }
in_range() { is_uint "$1" && [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; } # VALUE MIN MAX
in_range "$rate" 1 1000000 || die "--rate must be a positive integer"
in_range "$concurrency" 1 1000 || die "--concurrency must be 1..1000"
in_range "$batch" 1 1000 || die "--batch must be 1..1000 (MAX_BATCH_EVENTS)"
is_uint "$drain_timeout" || die "--drain-timeout must be seconds"
case "$duration" in
  *m) seconds=${duration%m}; is_uint "$seconds" || die "bad --duration $duration"; seconds=$((seconds * 60)) ;;
  *s) seconds=${duration%s}; is_uint "$seconds" || die "bad --duration $duration" ;;
  *) seconds=$duration; is_uint "$seconds" || die "bad --duration $duration" ;;
esac
in_range "$seconds" 1 "$MAX_SECONDS" || die "--duration must be 1s..${MAX_SECONDS}s"
url=${url%/}
loopback_hostport "$url" >/dev/null || die "--url must be a loopback http:// URL"
path=/api/logs
[ "$batch" -gt 1 ] && path=/api/logs/batch

# --- tools ------------------------------------------------------------------------------
ensure_oha
command -v psql >/dev/null || apt_install postgresql-client

rows() { psql "$DATABASE_URL" -Atqc 'select count(*) from log_events'; }
lag() { curl -fsS --max-time 3 "$url/api/logs/health" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("consumerLag", ""))' 2>/dev/null || true; }
accepted_metric() {
  curl -fsS --max-time 3 "$url/metrics" 2>/dev/null | awk '$1 == "ingest_events_accepted_total" {print $2}' || true
}

# --- bodies -----------------------------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/load-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# oha may send a little more than rate x seconds: some spare lines, so no body repeats.
requests=$((rate * seconds + rate / 10 + 100))
[ $((requests * batch)) -le 2000000 ] || die "$((requests * batch)) events is more than the 2 000 000 distinct events one run may send: lower --rate, --duration or --batch"
python3 - "$mix" "$batch" "$requests" >"$tmp/bodies" <<'PY' || die "bad --severity-mix '$mix' (e.g. ERROR:10,INFO:90)"
import json, sys, time
mix, batch, requests = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
known = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"}
weights = []
for part in mix.split(","):
    sev, _, w = part.partition(":")
    sev = sev.strip().upper()
    if sev not in known or not w.strip().isdigit():
        sys.exit(f"bad severity weight: {part}")
    weights.append((sev, int(w)))
total = sum(w for _, w in weights)
if total <= 0:
    sys.exit("weights sum to 0")
# 100 lines in the mix's proportions, interleaved (each severity spread evenly).
placed = []
for sev, w in weights:
    n = max(1 if w else 0, round(100 * w / total))
    placed += [((k + 0.5) / n, sev) for k in range(n)]
lines = [sev for _, sev in sorted(placed)]
now = int(time.time() * 1000)
out = sys.stdout
for i in range(requests):
    sev = lines[i % len(lines)]
    def event(j):
        return {"correlationId": f"load-{i % 100}-{j}", "severity": sev, "message": f"load test {sev} event {i}.{j}",
                "source": "load-test", "timestamp": now, "attributes": {"tool": "oha"}}
    body = event(0) if batch == 1 else [event(j) for j in range(batch)]
    out.write(json.dumps(body, separators=(",", ":")) + "\n")
PY

# --- state before ---------------------------------------------------------------------
curl -fsS -o /dev/null --max-time 3 "$url/health/ready" || die "the gateway at $url is not ready (start the stack: ./setup.sh)"
before=$(rows 2>/dev/null) || die "cannot count log_events via $DATABASE_URL (is log-consumer running? it creates the table)"
sleep 1
if [ "$(rows)" != "$before" ]; then
  warn "log_events is growing before the test: something else writes, the exact row check may fail"
  before=$(rows)
fi
metric_before=$(accepted_metric)

# --- run --------------------------------------------------------------------------------
step "oha: $rate req/s for ${seconds}s, $concurrency connections, $batch event(s)/request to $url$path (mix $mix)"
# -w: requests still running at the deadline are awaited, so each one's answer is counted;
# -t above PRODUCE_TIMEOUT_MS so that oha never gives up on a request the gateway accepts.
oha -z "${seconds}s" -q "$rate" -c "$concurrency" -w -t 30s -m POST -T application/json \
  -Z "$tmp/bodies" --no-tui --output-format json "$url$path" >"$tmp/oha.json" \
  || die "oha failed"

ok202=$(python3 - "$tmp/oha.json" "$batch" "$seconds" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
batch, seconds = int(sys.argv[2]), float(sys.argv[3])
codes = {k: int(v) for k, v in d.get("statusCodeDistribution", {}).items()}
errors = d.get("errorDistribution", {})
total = sum(codes.values()) + sum(int(v) for v in errors.values())
lat = d.get("latencyPercentiles", {})
ok = codes.get("202", 0)
out = sys.stderr
print(f"requests:        {total} in {d['summary']['total']:.1f}s ({d['summary']['requestsPerSec']:.1f}/s)", file=out)
print("by status:       " + (", ".join(f"{k}: {v}" for k, v in sorted(codes.items())) or "none"), file=out)
if errors:
    print("errors:          " + ", ".join(f"{k}: {v}" for k, v in errors.items()), file=out)
print(f"429 share:       {100.0 * codes.get('429', 0) / total if total else 0:.1f}%", file=out)
print(f"accepted events: {ok * batch} ({ok * batch / seconds:.1f} events/s)", file=out)
fmt = lambda v: "n/a" if v is None else f"{v * 1000:.1f} ms"
print(f"latency:         p50 {fmt(lat.get('p50'))}, p99 {fmt(lat.get('p99'))}", file=out)
print(ok)
PY
) || die "could not read oha's output $tmp/oha.json"
expected=$((ok202 * batch))

# --- drain and row check ----------------------------------------------------------------
step "waiting up to ${drain_timeout}s for log-consumer to store $expected new events"
deadline=$((SECONDS + drain_timeout)) last=-1 stable=0
while true; do
  now_rows=$(rows)
  grown=$((now_rows - before))
  [ "$grown" -eq "$expected" ] && [ "$(lag)" = 0 ] && break
  if [ "$now_rows" = "$last" ] && [ "$(lag)" = 0 ]; then stable=$((stable + 1)); else stable=0; fi
  # Lag 0 and no new row for ~10 s: the consumer is done, whatever the count says.
  [ "$stable" -ge 10 ] && break
  [ $SECONDS -lt $deadline ] || break
  last=$now_rows
  sleep 1
done
metric_after=$(accepted_metric)
if [ -n "$metric_before" ] && [ -n "$metric_after" ]; then
  log "gateway ingest_events_accepted_total grew by $(python3 -c "print(int(float('$metric_after') - float('$metric_before')))")"
fi
if [ "$grown" -eq "$expected" ]; then
  log "rows: log_events grew by $grown = events answered 202 ($ok202 requests x $batch): PASS"
else
  die "rows: log_events grew by $grown but $expected events were answered 202 ($ok202 requests x $batch), consumer lag $(lag): FAIL"
fi
