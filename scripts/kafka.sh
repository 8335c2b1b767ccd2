#!/usr/bin/env bash
# The one way to get an Apache Kafka broker here: installs the broker's jars from Maven Central
# (through scripts/kafka/pom.xml), formats and starts one KRaft node or a three-node cluster,
# stops, restarts and kills nodes for tests, and creates topics. setup.sh, the test runner, the
# Rust test harness (crates/test-support) and bench/ all call this script.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/kafka/pom.xml")

usage() {
  cat <<USAGE
usage: scripts/kafka.sh COMMAND [options]   (flags in any order)

Apache Kafka ${KAFKA_VERSION} in KRaft mode (each node is broker and controller), from Maven Central.

commands:
  install                  OpenJDK 17 and Maven from Debian's packages when missing, then the
                           broker's jars (scripts/kafka/pom.xml) into the cache; instant when cached
  start                    format (first time only) and start the node(s), wait until the cluster
                           answers a metadata request with every node, print the bootstrap servers
                           as the last line of standard output; a folder holding a stopped cluster
                           is restarted with its data (no re-format)
  stop                     stop every node started with this --data (SIGTERM, SIGKILL after 30 s);
                           deletes nothing unless --delete (then SIGKILL at once)
  status                   each node: running or stopped, and its address (exit 0 all running,
                           3 none, 4 some)
  bootstrap                print the bootstrap servers of the cluster in --data
  create-topic NAME        create a topic (an existing one is fine: its --config values are set)
  describe NAME            one line per partition: leader, replicas, in-sync replicas
  topic-config NAME KEY    print the topic's value of config KEY (e.g. retention.ms)
  produce NAME             each line of standard input becomes one record (acks=all)
  kill-node N              signal node N (the id Kafka reports as partition leader) and wait
                           until it has exited
  restart-node N           start node N again and wait until the cluster has every node

options:
  --data DIR               the cluster's folder: config, data, logs, pids (required but for install)
  --bootstrap LIST         create-topic, describe, produce: a cluster not started with a --data
                           folder (host:port,...), e.g. the test runner's KAFKA_BROKERS
  --nodes 1|3              start: cluster size for a new folder [1]
  --port P                 start: node 1's client port (node N gets P+N-1) [a free port]
  --owner PID              start: when process PID exits, stop the cluster and delete --data
                           (the Rust test harness passes its own pid)
  --partitions N           create-topic [3]
  --replication R          create-topic [number of nodes, at most 3]
  --min-insync M           create-topic [2 when R >= 3, else 1]
  --config KEY=VALUE       create-topic: a topic config, e.g. retention.ms=604800000 (repeatable)
  --signal KILL|TERM       kill-node [KILL]
  --key K                  produce: the records' key [none]
  --delete                 stop: also delete --data
  -h, --help               this text

env: KAFKA_HEAP_OPTS ["-Xms256m -Xmx512m"], KAFKA_CACHE (where the jars go)
     [\${XDG_CACHE_HOME:-~/.cache}/log-ingest/kafka-${KAFKA_VERSION}-<pom hash>]
USAGE
}

# Progress lines, die, as_root, apt_install, free_port and tcp_answers come from lib.sh; its
# run files (the apt log) go under the cache, not the caller's working directory.
LIB_TAG=kafka
RUN_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/log-ingest
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"
say() { log "$@"; }

cmd=
arg=
data=
nodes=
port=
owner=
partitions=3
replication=
min_insync=
signal=KILL
delete=0
bootstrap=
key=
topic_configs=()
extra=
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data=$2; shift 2 ;;
    --nodes) nodes=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --owner) owner=$2; shift 2 ;;
    --partitions) partitions=$2; shift 2 ;;
    --replication) replication=$2; shift 2 ;;
    --min-insync) min_insync=$2; shift 2 ;;
    --config) topic_configs+=("$2"); shift 2 ;;
    --signal) signal=$2; shift 2 ;;
    --bootstrap) bootstrap=$2; shift 2 ;;
    --key) key=$2; shift 2 ;;
    --delete) delete=1; shift ;;
    -h|--help|help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *)
      if [ -z "$cmd" ]; then cmd=$1
      elif [ -z "$arg" ]; then arg=$1
      elif [ "$cmd" = topic-config ] && [ -z "$extra" ]; then extra=$1
      else die "unexpected argument $1 (see --help)"
      fi
      shift ;;
  esac
done
[ -n "$cmd" ] || { usage >&2; exit 2; }

pom_hash=$(cat "$HERE/kafka/pom.xml" "$HERE/kafka/KafkaAdmin.java" | sha256sum | cut -c1-12)
CACHE=${KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/log-ingest/kafka-$KAFKA_VERSION-$pom_hash}
HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}

java_major() {
  java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1
}

do_install() {
  if [ -f "$CACHE/.complete" ]; then return 0; fi
  if ! command -v java >/dev/null || [ "$(java_major)" -lt 17 ] || ! command -v javac >/dev/null; then
    apt_install openjdk-17-jdk-headless
  fi
  [ "$(java_major)" -ge 17 ] || die "Kafka $KAFKA_VERSION needs Java 17 or newer; java -version says $(java_major) (set PATH to a JDK 17)"
  command -v mvn >/dev/null || apt_install maven
  say "resolving Apache Kafka $KAFKA_VERSION's jars from Maven Central into $CACHE (once)"
  rm -rf "$CACHE.tmp"
  mkdir -p "$CACHE.tmp/libs" "$CACHE.tmp/admin"
  if ! mvn -B -q -f "$HERE/kafka/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$CACHE.tmp/libs" >"$CACHE.tmp/mvn.log" 2>&1; then
    tail -n 30 "$CACHE.tmp/mvn.log" >&2
    die "mvn could not resolve the broker's jars (scripts/kafka/pom.xml; full log $CACHE.tmp/mvn.log)"
  fi
  javac -d "$CACHE.tmp/admin" -cp "$CACHE.tmp/libs/*" "$HERE/kafka/KafkaAdmin.java" >&2 \
    || die "javac scripts/kafka/KafkaAdmin.java failed"
  rm -rf "$CACHE"
  mv "$CACHE.tmp" "$CACHE"
  touch "$CACHE/.complete"
  if [ -z "${KAFKA_CACHE:-}" ]; then
    # Earlier versions of the pom or the admin tool: nothing uses them any more.
    find "$(dirname "$CACHE")" -maxdepth 1 -name 'kafka-*' ! -path "$CACHE" -exec rm -rf {} + 2>/dev/null || true
  fi
  say "installed: $(find "$CACHE/libs" -name '*.jar' | wc -l) jars, $(du -sh "$CACHE/libs" | cut -f1)"
}

admin() { java -Xmx128m -XX:TieredStopAtLevel=1 -cp "$CACHE/libs/*:$CACHE/admin" \
  -Dlog4j2.configurationFile="$HERE/kafka/log4j2-tools.properties" KafkaAdmin "$@"; }

need_data() {
  [ -n "$data" ] || die "$cmd needs --data DIR (see --help)"
  # Only start creates the folder: a stop after the folder was deleted must not recreate it.
  [ "$cmd" = start ] && mkdir -p "$data"
  if [ ! -d "$data" ]; then
    case "$cmd" in
      stop) say "no cluster in $data"; exit 0 ;;
      status) echo "no cluster in $data"; exit 3 ;;
      *) die "no cluster in $data" ;;
    esac
  fi
  data=$(cd "$data" && pwd)
}

port_taken() { tcp_answers 127.0.0.1 "$1"; }

# cluster.env in the data folder records what start chose: NODES, CLUSTER_ID, PORTS, CONTROLLER_PORTS.
load_cluster() {
  [ -f "$data/cluster.env" ] || return 1
  # shellcheck disable=SC1091 # written by new_cluster below
  . "$data/cluster.env"
}

node_port() { echo "$PORTS" | cut -d' ' -f"$1"; }
node_dir() { echo "$data/node-$1"; }
node_pid() { cat "$(node_dir "$1")/pid" 2>/dev/null; }
node_running() { local pid; pid=$(node_pid "$1") && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

bootstrap_servers() {
  local n out=
  for n in $(seq 1 "$NODES"); do out="${out:+$out,}127.0.0.1:$(node_port "$n")"; done
  echo "$out"
}

new_cluster() {
  local n=${nodes:-1} p c ports=() cports=() voters=
  case "$n" in 1|3) ;; *) die "--nodes must be 1 or 3 (got $n)" ;; esac
  for i in $(seq 1 "$n"); do
    if [ -n "$port" ]; then p=$((port + i - 1)); else p=$(free_port); fi
    port_taken "$p" && die "port $p (node $i) is taken by another process: choose another --port"
    c=$(free_port)
    ports+=("$p"); cports+=("$c")
    voters="${voters:+$voters,}$i@127.0.0.1:$c"
  done
  NODES=$n
  PORTS="${ports[*]}"
  CONTROLLER_PORTS="${cports[*]}"
  CLUSTER_ID=$(admin_uuid)
  local rf=1 isr=1
  if [ "$n" -ge 3 ]; then rf=3; isr=2; fi
  for i in $(seq 1 "$n"); do
    local dir
    dir=$(node_dir "$i")
    mkdir -p "$dir/data"
    {
      echo "# written by scripts/kafka.sh start; node $i of $n"
      echo "process.roles=broker,controller"
      echo "node.id=$i"
      echo "listeners=PLAINTEXT://127.0.0.1:${ports[$((i - 1))]},CONTROLLER://127.0.0.1:${cports[$((i - 1))]}"
      echo "advertised.listeners=PLAINTEXT://127.0.0.1:${ports[$((i - 1))]}"
      echo "controller.listener.names=CONTROLLER"
      echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
      echo "inter.broker.listener.name=PLAINTEXT"
      if [ "$n" = 1 ]; then
        echo "controller.quorum.bootstrap.servers=127.0.0.1:${cports[0]}"
      else
        echo "controller.quorum.voters=$voters"
      fi
      echo "log.dirs=$dir/data"
      echo "num.partitions=3"
      echo "default.replication.factor=$rf"
      echo "min.insync.replicas=$isr"
      echo "auto.create.topics.enable=false"
      # Internal topics sized for this cluster: with replication 3 above a single node the
      # group coordinator never comes up (COORDINATOR_NOT_AVAILABLE).
      echo "offsets.topic.replication.factor=$rf"
      echo "offsets.topic.num.partitions=3"
      echo "transaction.state.log.replication.factor=$rf"
      echo "transaction.state.log.min.isr=$isr"
      echo "transaction.state.log.num.partitions=3"
      echo "share.coordinator.state.topic.replication.factor=$rf"
      echo "share.coordinator.state.topic.min.isr=$isr"
      echo "share.coordinator.state.topic.num.partitions=3"
      echo "group.initial.rebalance.delay.ms=0"
      # A dead broker is fenced (and its partitions get new leaders) once its session times
      # out: 9 s by default, 4 s here (heartbeats every second), for a LAN cluster.
      echo "broker.heartbeat.interval.ms=1000"
      echo "broker.session.timeout.ms=4000"
      # A 2-core machine: few threads, a small log-cleaner buffer (128 MiB on heap by default).
      echo "num.io.threads=2"
      echo "num.network.threads=2"
      echo "num.recovery.threads.per.data.dir=1"
      echo "log.cleaner.dedupe.buffer.size=16777216"
      echo "log.cleaner.threads=1"
    } > "$dir/server.properties"
    local fmt=(format -t "$CLUSTER_ID" -c "$dir/server.properties")
    [ "$n" = 1 ] && fmt+=(--standalone)
    if ! java -cp "$CACHE/libs/*" -Dlog4j2.configurationFile="$HERE/kafka/log4j2.properties" \
        -Dkafka.logs.dir="$dir" kafka.tools.StorageTool "${fmt[@]}" >"$dir/format.log" 2>&1; then
      cat "$dir/format.log" >&2
      die "formatting node $i failed"
    fi
  done
  cat > "$data/cluster.env" <<EOF
NODES=$NODES
CLUSTER_ID=$CLUSTER_ID
PORTS="$PORTS"
CONTROLLER_PORTS="$CONTROLLER_PORTS"
EOF
  say "formatted a $n-node cluster (id $CLUSTER_ID) in $data"
}

admin_uuid() { java -cp "$CACHE/libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1; }

start_node() {
  local i=$1 dir
  dir=$(node_dir "$i")
  if node_running "$i"; then return 0; fi
  port_taken "$(node_port "$i")" && die "port $(node_port "$i") (node $i) is taken by another process"
  # shellcheck disable=SC2086 # HEAP_OPTS is a list of JVM flags
  nohup java $HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$HERE/kafka/log4j2.properties" -Dkafka.logs.dir="$dir" \
    -cp "$CACHE/libs/*" kafka.Kafka "$dir/server.properties" >>"$dir/stdout.log" 2>&1 </dev/null &
  echo $! > "$dir/pid"
}

last_lines() {
  local i=$1 dir
  dir=$(node_dir "$i")
  say "node $i's last log lines ($dir/server.log, $dir/stdout.log):"
  tail -n 15 "$dir/server.log" 2>/dev/null >&2 || true
  tail -n 5 "$dir/stdout.log" 2>/dev/null >&2 || true
}

# Waits until the cluster reports every node that should run (those with a pid file: a node
# killed on purpose stays down), failing early, with the dead node's last log lines, when one
# of them exits.
wait_ready() {
  local secs=${1:-90} boot i deadline=$((SECONDS + ${1:-90})) expected=()
  boot=$(bootstrap_servers)
  for i in $(seq 1 "$NODES"); do
    [ -f "$(node_dir "$i")/pid" ] && expected+=("$i")
  done
  [ ${#expected[@]} -gt 0 ] || die "no node of $data is running"
  # First each node's listener (a node killed a moment ago may still be registered with the
  # controller until its session times out), then the metadata request.
  for i in "${expected[@]}"; do
    until port_taken "$(node_port "$i")"; do
      if ! node_running "$i"; then last_lines "$i"; die "node $i exited while starting"; fi
      [ $SECONDS -lt $deadline ] || { last_lines "$i"; die "node $i did not listen on port $(node_port "$i") within ${secs}s"; }
      sleep 0.2
    done
  done
  admin ready "$boot" "${#expected[@]}" "$((deadline - SECONDS > 5 ? deadline - SECONDS : 5))" 2>"$data/ready.err" &
  local waiter=$!
  while kill -0 "$waiter" 2>/dev/null; do
    for i in "${expected[@]}"; do
      if ! node_running "$i"; then
        kill "$waiter" 2>/dev/null || true
        last_lines "$i"
        die "node $i exited while starting"
      fi
    done
    sleep 0.3
  done
  if ! wait "$waiter"; then
    for i in "${expected[@]}"; do last_lines "$i"; done
    die "the cluster did not answer within ${secs}s: $(cat "$data/ready.err")"
  fi
}

start_watchdog() {
  [ -n "$owner" ] || return 0
  local wpid
  wpid=$(cat "$data/watchdog.pid" 2>/dev/null || true)
  if [ -n "$wpid" ] && kill -0 "$wpid" 2>/dev/null; then return 0; fi
  # Detached from the caller's stdio (a test runner waits for those to close): once the
  # owner has exited, stop the cluster and delete its folder.
  # shellcheck disable=SC2016 # the inner bash expands $1..$3 (owner, this script, data)
  nohup bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done
    "$2" stop --data "$3" --delete >/dev/null 2>&1' kafka-watchdog "$owner" "$HERE/kafka.sh" "$data" \
    </dev/null >/dev/null 2>&1 &
  echo $! > "$data/watchdog.pid"
}

do_start() {
  need_data
  do_install
  if load_cluster; then
    if [ -n "$nodes" ] && [ "$nodes" != "$NODES" ]; then
      die "$data holds a $NODES-node cluster, not $nodes: use another --data, or stop --delete it first"
    fi
    if [ -n "$port" ] && [ "$port" != "$(node_port 1)" ]; then
      die "$data's cluster listens on port $(node_port 1), not $port: use another --data, or stop --delete it first"
    fi
  else
    new_cluster
  fi
  local i started=0
  for i in $(seq 1 "$NODES"); do
    if ! node_running "$i"; then start_node "$i"; started=$((started + 1)); fi
  done
  start_watchdog
  local t0=$SECONDS
  wait_ready 90
  if [ "$started" -gt 0 ]; then
    say "Apache Kafka $KAFKA_VERSION: $NODES node(s) ready in $((SECONDS - t0))s, data in $data"
  else
    say "already running: $NODES node(s), data in $data"
  fi
  bootstrap_servers
}

wait_exit() {
  local pid=$1 secs=$2 deadline=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}

do_stop() {
  need_data
  if load_cluster; then
    local i pid pids=() sig=TERM
    # Data about to be deleted needs no clean shutdown (and a cluster that lost its quorum
    # would not finish one).
    [ "$delete" = 1 ] && sig=KILL
    for i in $(seq 1 "$NODES"); do
      if node_running "$i"; then
        pid=$(node_pid "$i")
        kill -s "$sig" "$pid" 2>/dev/null || true
        pids+=("$pid")
      fi
    done
    for pid in "${pids[@]}"; do
      if ! wait_exit "$pid" 30; then
        say "pid $pid ignored SIGTERM for 30 s: SIGKILL"
        kill -9 "$pid" 2>/dev/null || true
        wait_exit "$pid" 10 || true
      fi
    done
    rm -f "$data"/node-*/pid
    say "stopped ${#pids[@]} node(s) of $data"
  else
    say "no cluster in $data"
  fi
  if [ "$delete" = 1 ]; then rm -rf "$data"; say "deleted $data"; fi
}

do_status() {
  need_data
  load_cluster || { echo "no cluster in $data"; exit 3; }
  local i up=0
  for i in $(seq 1 "$NODES"); do
    if node_running "$i"; then
      echo "node $i: running (pid $(node_pid "$i")), 127.0.0.1:$(node_port "$i")"
      up=$((up + 1))
    else
      echo "node $i: stopped, 127.0.0.1:$(node_port "$i")"
    fi
  done
  echo "Apache Kafka $KAFKA_VERSION, bootstrap $(bootstrap_servers), data $data"
  [ "$up" = "$NODES" ] && return 0
  [ "$up" = 0 ] && exit 3
  exit 4
}

check_node_arg() {
  [ -n "$arg" ] || die "$cmd needs a node id"
  case "$arg" in *[!0-9]*) die "node id must be a number (got $arg)" ;; esac
  if [ "$arg" -lt 1 ] || [ "$arg" -gt "$NODES" ]; then die "node $arg is not in this $NODES-node cluster"; fi
}

do_kill_node() {
  need_data
  load_cluster || die "no cluster in $data"
  check_node_arg
  case "$signal" in KILL|TERM) ;; *) die "--signal must be KILL or TERM (got $signal)" ;; esac
  node_running "$arg" || die "node $arg is not running"
  local pid
  pid=$(node_pid "$arg")
  kill -s "$signal" "$pid"
  wait_exit "$pid" 60 || die "node $arg (pid $pid) still runs 60 s after SIG$signal"
  rm -f "$(node_dir "$arg")/pid"
  say "node $arg (pid $pid) exited after SIG$signal"
}

do_restart_node() {
  need_data
  load_cluster || die "no cluster in $data"
  check_node_arg
  do_install
  start_node "$arg"
  wait_ready 90
  say "node $arg is back; the cluster answers with every running node"
}

# The cluster a client command talks to: --bootstrap, else the one in --data. Sets NODES
# (what --bootstrap lists) and prints the bootstrap servers.
client_cluster() {
  if [ -n "$bootstrap" ]; then
    NODES=$(echo "$bootstrap" | tr ',' '\n' | grep -c .)
    return 0
  fi
  need_data
  load_cluster || die "no cluster in $data: start it first (or give --bootstrap)"
  bootstrap=$(bootstrap_servers)
}

do_create_topic() {
  [ -n "$arg" ] || die "create-topic needs a NAME"
  client_cluster
  do_install
  local rf=${replication:-$((NODES < 3 ? NODES : 3))}
  local isr=${min_insync:-$((rf >= 3 ? 2 : 1))}
  admin create-topic "$bootstrap" "$arg" "$partitions" "$rf" "$isr" ${topic_configs[@]+"${topic_configs[@]}"}
}

do_topic_config() {
  { [ -n "$arg" ] && [ -n "$extra" ]; } || die "topic-config needs a topic NAME and a KEY"
  client_cluster
  do_install
  admin topic-config "$bootstrap" "$arg" "$extra"
}

do_describe() {
  [ -n "$arg" ] || die "describe needs a topic NAME"
  client_cluster
  do_install
  admin describe "$bootstrap" "$arg"
}

do_produce() {
  [ -n "$arg" ] || die "produce needs a topic NAME"
  client_cluster
  do_install
  admin produce "$bootstrap" "$arg" ${key:+"$key"}
}

case "$cmd" in
  install) do_install ;;
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  bootstrap) need_data; load_cluster || die "no cluster in $data"; bootstrap_servers ;;
  create-topic) do_create_topic ;;
  topic-config) do_topic_config ;;
  describe) do_describe ;;
  produce) do_produce ;;
  kill-node) do_kill_node ;;
  restart-node) do_restart_node ;;
  *) usage >&2; exit 2 ;;
esac
