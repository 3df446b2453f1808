#!/usr/bin/env bash
# Build every libFuzzer target in fuzz/ once, run each for SECONDS (default 60), then print per
# target libFuzzer's final executions and coverage (`cov:` edges, `ft:` features, corpus size).
# `scripts/fuzz.sh 10` is the short mode CI runs (.ci/run). Exits non-zero if any target crashed,
# hit the timeout or the memory limit; the input lands in fuzz/artifacts/<target>/ and the end of
# its log is printed. Keep each such input as a regression test in the normal suite
# (crates/llama/tests/fuzz_regressions.rs).
# Needs cargo-fuzz (`cargo install cargo-fuzz --version 0.13.2 --locked`); runs on stable through
# RUSTC_BOOTSTRAP and without a sanitizer (safe Rust: panics, aborts on huge allocations, timeouts
# and overflow checks are what we look for). No `-O`: cargo-fuzz's default is already a release
# build, and `-O` would turn off the debug assertions and overflow checks.
# Seeds are committed (fuzz/seeds/<target>); the corpus libFuzzer grows (fuzz/corpus/<target>) and
# the artifacts are git-ignored.
# Env: FUZZ_TARGETS="gguf dataset" to run a subset; FUZZ_JOBS (default 1) parallel workers;
# CARGO_TARGET_DIR as usual (default fuzz/target).
set -euo pipefail
secs="${1:-60}"
cd "$(dirname "$0")/../fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz is missing (cargo install cargo-fuzz --version 0.13.2 --locked)" >&2
  exit 2
fi
export RUSTC_BOOTSTRAP=1
# Build-time settings (opt-level 1) are in fuzz/Cargo.toml.
flags=(-s none)
targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
t0=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "build: $(($(date +%s) - t0)) s"
status=0
summary=()
par=()
if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then par=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS"); fi
for t in $targets; do
  mkdir -p "corpus/$t" "artifacts/$t"
  # Beside, not inside, artifacts/$t/: cargo-fuzz reports any new file there as the crashing input.
  log="artifacts/$t.log"
  rm -f fuzz-*.log
  # A header that makes us hold >2.5 GiB is a bug to fix (-rss_limit_mb; -malloc_limit_mb only bites
  # under a sanitizer, but a Rust allocation that fails aborts, which libFuzzer reports as a crash).
  if cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2560 -malloc_limit_mb=2048 \
    ${par[@]+"${par[@]}"} -print_final_stats=1 >"$log" 2>&1; then
    res=ok
  else
    res="FAILED (log fuzz/$log; input in fuzz/artifacts/$t/)"
    status=1
  fi
  logs=("$log")
  for f in fuzz-*.log; do [ -e "$f" ] && logs+=("$f"); done
  execs=$( (grep -h 'stat::number_of_executed_units' "${logs[@]}" || true) | awk '{s+=$2} END {print s+0}')
  # The last status line of the run (DONE, or the last pulse/NEW before a crash).
  last=$( (grep -h -E '^#[0-9]+.* cov: ' "${logs[@]}" || true) | tail -n 1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  summary+=("$(printf '%-16s %10s execs in %3ss  cov %5s  ft %6s  corpus %5s  %s' \
    "$t" "$execs" "$secs" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$res")")
  if [ "$res" != ok ]; then
    # The panic or libFuzzer's error report (cargo-fuzz then prints the input as a byte list;
    # long lines are cut).
    echo "== $t failed; end of its log:" >&2
    grep -h -v -E '^\s+at |^ +[0-9]+: ' "${logs[@]}" | grep -h -A 8 -E 'panicked at|==[0-9]+== ERROR|^Failing input' |
      cut -c1-300 | tail -n 40 >&2 || true
    ls -l "artifacts/$t" >&2 || true
  fi
  if [ ${#logs[@]} -gt 1 ]; then cat "${logs[@]:1}" >>"$log"; fi
  rm -f fuzz-*.log
done
printf '%s\n' "${summary[@]}"
echo "total: $(($(date +%s) - t0)) s"
exit $status
