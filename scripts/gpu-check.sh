#!/usr/bin/env bash
# The GPU check, one command on a machine with an NVIDIA GPU (driver >= 580, PTX ISA 9.0):
#   1. every CUDA kernel against its CPU reference (crates/tensor/tests/cuda_kernels.rs),
#   1b. the tensor ops on resident CUDA tensors (Storage::Cuda, device dispatch, cuBLAS matmul)
#      against the same references, plus a model-like chain CPU vs CUDA
#      (crates/tensor/tests/cuda_ops.rs),
#   2. the paged optimizer state in CUDA unified memory: bytes intact through page-ins and
#      page-outs under a small budget, overlapped prefetch, the budget capped by free device memory
#      (crates/paged-alloc/tests/cuda_managed.rs; seconds),
#   3. the kernel benchmark table: time, GB/s and TFLOP/s against the measured device-to-device
#      copy bandwidth and cuBLAS's bf16 GEMM rate (crates/tensor/src/cuda/bench.rs).
# Budget: under 8 minutes on an H200 (the build is most of it where cargo runs there).
#
# Where the GPU machine has no Rust toolchain (this workplace's CUDA image has none), build the
# test binaries on a CPU machine and carry them:
#   scripts/gpu-check.sh --build            # here: release test binaries -> .cache/gpu-check/
#   scripts/gpu-check.sh                    # there: runs the binaries in .cache/gpu-check/ if no cargo
# With cargo on the GPU machine, plain `scripts/gpu-check.sh` builds and runs in one go.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
T0=$(date +%s)
BIN_DIR=".cache/gpu-check"
BIN="$BIN_DIR/cuda_kernels"
OPS_BIN="$BIN_DIR/cuda_ops"
PAGED_BIN="$BIN_DIR/cuda_managed"

# build_test PACKAGE TEST: the release test binary of `cargo test -p PACKAGE --features cuda
# --test TEST`, copied to $BIN_DIR/TEST.
build_test() {
  local pkg=$1 test=$2 out
  echo "== build: cargo test --release -p $pkg --features cuda --test $test --no-run"
  out=$(cargo test --release -p "$pkg" --features cuda --test "$test" --no-run --message-format=json \
        | TEST="$test" python3 -c 'import sys, json, os
for l in sys.stdin:
    try: m = json.loads(l)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == os.environ["TEST"]:
        print(m["executable"])' | tail -1)
  [[ -n "$out" ]] || { echo "gpu-check: build produced no $test test binary" >&2; exit 1; }
  mkdir -p "$BIN_DIR"
  cp "$out" "$BIN_DIR/$test"
  echo "gpu-check: test binary at $BIN_DIR/$test ($(du -h "$BIN_DIR/$test" | cut -f1))"
}

build() {
  build_test tensor cuda_kernels
  build_test tensor cuda_ops
  build_test paged-alloc cuda_managed
}

if [[ "${1:-}" == "--build" ]]; then
  build
  exit 0
fi

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || echo "gpu-check: nvidia-smi not found"

# cuBLAS for the matrix ceiling: the system's, else the one in Python's nvidia-cublas wheel.
if ! ldconfig -p 2>/dev/null | grep -q 'libcublas\.so'; then
  CUBLAS_DIR=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null || true)
  [[ -n "$CUBLAS_DIR" && -d "$CUBLAS_DIR" ]] && export LD_LIBRARY_PATH="$CUBLAS_DIR:${LD_LIBRARY_PATH:-}"
fi

if command -v cargo >/dev/null 2>&1; then
  build
elif [[ ! -x "$BIN" || ! -x "$OPS_BIN" || ! -x "$PAGED_BIN" ]]; then
  echo "gpu-check: no cargo here and no prebuilt $BIN, $OPS_BIN and $PAGED_BIN: run 'scripts/gpu-check.sh --build' on a CPU machine and carry $BIN_DIR" >&2
  exit 1
fi

# run_gpu_tests TITLE WHAT BIN [ARGS..]: every test of BIN, ignored (GPU) ones included, one
# thread; fails when they fail or when they report that no CUDA driver was found.
LOG=$(mktemp)
run_gpu_tests() {
  local title=$1 what=$2 bin=$3 status
  shift 3
  echo "== $title"
  set +e
  "$bin" --include-ignored "$@" --test-threads=1 --nocapture 2>&1 | tee "$LOG"
  status=${PIPESTATUS[0]}
  set -e
  if grep -q "SKIPPED: no CUDA driver" "$LOG"; then
    echo "gpu-check: FAILED: the $what could not find the CUDA driver (libcuda.so.1) on this machine" >&2
    exit 1
  fi
  [[ $status == 0 ]] || { echo "gpu-check: FAILED: $what" >&2; exit 1; }
}

run_gpu_tests "kernels vs CPU references" "kernel tests" "$BIN" --skip bench_kernels
run_gpu_tests "ops on CUDA tensors vs CPU references" "op tests on CUDA" "$OPS_BIN"
run_gpu_tests "paged optimizer state in CUDA unified memory" "paged-alloc CUDA tests" "$PAGED_BIN"

echo "== kernel benchmarks"
"$BIN" --ignored bench_kernels --nocapture --test-threads=1 2>&1 | grep -v '^running\|^test result\|^$' || {
  echo "gpu-check: FAILED: benchmarks" >&2
  exit 1
}

echo "== 7B QLoRA step"
echo "TODO: NOT MEASURED YET: 7B QLoRA step time and peak memory (needs the trainer wired to CUDA)"
echo "gpu-check: done in $(( $(date +%s) - T0 )) s"
