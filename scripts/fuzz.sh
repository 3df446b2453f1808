#!/usr/bin/env bash
# Build and run every libFuzzer target in fuzz/ for SECONDS each (default 60), then print each
# target's executions from libFuzzer's final stats. `scripts/fuzz.sh 10` is the short (CI) mode.
# Crashes land in fuzz/artifacts/<target>/; keep each as a regression test in the normal suite
# (crates/llama/tests/fuzz_regressions.rs). Needs cargo-fuzz (`cargo install cargo-fuzz`); runs on
# stable through RUSTC_BOOTSTRAP and without a sanitizer (safe Rust: panics, aborts on huge
# allocations, timeouts and overflow checks are what we look for).
# Env: FUZZ_TARGETS="gguf dataset" to run a subset; FUZZ_JOBS (default 1) parallel workers.
set -euo pipefail
secs="${1:-60}"
cd "$(dirname "$0")/../fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz is missing (cargo install cargo-fuzz)" >&2
  exit 2
fi
export RUSTC_BOOTSTRAP=1
flags=(-s none -O)
targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
t0=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "build: $(( $(date +%s) - t0 )) s"
status=0
summary=()
par=()
if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then par=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS"); fi
for t in $targets; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="artifacts/$t/last-run.log"
  # A header that makes us hold >2.5 GiB is a bug to fix (-rss_limit_mb; -malloc_limit_mb only bites
  # under a sanitizer, but a Rust allocation that fails aborts, which libFuzzer reports as a crash).
  if cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2560 -malloc_limit_mb=2048 \
      ${par[@]+"${par[@]}"} -print_final_stats=1 >"$log" 2>&1; then
    res=ok
  else
    res="FAILED (see fuzz/$log and fuzz/artifacts/$t/)"
    status=1
  fi
  execs=$( (grep -h 'stat::number_of_executed_units' "$log" fuzz-*.log 2>/dev/null || true) | awk '{s+=$2} END {print s+0}')
  summary+=("$(printf '%-18s %10s execs in %ss  %s' "$t" "$execs" "$secs" "$res")")
  rm -f fuzz-*.log
done
printf '%s\n' "${summary[@]}"
echo "total: $(( $(date +%s) - t0 )) s"
exit $status
