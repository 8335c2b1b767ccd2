#!/usr/bin/env bash
# Brings the whole pipeline up natively (no Docker): PostgreSQL, Redis, an Apache Kafka node,
# api-gateway, log-consumer and Prometheus, installing what is missing. Idempotent; `stop`
# stops exactly what `up` started (pid files and markers under .run/).
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: ./setup.sh [up|stop|status|--docker|-h]

  up        (default) install what is missing, start everything, wait until ready
  stop      stop what up started (never a PostgreSQL/Redis it merely reused)
  status    say what runs where
  --docker  docker compose up -d --build (needs a running Docker engine)

env overrides: GATEWAY_PORT (8080), CONSUMER_PORT (8081), KAFKA_PORT (9092, used when
  .run/kafka is first formatted), PROMETHEUS_PORT (9090), DATABASE_URL, REDIS_URL,
  DATABASE_READ_URL (DATABASE_URL as the role log_reader), LOG_FORMAT (text), RUST_LOG (info),
  SETUP_SERVICES ("api-gateway log-consumer"), LOG_RETENTION_DAYS (7: the consumer drops older
  partitions, and the topics' retention.ms is the same unless KAFKA_RETENTION_MS is set;
  retention.bytes is always -1).
  Prometheus scrapes the ports in prometheus.yml; with other ports a copy with them is used.
USAGE
}

cd "$(dirname "$0")"
ROOT=$(pwd)
LIB_TAG=setup
RUN_DIR="$ROOT/.run"
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

GATEWAY_PORT=${GATEWAY_PORT:-8080}
CONSUMER_PORT=${CONSUMER_PORT:-8081}
KAFKA_PORT=${KAFKA_PORT:-9092}
PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/logs}
# The read API's URL: the role log_reader (SELECT only) that `up` creates on the same database.
DATABASE_READ_URL=${DATABASE_READ_URL:-$(printf '%s' "$DATABASE_URL" | sed -E 's#^(postgres(ql)?://)[^@/]*@#\1log_reader@#')}
REDIS_URL=${REDIS_URL-redis://127.0.0.1:6379}
SETUP_SERVICES=${SETUP_SERVICES:-api-gateway log-consumer}
TOPIC="log-events"
DLQ_TOPIC="$TOPIC.dlq"
GROUP="log-consumer-group"
LOG_RETENTION_DAYS=${LOG_RETENTION_DAYS:-7}
# The topics keep a record as long as PostgreSQL keeps its row (create_topics in scripts/lib.sh).
KAFKA_RETENTION_MS=${KAFKA_RETENTION_MS:-$((LOG_RETENTION_DAYS * 86400000))}
export LOG_RETENTION_DAYS KAFKA_RETENTION_MS

KAFKA_DATA="$RUN_DIR/kafka"
kafka_sh() { "$ROOT/scripts/kafka.sh" "$@" --data "$KAFKA_DATA"; }
kafka_version() { sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/scripts/kafka/pom.xml"; }

service_port() { case "$1" in api-gateway) echo "$GATEWAY_PORT" ;; log-consumer) echo "$CONSUMER_PORT" ;; esac; }

# Env of each service, names as the binaries read them (clap `env = ...`).
service_env() {
  local common=(KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_TOPIC="$TOPIC" KAFKA_GROUP_ID="$GROUP"
    LOG_FORMAT="${LOG_FORMAT:-text}" RUST_LOG="${RUST_LOG:-info}")
  case "$1" in
    api-gateway) echo "${common[@]}" GATEWAY_ADDR="127.0.0.1:$GATEWAY_PORT" REDIS_URL="$REDIS_URL" DATABASE_READ_URL="$DATABASE_READ_URL" ;;
    log-consumer) echo "${common[@]}" CONSUMER_ADDR="127.0.0.1:$CONSUMER_PORT" KAFKA_DLQ_TOPIC="$DLQ_TOPIC" DATABASE_URL="$DATABASE_URL" LOG_RETENTION_DAYS="$LOG_RETENTION_DAYS" ;;
  esac
}

ready_url() {
  case "$1" in
    api-gateway) echo "http://127.0.0.1:$GATEWAY_PORT/health/ready" ;;
    log-consumer) echo "http://127.0.0.1:$CONSUMER_PORT/health/ready" ;;
  esac
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_service() {
  local name=$1 bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/$1" pidfile="$RUN_DIR/$1.pid" logfile="$RUN_DIR/$1.log" port
  port=$(service_port "$name")
  [ -x "$bin" ] || die "$bin missing: the release build did not produce it"
  if pid_alive "$pidfile"; then
    if [ "$bin" -nt "$pidfile" ]; then
      step "$name was rebuilt: restarting it"
      stop_pidfile "$pidfile" "$name"
    else
      log "$name already running (pid $(cat "$pidfile"))"
      return 0
    fi
  fi
  tcp_answers 127.0.0.1 "$port" && die "port $port (for $name) is taken by another process: stop it or set $( [ "$name" = api-gateway ] && echo GATEWAY_PORT || echo CONSUMER_PORT)"
  step "starting $name on 127.0.0.1:$port (log $logfile)"
  # shellcheck disable=SC2046 # service_env prints NAME=value words without spaces
  nohup env $(service_env "$name") "$bin" >>"$logfile" 2>&1 &
  echo $! > "$pidfile"
}

prometheus_config() {
  if [ "$GATEWAY_PORT:$CONSUMER_PORT" = 8080:8081 ]; then
    echo "$ROOT/prometheus.yml"
    return
  fi
  # Other ports: a copy of prometheus.yml with them (rule_files made absolute).
  local copy="$RUN_DIR/prometheus.yml"
  sed -e "s/127.0.0.1:8080/127.0.0.1:$GATEWAY_PORT/; s/127.0.0.1:8081/127.0.0.1:$CONSUMER_PORT/" \
    -e "s#prometheus/alerts.yml#$ROOT/prometheus/alerts.yml#" "$ROOT/prometheus.yml" > "$copy"
  echo "$copy"
}

cmd_up() {
  local started=$SECONDS name
  mkdir -p "$RUN_DIR"
  step "checking build tools"
  ensure_build_deps
  ensure_rust
  for name in $SETUP_SERVICES; do
    [ -f "$ROOT/crates/$name/Cargo.toml" ] || die "crate crates/$name is missing: cannot start $name (set SETUP_SERVICES to start fewer)"
  done

  step "PostgreSQL"
  ensure_postgres
  ensure_database logs
  ensure_read_role logs
  if [ -d "$ROOT/migrations" ] && command -v sqlx >/dev/null; then
    step "applying migrations/ with sqlx-cli"
    sqlx migrate run --source "$ROOT/migrations" --database-url "$DATABASE_URL" >&2
  else
    # Not with psql: that would bypass sqlx's _sqlx_migrations ledger and the consumer would
    # then apply the same files a second time.
    log "log-consumer applies migrations/ at start (sqlx-cli not installed)"
  fi
  step "Redis"
  if [ -n "$REDIS_URL" ]; then ensure_redis; else log "REDIS_URL is empty: Redis disabled"; fi
  step "Prometheus binaries"
  ensure_prometheus

  step "Apache Kafka $(kafka_version) (one KRaft node, data $KAFKA_DATA)"
  kafka_sh install
  if [ -f "$KAFKA_DATA/cluster.env" ]; then
    KAFKA_BROKERS=$(kafka_sh start | tail -n 1)
  else
    KAFKA_BROKERS=$(kafka_sh start --port "$KAFKA_PORT" | tail -n 1)
  fi
  create_topics "$TOPIC" --data "$KAFKA_DATA"

  local bins=()
  for name in $SETUP_SERVICES; do bins+=(--bin "$name"); done
  step "cargo build --release ${bins[*]} (first build takes several minutes)"
  cargo build --release "${bins[@]}" >&2 || die "cargo build --release failed (output above)"

  for name in $SETUP_SERVICES; do start_service "$name"; done

  step "Prometheus on 127.0.0.1:$PROMETHEUS_PORT (storage $RUN_DIR/prometheus)"
  start_prometheus "$(prometheus_config)" "$RUN_DIR/prometheus" "$PROMETHEUS_PORT" \
    "$RUN_DIR/prometheus.log" "$RUN_DIR/prometheus.pid"
  echo "$PROMETHEUS_PORT" > "$RUN_DIR/prometheus.port"

  for name in $SETUP_SERVICES; do
    step "waiting for $name $(ready_url "$name")"
    wait_for_http "$(ready_url "$name")" 120 "$name (log $RUN_DIR/$name.log)" "$(cat "$RUN_DIR/$name.pid")"
  done
  log "everything is up after $((SECONDS - started))s"
  cat <<EOF

  api-gateway   http://127.0.0.1:$GATEWAY_PORT   (health /api/logs/health, /metrics, /openapi.json)  log $RUN_DIR/api-gateway.log
  log-consumer  http://127.0.0.1:$CONSUMER_PORT   (/health, /metrics)                                  log $RUN_DIR/log-consumer.log
  Kafka         $KAFKA_BROKERS   Apache Kafka $(kafka_version), topics $TOPIC, $DLQ_TOPIC (3 partitions each, retention.ms $KAFKA_RETENTION_MS)   log $KAFKA_DATA/node-1/server.log
  PostgreSQL    $DATABASE_URL   (table log_events)
  Redis         ${REDIS_URL:-disabled}
  Prometheus    http://127.0.0.1:$PROMETHEUS_PORT  (alerts: /alerts)                                 log $RUN_DIR/prometheus.log

next:
  curl -si -XPOST http://127.0.0.1:$GATEWAY_PORT/api/logs -H 'content-type: application/json' \\
    -d '{"correlationId":"c1","severity":"INFO","message":"hello","source":"curl","timestamp":'"\$(date +%s%3N)"'}'
  curl -s http://127.0.0.1:$GATEWAY_PORT/api/logs/health
  psql $DATABASE_URL -c 'select count(*) from log_events'
  ./load-test.sh --rate 500 --duration 30s
  ./setup.sh status | ./setup.sh stop
EOF
}

cmd_stop() {
  step "stopping what ./setup.sh started"
  stop_pidfile "$RUN_DIR/prometheus.pid" "Prometheus"
  stop_pidfile "$RUN_DIR/api-gateway.pid" "api-gateway"
  stop_pidfile "$RUN_DIR/log-consumer.pid" "log-consumer"
  if [ -f "$KAFKA_DATA/cluster.env" ]; then kafka_sh stop; fi
  stop_started_services
  log "stopped (data kept in $RUN_DIR; rm -rf $RUN_DIR to forget it)"
}

cmd_status() {
  local name pidfile url
  for name in api-gateway log-consumer prometheus; do
    pidfile="$RUN_DIR/$name.pid"
    if pid_alive "$pidfile"; then
      case "$name" in
        prometheus) url="http://127.0.0.1:$(cat "$RUN_DIR/prometheus.port" 2>/dev/null || echo "$PROMETHEUS_PORT")/-/ready" ;;
        *) url=$(ready_url "$name") ;;
      esac
      if curl -fsS -o /dev/null --max-time 2 "$url"; then
        printf '%-13s running (pid %s), ready: %s\n' "$name" "$(cat "$pidfile")" "$url"
      else
        printf '%-13s running (pid %s), NOT ready: %s\n' "$name" "$(cat "$pidfile")" "$url"
      fi
    else
      printf '%-13s stopped\n' "$name"
    fi
  done
  if [ -f "$KAFKA_DATA/cluster.env" ]; then
    printf '%-13s %s\n' kafka "$(kafka_sh status 2>/dev/null | paste -sd ';' - | sed 's/;/; /g' || true)"
  else
    printf '%-13s not set up (Apache Kafka %s; ./setup.sh starts it)\n' kafka "$(kafka_version)"
  fi
  local who
  who=$([ -f "$RUN_DIR/started-postgres" ] && echo "started by setup.sh" || echo "not ours")
  if pg_answers; then printf '%-13s answers on %s:%s (%s)\n' postgresql "$PG_HOST" "$PG_PORT" "$who"
  else printf '%-13s not answering on %s:%s\n' postgresql "$PG_HOST" "$PG_PORT"; fi
  who=$([ -f "$RUN_DIR/started-redis" ] && echo "started by setup.sh" || echo "not ours")
  if redis_answers; then printf '%-13s answers on %s:%s (%s)\n' redis "$REDIS_HOST" "$REDIS_PORT" "$who"
  else printf '%-13s not answering on %s:%s\n' redis "$REDIS_HOST" "$REDIS_PORT"; fi
}

cmd_docker() {
  command -v docker >/dev/null || die "the docker client is not installed"
  docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed): start the Docker daemon, or run ./setup.sh without --docker for the native stack"
  if docker compose version >/dev/null 2>&1; then
    step "docker compose up -d --build"
    docker compose up -d --build
  elif command -v docker-compose >/dev/null; then
    step "docker-compose up -d --build"
    docker-compose up -d --build
  else
    die "neither 'docker compose' (plugin) nor docker-compose is installed"
  fi
  log "gateway http://127.0.0.1:8080, consumer http://127.0.0.1:8081, Prometheus http://127.0.0.1:9090, Grafana http://127.0.0.1:3000 (dashboard 'Backpressure Monitoring')"
}

case "${1:-up}" in
  up) cmd_up ;;
  stop|down) cmd_stop ;;
  status) cmd_status ;;
  --docker|docker) cmd_docker ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
