#!/usr/bin/env bash
# Fuzzes everything that turns client bytes into events (fuzz/: event parsing, batch framing,
# capped gzip decoding) with cargo-fuzz and libFuzzer, each target for a bounded time, starting
# from the committed seeds. Works on a stable toolchain: cargo-fuzz needs nightly flags, which
# RUSTC_BOOTSTRAP=1 unlocks on stable (no toolchain download).
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.1
TARGETS=(event_parse batch_parse gunzip)

usage() {
  cat <<USAGE
usage: integration-tests/fuzz.sh [--seconds N] [--corpus DIR] [TARGET...]

Installs cargo-fuzz ${CARGO_FUZZ_VERSION} with cargo when missing (once; cached in ~/.cargo/bin),
builds the targets of fuzz/ (AddressSanitizer; target dir cached under ~/.cache/log-ingest/),
then runs each TARGET [${TARGETS[*]}] for N seconds [25] from fuzz/seeds/TARGET, and prints
executions, new inputs and crashes per target. A crash fails the run; its input is kept
(with the command that replays it).
  --corpus DIR   keep the grown corpus in DIR/TARGET (default: a temp folder, removed after
                 a passing run); seeds worth keeping are copied into fuzz/seeds/ by hand
env: FUZZ_SANITIZER (address; none runs faster), KEEP_TMP=1 (keep the logs of a passing run).
USAGE
}
seconds=25
corpus=
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --corpus) corpus=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${TARGETS[@]}")

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
LIB_TAG=fuzz
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fuzz.XXXXXX")
RUN_DIR=$TMP
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

cleanup() {
  local rc=$?
  if [ "$rc" -eq 0 ] && [ -z "${KEEP_TMP:-}" ]; then
    rm -rf "$TMP"
  else
    log "logs and crash inputs kept in $TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -n "$corpus" ] || corpus=$TMP/corpus
# Outside the clone, so a fresh checkout (CI) does not rebuild libFuzzer and the dependencies.
target_dir=${XDG_CACHE_HOME:-$HOME/.cache}/log-ingest/fuzz-target
export RUSTC_BOOTSTRAP=1
fuzz=(cargo fuzz)
common=(--fuzz-dir fuzz --target-dir "$target_dir" --sanitizer "${FUZZ_SANITIZER:-address}")

if [ "$("${fuzz[@]}" --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  t0=$SECONDS
  step "installing cargo-fuzz $CARGO_FUZZ_VERSION with cargo (a few minutes, once; cached in ~/.cargo/bin)"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" >&2 || die "cargo install cargo-fuzz failed"
  log "cargo-fuzz installed ($((SECONDS - t0))s)"
fi

t0=$SECONDS
step "building ${targets[*]} ($(rustc --version), target dir $target_dir)"
for target in "${targets[@]}"; do
  "${fuzz[@]}" build "${common[@]}" "$target" >>"$TMP/build.log" 2>&1 \
    || { tail -n 30 "$TMP/build.log" >&2; die "cargo fuzz build $target failed (log $TMP/build.log)"; }
done
log "built in $((SECONDS - t0))s"

stat() { # NAME LOG -> libFuzzer's final stat NAME, or 0
  sed -n "s/^stat::$1: *//p" "$2" | tail -n 1 | grep . || echo 0
}
failed=()
for target in "${targets[@]}"; do
  [ -d "fuzz/seeds/$target" ] || die "no seeds for $target in fuzz/seeds/$target"
  mkdir -p "$corpus/$target" "$TMP/artifacts/$target"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
    -artifact_prefix="$TMP/artifacts/$target/")
  case "$target" in event_parse|batch_parse) args+=(-dict=fuzz/dict/json.dict) ;; esac
  step "$target for ${seconds}s"
  log_file=$TMP/$target.log
  if "${fuzz[@]}" run "${common[@]}" "$target" "$corpus/$target" "fuzz/seeds/$target" -- "${args[@]}" \
    >"$log_file" 2>&1; then
    crashes=0
  else
    crashes=$(find "$TMP/artifacts/$target" -type f | wc -l)
    [ "$crashes" -gt 0 ] || crashes="? (no input saved)"
    failed+=("$target")
  fi
  log "$target: $(stat number_of_executed_units "$log_file") executions ($(stat average_exec_per_sec "$log_file")/s), $(stat new_units_added "$log_file") new inputs, corpus $(find "$corpus/$target" -type f | wc -l) files, crashes: $crashes"
  if [ "$crashes" != 0 ]; then
    grep -v '^#' "$log_file" | tail -n 40 >&2
    for input in "$TMP/artifacts/$target"/*; do
      [ -f "$input" ] && log "replay: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz $target $input"
    done
  fi
done
[ ${#failed[@]} -eq 0 ] || die "crashes in: ${failed[*]} (inputs and logs in $TMP)"
log "no crashes in ${targets[*]}"
