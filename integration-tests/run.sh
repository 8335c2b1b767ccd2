#!/usr/bin/env bash
# The test command (CI runs it through .ci/run): installs and starts what the tests need,
# then lint, unit and integration tests, Prometheus rule tests, compose checks and the
# end-to-end scripts, stopping at the first failure and always stopping what it started.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: ./integration-tests/run.sh [-h]

Ensures PostgreSQL, Redis, Prometheus/promtool and Apache Kafka's jars (installing and
starting what is missing), starts one shared Apache Kafka node on free ports (exported as
KAFKA_BROKERS for the Rust tests; tests that restart or kill brokers start their own one-
or three-node clusters through scripts/kafka.sh), then runs, each after a "==> step" line:
  cargo fmt --all --check
  cargo clippy --workspace --all-targets -- -D warnings
  cargo nextest run --workspace --no-fail-fast   (cargo test --workspace without nextest)
  cargo build --workspace --bins                 (debug binaries for the scripts, reusing the test build)
  promtool check config / check rules / test rules
  shellcheck, integration-tests/check-compose.py, docker compose config -q (or docker-compose v1)
  integration-tests/test-backpressure.sh         (when present)
  integration-tests/test-scenario.sh             (./load-test.sh --scenario stall --report, bounded; the report in headless Chromium)
  integration-tests/test-dashboards.sh
  integration-tests/test-otlp.sh                 (the OpenTelemetry Python and JavaScript SDKs → /v1/logs)
  integration-tests/schemathesis.sh --examples 100 (/openapi.json against the gateway, every check)
  integration-tests/fuzz.sh --seconds 25           (each fuzz target of fuzz/, from its seeds)
  integration-tests/faults.sh --runs 6             (the fault matrix's first six faults)
env: TEST_DATABASE_ADMIN_URL, REDIS_URL, KEEP_TMP=1 (keep the temp folder).
USAGE
}
case "${1:-}" in -h|--help) usage; exit 0 ;; "") ;; *) usage >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
LIB_TAG=run
TMP=$(mktemp -d "${TMPDIR:-/tmp}/integration-tests.XXXXXX")
RUN_DIR=$TMP/run
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

started=$SECONDS
current="setup"
NEXTEST_VERSION=0.9.151

cleanup() {
  local rc=$?
  set +e
  "$ROOT/scripts/kafka.sh" stop --data "$TMP/kafka" >/dev/null 2>&1
  stop_started_services
  if [ "$rc" -eq 0 ] && [ -z "${KEEP_TMP:-}" ]; then rm -rf "$TMP"; else echo "[run] temp folder kept: $TMP" >&2; fi
  local total=$((SECONDS - started))
  if [ "$rc" -eq 0 ]; then
    printf '==> all steps passed in %dm%02ds\n' $((total / 60)) $((total % 60))
  else
    printf '==> FAILED at step "%s" (exit %d) after %dm%02ds\n' "$current" "$rc" $((total / 60)) $((total % 60))
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# phase NAME COMMAND...: one "==> step" line, the command, its duration; the first failure ends the run.
phase() {
  current=$1
  shift
  local t0=$SECONDS
  printf '\n==> %s\n' "$current"
  "$@"
  printf '==> %s: ok (%ds)\n' "$current" $((SECONDS - t0))
}

printf '==> prerequisites\n'
ensure_build_deps
ensure_rust
cargo fmt --version >/dev/null 2>&1 || { command -v rustup >/dev/null && rustup component add rustfmt; } \
  || die "rustfmt is missing (rustup component add rustfmt)"
cargo clippy --version >/dev/null 2>&1 || { command -v rustup >/dev/null && rustup component add clippy; } \
  || die "clippy is missing (rustup component add clippy)"
ensure_postgres
ensure_redis
ensure_prometheus
command -v shellcheck >/dev/null || apt_install shellcheck
python3 -c 'import yaml' 2>/dev/null || apt_install python3-yaml
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml \
  || die "PyYAML is missing for python3 (pip install pyyaml)"
t0=$SECONDS
"$ROOT/scripts/kafka.sh" install
log "Apache Kafka's jars ready ($((SECONDS - t0))s)"

t0=$SECONDS
KAFKA_BROKERS=$("$ROOT/scripts/kafka.sh" start --data "$TMP/kafka" | tail -n 1)
export KAFKA_BROKERS
log "shared Apache Kafka node for the tests: KAFKA_BROKERS=$KAFKA_BROKERS (started in $((SECONDS - t0))s)"

phase "cargo fmt --all --check" cargo fmt --all --check
phase "cargo clippy --workspace --all-targets -- -D warnings" \
  cargo clippy --workspace --all-targets -- -D warnings
if ! cargo nextest --version >/dev/null 2>&1; then
  t0=$SECONDS
  step "installing cargo-nextest $NEXTEST_VERSION with cargo (a few minutes, once; cached in ~/.cargo/bin)"
  cargo install cargo-nextest --locked --version "$NEXTEST_VERSION" >&2 \
    || warn "cargo install cargo-nextest failed: the tests run with cargo test instead"
  log "cargo-nextest step took $((SECONDS - t0))s"
fi
if cargo nextest --version >/dev/null 2>&1; then
  phase "cargo nextest run --workspace --no-fail-fast" cargo nextest run --workspace --no-fail-fast
else
  phase "cargo test --workspace" cargo test --workspace
fi
# Debug binaries share the dependencies the tests just built: no third profile.
phase "cargo build --workspace --bins" cargo build --workspace --bins
export BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/debug"

phase "promtool check config prometheus.yml" promtool check config prometheus.yml
phase "promtool check config prometheus/prometheus.docker.yml" \
  promtool check config prometheus/prometheus.docker.yml
phase "promtool check rules prometheus/alerts.yml" promtool check rules prometheus/alerts.yml
phase "promtool test rules prometheus/alerts.test.yml" promtool test rules prometheus/alerts.test.yml

scripts=(setup.sh load-test.sh scripts/lib.sh scripts/kafka.sh scripts/report-screenshot.sh bench/*.sh .ci/run integration-tests/*.sh)
phase "shellcheck ${scripts[*]}" shellcheck -x "${scripts[@]}"
phase "integration-tests/check-compose.py" python3 integration-tests/check-compose.py
# The compose file must also pass Compose's own schema, which needs no Docker engine.
if docker compose version >/dev/null 2>&1; then
  phase "docker compose config -q" docker compose config -q
else
  command -v docker-compose >/dev/null || apt_install docker-compose
  phase "docker-compose config -q" docker-compose config -q
fi

if [ -f integration-tests/test-backpressure.sh ]; then
  phase "integration-tests/test-backpressure.sh" bash integration-tests/test-backpressure.sh
else
  printf '\n==> integration-tests/test-backpressure.sh: not written yet, skipped\n'
fi
# The staged scenario a person runs after ./setup.sh, bounded (about 2 minutes): live lines,
# the JSON's story (healthy -> degraded -> critical -> healthy), the HTML report in Chromium.
phase "integration-tests/test-scenario.sh" integration-tests/test-scenario.sh
phase "integration-tests/test-dashboards.sh" integration-tests/test-dashboards.sh
phase "integration-tests/test-otlp.sh" integration-tests/test-otlp.sh
# The spec and the gateway must agree: a bounded schemathesis run (about 30 s), random seed.
phase "integration-tests/schemathesis.sh --examples 100" integration-tests/schemathesis.sh --examples 100
# Each fuzz target briefly from its seeds (about 90 s once built; the long runs are local).
phase "integration-tests/fuzz.sh --seconds 25" integration-tests/fuzz.sh --seconds 25
# The fault matrix's short form: each fault once, a random seed (printed, to reproduce).
phase "integration-tests/faults.sh --runs 6" integration-tests/faults.sh --runs 6
current="done"
