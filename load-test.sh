#!/usr/bin/env bash
# Drives api-gateway at a fixed rate (scripts/load_driver.py) and prints, once a second, what
# that second saw: events sent, 202, 429 by reason, 503, p99, the gateway's lag, rate and
# status, the consumer's in-flight, paused and breaker. --scenario stall freezes log-consumer
# for a while under the same load, so the gateway walks healthy -> degraded -> critical and
# back. At the end it waits for log-consumer to drain and checks that the rows of this run are
# exactly the events answered 202: no acknowledged event lost, none stored twice.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: ./load-test.sh [--rate N] [--duration D] [--concurrency N] [--batch N]
                      [--severity-mix SEV:W,...] [--url URL] [--consumer-url URL]
                      [--drain-timeout S] [--report FILE.html] [--json FILE]
                      [--scenario stall [--stall D|auto] [--warmup D] [--hold D]
                                        [--consumer-pid PID]]

  --rate N            requests per second, all connections together (default 200)
  --duration D        30s, 2m or seconds (default 30s, at most 10m; not with --scenario stall)
  --concurrency N     connections (default rate / 8, at least 32: an open-loop driver needs
                      rate x latency of them; at most 1000)
  --batch N           events per request; >1 posts JSON arrays to /api/logs/batch (default 1,
                      10 with --scenario stall)
  --severity-mix MIX  share of requests per severity (default ERROR:5,WARN:15,INFO:70,DEBUG:10;
                      ERROR:2,WARN:8,INFO:80,DEBUG:10 with --scenario stall)
  --url URL           gateway, loopback only (default http://127.0.0.1:$GATEWAY_PORT, 8080)
  --consumer-url URL  log-consumer's /health, polled once a second (default
                      http://127.0.0.1:$CONSUMER_PORT, 8081; "" to skip)
  --drain-timeout S   how long to wait for the consumer to store everything (default 180)
  --report FILE.html  write a self-contained HTML report (charts, accounting) and FILE.json
  --json FILE         write the run's data (every second, the totals, the accounting)

  --scenario stall    warm up, freeze log-consumer (SIGSTOP) so its lag grows under the load,
                      resume it (SIGCONT) and keep the load on until the gateway is healthy at
                      full rate again. The consumer is resumed whatever ends the run (Ctrl-C too).
  --stall D|auto      how long it stays frozen (default auto: until the gateway has been
                      critical for --hold, at most 5 minutes)
  --warmup D          load before the freeze (default 20s)
  --hold D            auto stall: time spent critical before the resume (default 15s)
  --consumer-pid PID  the log-consumer to freeze (default: .run/log-consumer.pid of ./setup.sh)
  --lag-normal N, --lag-critical N
                      the gateway's thresholds, for the report's lines (default: read from the
                      environment of ./setup.sh's api-gateway, else 10000 / 50000)

Default stall run (./setup.sh's stack, default gateway settings): 2 000 events/s offered, about
2 to 3 minutes: the gateway admits 1 000/s, the lag passes LAG_NORMAL (10 000) after about
10 s of freeze and LAG_CRITICAL (50 000) after about 2 minutes (the admitted rate falls as the
lag grows, so the lag approaches ~54 000 ever more slowly); a shorter run: start the stack with
lower thresholds, e.g. LAG_NORMAL=2000 LAG_CRITICAL=8000 ./setup.sh (after ./setup.sh stop).

Each run's events carry a source unique to the run (load-<time>-<pid>), so the row check
counts only them (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/logs). Lines are
plain when stdout is not a terminal (CI logs); on a terminal a progress line is redrawn under
them. Needs python3 and psql.
USAGE
}

MAX_SECONDS=600
rate='' duration=30s concurrency='' batch='' mix='' drain_timeout=180
url=http://127.0.0.1:${GATEWAY_PORT:-8080} consumer_url=http://127.0.0.1:${CONSUMER_PORT:-8081}
report='' json='' scenario=none stall=auto warmup=20s hold=15s consumer_pid='' lag_normal='' lag_critical=''
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate=${2:?}; shift 2 ;;
    --duration) duration=${2:?}; shift 2 ;;
    --concurrency) concurrency=${2:?}; shift 2 ;;
    --batch) batch=${2:?}; shift 2 ;;
    --severity-mix) mix=${2:?}; shift 2 ;;
    --url) url=${2:?}; shift 2 ;;
    --consumer-url) consumer_url=${2?}; shift 2 ;;
    --drain-timeout) drain_timeout=${2:?}; shift 2 ;;
    --report) report=${2:?}; shift 2 ;;
    --json) json=${2:?}; shift 2 ;;
    --scenario) scenario=${2:?}; shift 2 ;;
    --stall) stall=${2:?}; shift 2 ;;
    --warmup) warmup=${2:?}; shift 2 ;;
    --hold) hold=${2:?}; shift 2 ;;
    --consumer-pid) consumer_pid=${2:?}; shift 2 ;;
    --lag-normal) lag_normal=${2:?}; shift 2 ;;
    --lag-critical) lag_critical=${2:?}; shift 2 ;;
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
seconds_of() { # 30s, 2m, 30 -> seconds; fails on anything else
  local v
  case "$1" in
    *m) v=${1%m}; is_uint "$v" && echo $((v * 60)) ;;
    *s) v=${1%s}; is_uint "$v" && echo "$v" ;;
    *) is_uint "$1" && echo "$1" ;;
  esac
}
case "$scenario" in
  none) : "${rate:=200}" "${batch:=1}" "${mix:=ERROR:5,WARN:15,INFO:70,DEBUG:10}" ;;
  stall) : "${rate:=200}" "${batch:=10}" "${mix:=ERROR:2,WARN:8,INFO:80,DEBUG:10}" ;;
  *) die "--scenario must be stall (or none)" ;;
esac
in_range "$rate" 1 1000000 || die "--rate must be a positive integer"
: "${concurrency:=$((rate / 8 > 1000 ? 1000 : (rate / 8 < 32 ? 32 : rate / 8)))}"
in_range "$concurrency" 1 1000 || die "--concurrency must be 1..1000"
in_range "$batch" 1 1000 || die "--batch must be 1..1000 (MAX_BATCH_EVENTS)"
is_uint "$drain_timeout" || die "--drain-timeout must be seconds"
seconds=$(seconds_of "$duration") || die "bad --duration $duration"
in_range "$seconds" 1 "$MAX_SECONDS" || die "--duration must be 1s..${MAX_SECONDS}s"
warmup_s=$(seconds_of "$warmup") || die "bad --warmup $warmup"
hold_s=$(seconds_of "$hold") || die "bad --hold $hold"
if [ "$stall" != auto ]; then
  stall_s=$(seconds_of "$stall") || die "bad --stall $stall (40s, 2m or auto)"
  stall=$stall_s
fi
url=${url%/}
consumer_url=${consumer_url%/}
loopback_hostport "$url" >/dev/null || die "--url must be a loopback http:// URL"
[ -z "$consumer_url" ] || loopback_hostport "$consumer_url" >/dev/null || die "--consumer-url must be a loopback http:// URL"
if [ -n "$report" ] && [ -z "$json" ]; then json=${report%.html}.json; fi
[ -z "$report" ] || [ "$json" != "$report" ] || die "--report must end in .html (the JSON goes beside it)"

command -v python3 >/dev/null || apt_install python3
command -v psql >/dev/null || apt_install postgresql-client

# The gateway started by ./setup.sh on this URL's port: its pid (for its settings), else empty.
setup_pid() { # NAME
  local pidfile="$ROOT/.run/$1.pid" pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  [ -r "/proc/$pid/environ" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && echo "$pid"
  return 0
}
# setting PID NAME DEFAULT: the value NAME had in that process's environment, else DEFAULT.
setting() {
  local v=
  [ -n "$1" ] && v=$(tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | sed -n "s/^$2=//p" | tail -n 1)
  echo "${v:-$3}"
}
gw_pid=$(setup_pid api-gateway)
if [ -n "$gw_pid" ] && [ "$(setting "$gw_pid" GATEWAY_ADDR '')" != "$(loopback_hostport "$url")" ]; then gw_pid=; fi
: "${lag_normal:=$(setting "$gw_pid" LAG_NORMAL 10000)}" "${lag_critical:=$(setting "$gw_pid" LAG_CRITICAL 50000)}"
{ is_uint "$lag_normal" && is_uint "$lag_critical"; } || die "--lag-normal / --lag-critical must be integers"

curl -fsS -o /dev/null --max-time 3 "$url/health/ready" || die "the gateway at $url is not ready (start the stack: ./setup.sh)"
psql "$DATABASE_URL" -Atqc 'select 1 from log_events limit 1' >/dev/null 2>&1 \
  || die "cannot read log_events via $DATABASE_URL (is log-consumer running? it creates the table; set DATABASE_URL)"

driver=(python3 "$ROOT/scripts/load_driver.py" --url "$url" --consumer-url "$consumer_url"
  --rate "$rate" --batch "$batch" --concurrency "$concurrency" --severity-mix "$mix"
  --database-url "$DATABASE_URL" --drain-timeout "$drain_timeout"
  --lag-normal "$lag_normal" --lag-critical "$lag_critical")
[ -z "$json" ] || driver+=(--json "$json")
[ -z "$report" ] || driver+=(--report "$report")

if [ "$scenario" = stall ]; then
  if [ -z "$consumer_pid" ]; then
    consumer_pid=$(setup_pid log-consumer)
    [ -n "$consumer_pid" ] || die "no log-consumer of ./setup.sh runs (.run/log-consumer.pid): start the stack, or pass --consumer-pid"
  fi
  kill -0 "$consumer_pid" 2>/dev/null || die "no process $consumer_pid (--consumer-pid)"
  # The driver resumes the consumer on every way out; this covers the driver itself dying.
  trap 'kill -CONT "$consumer_pid" 2>/dev/null || true' EXIT
  trap 'exit 130' INT TERM HUP
  log "gateway thresholds: LAG_NORMAL $lag_normal, LAG_CRITICAL $lag_critical, LAG_INTERVAL_MS $(setting "$gw_pid" LAG_INTERVAL_MS 5000), RATE_MAX $(setting "$gw_pid" RATE_MAX 1000), RATE_MIN $(setting "$gw_pid" RATE_MIN 100) ($([ -n "$gw_pid" ] && echo "from the environment of ./setup.sh's api-gateway, pid $gw_pid" || echo "defaults, or --lag-normal/--lag-critical"))"
  driver+=(--scenario stall --consumer-pid "$consumer_pid" --warmup "$warmup_s" --stall "$stall" --hold "$hold_s")
else
  driver+=(--duration "$seconds")
fi

step "load: $rate requests/s x $batch event(s) to $url (scenario $scenario)"
"${driver[@]}"
