# shellcheck shell=bash
# Helpers shared by setup.sh, integration-tests/run.sh and the test scripts: progress lines,
# deadline waits, free ports, and "ensure" steps that install (apt) and start PostgreSQL,
# Redis and Prometheus only when they are missing, remembering what they started themselves
# so that a later stop touches nothing it merely reused.
#
# Source it after setting LIB_TAG (the progress prefix, e.g. "setup") and optionally RUN_DIR
# (where "started-*" markers and pid files go).

LIB_TAG=${LIB_TAG:-lib}
RUN_DIR=${RUN_DIR:-.run}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
REDIS_HOST=${REDIS_HOST:-127.0.0.1}
REDIS_PORT=${REDIS_PORT:-6379}

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

log() { printf '[%s] %s\n' "$LIB_TAG" "$*" >&2; }
step() { printf '[%s] step: %s\n' "$LIB_TAG" "$*" >&2; }
warn() { printf '[%s] warning: %s\n' "$LIB_TAG" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$LIB_TAG" "$*" >&2; exit 1; }

# A TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# tcp_answers HOST PORT: something accepts connections there.
tcp_answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# loopback_hostport URL: prints host:port of an http URL; fails for any non-loopback host
# (load and test traffic only ever goes to this machine).
loopback_hostport() {
  python3 - "$1" <<'PY'
import ipaddress, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
host = u.hostname or ""
ok = host == "localhost"
if not ok:
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
if not ok or u.scheme != "http":
    sys.exit(f"not a loopback http:// URL (traffic goes to this machine only): {sys.argv[1]}")
print(f"{'[%s]' % host if ':' in host else host}:{u.port or 80}")
PY
}

# wait_for_http URL SECONDS [WHAT] [PID]: polls until URL answers 2xx; dies at the deadline
# (or as soon as PID, the process expected to serve it, has exited).
wait_for_http() {
  local url=$1 secs=$2 what=${3:-$1} pid=${4:-} deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      die "$what exited before $url answered"
    fi
    [ $SECONDS -lt $deadline ] || die "$what did not answer on $url within ${secs}s"
    sleep 0.5
  done
}

# create_topics TOPIC KAFKA_SH_ARGS...: TOPIC and TOPIC.dlq, 3 partitions, keeping a record as
# long as PostgreSQL keeps its row: retention.ms = KAFKA_RETENTION_MS, default LOG_RETENTION_DAYS
# (7) days; retention.bytes=-1, so no size limit ever deletes a record the consumer has not read.
# An existing topic gets these values. KAFKA_SH_ARGS: --data DIR or --bootstrap LIST. Needs ROOT.
create_topics() {
  local topic=$1 t
  shift
  local ms=${KAFKA_RETENTION_MS:-$((${LOG_RETENTION_DAYS:-7} * 86400000))}
  for t in "$topic" "$topic.dlq"; do
    "$ROOT/scripts/kafka.sh" create-topic "$t" --partitions 3 --config "retention.ms=$ms" \
      --config retention.bytes=-1 "$@"
  done
}

# debug_bins: sets BIN_DIR (default: the cargo target's debug folder) to a folder holding
# api-gateway and log-consumer, building them with `cargo build --bins` when either is missing.
# Needs ROOT (the checkout).
debug_bins() {
  local built=${CARGO_TARGET_DIR:-$ROOT/target}/debug
  BIN_DIR=${BIN_DIR:-$built}
  if [ ! -x "$BIN_DIR/api-gateway" ] || [ ! -x "$BIN_DIR/log-consumer" ]; then
    step "building the binaries"
    cargo build --bins
    BIN_DIR=$built
  fi
}

# check DESCRIPTION COMMAND...: a PASS line (counted in `passed`), or a FAIL line (counted in
# `failed`) and the end of the script; the test scripts' way to assert.
check() {
  local what=$1
  shift
  if "$@"; then
    passed=$((${passed:-0} + 1)); log "PASS $what"
  else
    failed=$((${failed:-0} + 1)); log "FAIL $what"; exit 1
  fi
}

# wait_until SECONDS WHAT COMMAND...: polls a command until it succeeds; dies at the deadline.
wait_until() {
  local secs=$1 what=$2 deadline=$(($1 + SECONDS))
  shift 2
  until "$@"; do
    [ $SECONDS -lt $deadline ] || die "timed out after ${secs}s waiting for $what"
    sleep 0.5
  done
}

# Runs a command as root (directly, or through sudo); dies with a clear message otherwise.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}

_APT_UPDATED=${_APT_UPDATED:-}
# apt_install PKG...: apt-get update once per process, then install without prompts.
apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found: install $* with your package manager"
  if [ -z "$_APT_UPDATED" ]; then
    log "apt-get update"
    as_root apt-get update -qq >&2 || die "apt-get update failed (no network to the Debian mirror?)"
    _APT_UPDATED=1
  fi
  log "apt-get install $*"
  local apt_log
  apt_log=$(run_path apt.log)
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >>"$apt_log" 2>&1; then
    tail -n 20 "$apt_log" >&2
    die "apt-get install $* failed (full output in $apt_log)"
  fi
}

# Build dependencies of the workspace (rdkafka builds librdkafka from source).
ensure_build_deps() {
  local missing=()
  command -v cc >/dev/null || missing+=(build-essential)
  command -v make >/dev/null || missing+=(build-essential)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  command -v cmake >/dev/null || missing+=(cmake)
  command -v curl >/dev/null || missing+=(curl)
  command -v python3 >/dev/null || missing+=(python3)
  local pkg
  for pkg in libssl-dev zlib1g-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    # shellcheck disable=SC2207 # de-duplicate the list
    missing=($(printf '%s\n' "${missing[@]}" | sort -u))
    step "installing build dependencies: ${missing[*]}"
    apt_install "${missing[@]}"
  fi
}

# Rust: only if cargo is absent, via rustup (its download host may be unreachable from here).
ensure_rust() {
  command -v cargo >/dev/null && return 0
  step "cargo not found: installing Rust with rustup"
  if ! curl -fsS --max-time 20 https://sh.rustup.rs -o /tmp/rustup-init.sh; then
    die "cargo is missing and rustup's host (sh.rustup.rs) is unreachable: install Rust >= 1.80 (https://rustup.rs) and re-run"
  fi
  sh /tmp/rustup-init.sh -y --profile minimal --component rustfmt,clippy >&2 \
    || die "rustup failed: install Rust >= 1.80 (https://rustup.rs) and re-run"
  command -v cargo >/dev/null || die "cargo still not on PATH after rustup"
}

# Absolute path of a file inside RUN_DIR (creating RUN_DIR).
run_path() { mkdir -p "$RUN_DIR"; echo "$(cd "$RUN_DIR" && pwd)/$1"; }

pg_answers() {
  if command -v pg_isready >/dev/null; then
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2
  else
    tcp_answers "$PG_HOST" "$PG_PORT"
  fi
}

# PostgreSQL on PG_HOST:PG_PORT reachable as user postgres without a password (trust), as
# the default DATABASE_URL (postgres://postgres@127.0.0.1:5432/logs) expects.
ensure_postgres() {
  if pg_answers; then
    log "PostgreSQL answers on $PG_HOST:$PG_PORT (reusing it)"
  else
    case "$PG_HOST" in 127.0.0.1|localhost) ;; *) die "PostgreSQL at $PG_HOST:$PG_PORT does not answer" ;; esac
    if ! command -v pg_ctlcluster >/dev/null || ! [ -d /etc/postgresql ]; then
      step "installing PostgreSQL"
      apt_install postgresql postgresql-client
    fi
    command -v psql >/dev/null || apt_install postgresql-client
    local version
    version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
    [ -n "$version" ] || die "no PostgreSQL cluster in /etc/postgresql (try: pg_createcluster 15 main)"
    step "starting PostgreSQL $version/main"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 \
      || die "pg_ctlcluster $version main start failed (see /var/log/postgresql/)"
    echo "$version" > "$(run_path started-postgres)"
    wait_until 30 "PostgreSQL on $PG_HOST:$PG_PORT" pg_answers
    log "PostgreSQL $version started on $PG_HOST:$PG_PORT"
  fi
  command -v psql >/dev/null || apt_install postgresql-client
  if ! psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
    if [ -f "$(run_path started-postgres)" ]; then
      # A cluster we installed/started for development: let local TCP clients in as the
      # passwordless default URL expects (loopback only).
      local hba
      hba=$(as_root su postgres -c "psql -Atqc 'show hba_file'") || die "cannot read pg_hba.conf location"
      step "allowing passwordless loopback connections in $hba (development cluster)"
      as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
      as_root su postgres -c "psql -Atqc 'select pg_reload_conf()'" >/dev/null
      wait_until 10 "PostgreSQL to accept user postgres without password" \
        psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Atqc 'select 1'
    else
      die "PostgreSQL on $PG_HOST:$PG_PORT refuses user postgres without a password: add 'host all all 127.0.0.1/32 trust' to pg_hba.conf or set DATABASE_URL / TEST_DATABASE_ADMIN_URL with a password"
    fi
  fi
}

# ensure_database NAME: creates the database when it does not exist.
ensure_database() {
  local name=$1
  if [ "$(psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Atqc "select 1 from pg_database where datname = '$name'")" != 1 ]; then
    psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -qc "create database \"$name\"" >/dev/null \
      || die "could not create database $name"
    log "created database $name"
  else
    log "database $name exists"
  fi
}

# ensure_read_role DB: the role log_reader (LOGIN, no password: the local server trusts
# 127.0.0.1) may read every table postgres creates in DB's public schema, now and later
# (default privileges: the consumer's migrations create log_events after this runs), and
# nothing else. The gateway's read API connects as it (README "Reading the logs").
ensure_read_role() {
  local db=$1
  psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d "$db" -v ON_ERROR_STOP=1 -q >/dev/null <<SQL || die "could not create the role log_reader"
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'log_reader') THEN
    CREATE ROLE log_reader LOGIN;
  END IF;
END \$\$;
GRANT CONNECT ON DATABASE "$db" TO log_reader;
GRANT USAGE ON SCHEMA public TO log_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO log_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT SELECT ON TABLES TO log_reader;
ALTER ROLE log_reader SET default_transaction_read_only = on;
SQL
  log "role log_reader may read database $db"
}

redis_answers() {
  local reply=
  # The braces keep 2>/dev/null from applying to the whole shell (a bare exec would).
  { exec 9<>"/dev/tcp/$REDIS_HOST/$REDIS_PORT"; } 2>/dev/null || return 1
  printf 'PING\r\n' >&9
  read -r -t 2 reply <&9 || true
  exec 9<&- 9>&-
  [ "${reply%$'\r'}" = "+PONG" ]
}

ensure_redis() {
  if redis_answers; then
    log "Redis answers on $REDIS_HOST:$REDIS_PORT (reusing it)"
    return 0
  fi
  case "$REDIS_HOST" in 127.0.0.1|localhost) ;; *) die "Redis at $REDIS_HOST:$REDIS_PORT does not answer" ;; esac
  if tcp_answers "$REDIS_HOST" "$REDIS_PORT"; then
    die "port $REDIS_PORT is taken by something that is not Redis"
  fi
  if ! command -v redis-server >/dev/null; then
    step "installing Redis"
    apt_install redis-server
  fi
  step "starting Redis on $REDIS_HOST:$REDIS_PORT"
  local pidfile
  pidfile=$(run_path redis.pid)
  redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" --save "" --appendonly no \
    --pidfile "$pidfile" --logfile "$(run_path redis.log)" --dir "$(dirname "$pidfile")" >&2 \
    || die "redis-server failed to start (see $(run_path redis.log))"
  wait_until 15 "Redis on $REDIS_HOST:$REDIS_PORT" redis_answers
  cp "$pidfile" "$(run_path started-redis)"
  log "Redis started (pid $(cat "$pidfile"))"
}

# prometheus and promtool binaries (the Debian package; its systemd service is not used).
ensure_prometheus() {
  if command -v prometheus >/dev/null && command -v promtool >/dev/null; then return 0; fi
  step "installing Prometheus"
  apt_install prometheus
  command -v promtool >/dev/null || die "promtool missing after installing the prometheus package"
}

# start_prometheus CONFIG STORAGE_DIR PORT LOGFILE PIDFILE: runs our own Prometheus on
# 127.0.0.1:PORT in the background and waits for /-/ready.
start_prometheus() {
  local config=$1 storage=$2 port=$3 logfile=$4 pidfile=$5
  mkdir -p "$storage"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    log "Prometheus already running (pid $(cat "$pidfile"))"
  else
    tcp_answers 127.0.0.1 "$port" && die "port $port is taken: set PROMETHEUS_PORT to a free port"
    nohup prometheus --config.file="$config" --storage.tsdb.path="$storage" \
      --web.listen-address="127.0.0.1:$port" --storage.tsdb.retention.time=2d \
      >>"$logfile" 2>&1 &
    echo $! > "$pidfile"
  fi
  wait_for_http "http://127.0.0.1:$port/-/ready" 60 "Prometheus (log $logfile)" "$(cat "$pidfile")"
}

# stop_pidfile PIDFILE WHAT: SIGTERM, SIGKILL after 15 s; removes the pid file.
stop_pidfile() {
  local pidfile=$1 what=$2 pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null; do
      if [ $SECONDS -ge $deadline ]; then
        warn "$what (pid $pid) ignored SIGTERM for 15s: SIGKILL"
        kill -9 "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.2
    done
    log "stopped $what (pid $pid)"
  fi
  rm -f "$pidfile"
}

# start_bench_broker DATA LOG [NODES]: starts a benchmark's own Apache Kafka (one node, or
# NODES) in DATA (progress in LOG) and prints its bootstrap servers; dies with the log's tail
# when it does not come up.
# With --owner, should the bench be killed before its cleanup runs, the cluster stops and its
# folder goes anyway (not with BENCH_KEEP_DATA=1, which keeps the folder).
start_bench_broker() {
  local data=$1 start_log=$2 owner_flag=(--owner "$$") brokers
  [ "${BENCH_KEEP_DATA:-0}" = 1 ] && owner_flag=()
  brokers=$(scripts/kafka.sh start --data "$data" --nodes "${3:-1}" "${owner_flag[@]}" 2>"$start_log" | tail -n 1) ||
    { tail -n 20 "$start_log" >&2; die "scripts/kafka.sh start failed (log: $start_log)"; }
  [ -n "$brokers" ] || die "scripts/kafka.sh start printed no bootstrap servers (log: $start_log)"
  echo "$brokers"
}

# stop_bench_broker DATA: stops a benchmark's own Kafka cluster (scripts/kafka.sh start --data
# DATA) and deletes its folder, gigabytes after a full run, unless BENCH_KEEP_DATA=1. Each
# node's server.log is kept beside it first (DATA-node-N.log), so the broker's log stays in
# the run directory with the raw measurements and the services' logs either way.
stop_bench_broker() {
  local data=$1 log
  [ -n "$data" ] || return 0
  scripts/kafka.sh stop --data "$data" >/dev/null 2>&1 || true
  [ "${BENCH_KEEP_DATA:-0}" = 1 ] && return 0
  for log in "$data"/node-*/server.log; do
    [ -f "$log" ] && cp "$log" "$data-$(basename "$(dirname "$log")").log"
  done
  scripts/kafka.sh stop --data "$data" --delete >/dev/null 2>&1 || rm -rf "$data"
}

# Stops PostgreSQL/Redis only if a "started-*" marker in RUN_DIR says we started them.
stop_started_services() {
  local marker
  marker="$RUN_DIR/started-redis"
  if [ -f "$marker" ]; then
    stop_pidfile "$marker" "Redis (started by us)"
    rm -f "$RUN_DIR/redis.pid"
  fi
  marker="$RUN_DIR/started-postgres"
  if [ -f "$marker" ]; then
    local version
    version=$(cat "$marker")
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main stop >&2 \
      && log "stopped PostgreSQL $version/main (started by us)"
    rm -f "$marker"
  fi
}
