#!/usr/bin/env bash
# Runs each fuzz target for a bounded time and fails on any crash, leak, timeout or out-of-memory
# (libFuzzer exits non-zero and leaves the input in build/fuzz/artifacts/). Used by `make fuzz`.
#
#   tests/fuzz/run.sh BIN_DIR SECONDS [TARGET...]
#
# Each target starts from its committed seeds (tests/fuzz/corpus/<target>, recorded real traffic)
# plus what earlier runs here found (build/fuzz/corpus/<target>, never committed). One target at
# a time, one job: the machines have two cores.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$1"
seconds="$2"
shift 2
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then targets=(fuzz_frame fuzz_rings fuzz_value fuzz_buffer); fi
work="$bin/../.."  # build/fuzz
work="$(cd "$work" && pwd)"
mkdir -p "$work/artifacts"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:allocator_may_return_null=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
passed=0
failed=0
for target in "${targets[@]}"; do
  corpus="$work/corpus/$target"
  seeds="$here/corpus/$target"
  mkdir -p "$corpus" "$seeds"
  log="$work/$target.log"
  echo "== $target: ${seconds}s"
  "$bin/$target" "$corpus" "$seeds" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
    -max_len=65536 -print_final_stats=1 -print_funcs=0 \
    -artifact_prefix="$work/artifacts/$target-" >"$log" 2>&1
  status=$?
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" | tr '\n' ' '
  grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1
  if [ $status -eq 0 ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "$target FAILED (exit $status); the end of $log:"
    tail -60 "$log"
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ $failed -eq 0 ]
