#!/usr/bin/env bash
# The GPU check, one command on a machine with an NVIDIA GPU (driver >= 580, PTX ISA 9.0):
#   1. every CUDA kernel against its CPU reference (crates/tensor/tests/cuda_kernels.rs),
#   1b. the tensor ops on resident CUDA tensors (Storage::Cuda, device dispatch, cuBLAS matmul)
#      against the same references, plus a model-like chain CPU vs CUDA
#      (crates/tensor/tests/cuda_ops.rs),
#   1c. NF4 weights resident on CUDA: dequantization bit for bit, the NF4 linear (fused bf16 kernel,
#      dequantize + cuBLAS, slab by slab) forward and backward against the CPU
#      (crates/nf4/tests/cuda_nf4.rs; seconds),
#   2. the paged optimizer state in CUDA unified memory: bytes intact through page-ins and
#      page-outs under a small budget, overlapped prefetch, the budget capped by free device memory
#      (crates/paged-alloc/tests/cuda_managed.rs; seconds),
#   3. the kernel benchmark table: time, GB/s and TFLOP/s against the measured device-to-device
#      copy bandwidth and cuBLAS's bf16 GEMM rate (crates/tensor/src/cuda/bench.rs),
#   3b. the optimizers on CUDA tensors bit for bit against the host ones, checkpoints resumed
#      across devices, gradient norm and clipping (crates/trainer/tests/cuda_optim.rs; seconds),
#   4. the trainer on the GPU: the tiny reference model trained on CUDA against the CPU
#      (crates/trainer/tests/cuda_train.rs), then QLoRA steps on a Llama-2-7B-shaped model (random
#      weights, built layer by layer) with `trainer bench-step --device cuda`: tokens/s, MFU and
#      peak device memory, in bf16 and f32 compute.
# Budget: under 8 minutes on an H200 (the build is most of it where cargo runs there).
#
# Where the GPU machine has no Rust toolchain (this workplace's CUDA image has none), build the
# test binaries on a CPU machine and carry them:
#   scripts/gpu-check.sh --build            # here: release test binaries -> .cache/gpu-check/
#   scripts/gpu-check.sh                    # there: runs the binaries in .cache/gpu-check/ if no cargo
# With cargo on the GPU machine, plain `scripts/gpu-check.sh` builds and runs in one go.
#
# Dry run without a GPU: `scripts/gpu-check.sh --emulate` builds with the CUDA emulator
# (feature cuda-emu, binaries in .cache/gpu-check-emu) and runs the same steps with
# QLORA_CUDA_EMULATOR=1: every test, the trainer's RESULT lines and the table, on a 2-layer
# model instead of the 7B shape; it skips what the emulator cannot do (managed memory, timing).
# It checks the script and the whole CUDA path, not the GPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
T0=$(date +%s)
EMU=0
FEATURE=cuda
BIN_DIR=".cache/gpu-check"
if [[ "${1:-}" == "--emulate" ]]; then
  EMU=1
  FEATURE=cuda-emu
  BIN_DIR=".cache/gpu-check-emu"
  export QLORA_CUDA_EMULATOR=1
  shift
fi
BIN="$BIN_DIR/cuda_kernels"
OPS_BIN="$BIN_DIR/cuda_ops"
PAGED_BIN="$BIN_DIR/cuda_managed"
NF4_BIN="$BIN_DIR/cuda_nf4"
TRAIN_BIN="$BIN_DIR/cuda_train"
OPTIM_BIN="$BIN_DIR/cuda_optim"
TRAINER="$BIN_DIR/trainer"

# build_test PACKAGE TEST: the release test binary of `cargo test -p PACKAGE --features $FEATURE
# --test TEST`, copied to $BIN_DIR/TEST.
build_test() {
  local pkg=$1 test=$2 out feature=$FEATURE
  [[ $pkg == paged-alloc ]] && feature=cuda  # managed memory has no emulator
  echo "== build: cargo test --release -p $pkg --features $feature --test $test --no-run"
  out=$(cargo test --release -p "$pkg" --features "$feature" --test "$test" --no-run --message-format=json \
        | TEST="$test" python3 -c 'import sys, json, os
for l in sys.stdin:
    try: m = json.loads(l)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == os.environ["TEST"]:
        print(m["executable"])' | tail -1)
  [[ -n "$out" ]] || { echo "gpu-check: build produced no $test test binary" >&2; exit 1; }
  mkdir -p "$BIN_DIR"
  cp "$out" "$BIN_DIR/$test"
  # Without debug info the seven binaries are ~40 MB (356 MB with), small enough to carry.
  command -v strip >/dev/null && strip "$BIN_DIR/$test"
  echo "gpu-check: test binary at $BIN_DIR/$test ($(du -h "$BIN_DIR/$test" | cut -f1))"
}

build() {
  build_test tensor cuda_kernels
  build_test tensor cuda_ops
  build_test nf4 cuda_nf4
  build_test paged-alloc cuda_managed
  build_test trainer cuda_optim
  build_test trainer cuda_train
  echo "== build: cargo build --release -p trainer --features $FEATURE"
  cargo build --release -p trainer --features "$FEATURE"
  mkdir -p "$BIN_DIR"
  cp "${CARGO_TARGET_DIR:-target}/release/trainer" "$TRAINER"
  command -v strip >/dev/null && strip "$TRAINER"
  echo "gpu-check: binaries in $BIN_DIR: $(du -sh "$BIN_DIR" | cut -f1) (carry it to a GPU machine without cargo)"
}

if [[ "${1:-}" == "--build" ]]; then
  build
  exit 0
fi

echo "== device"
if [[ $EMU == 1 ]]; then
  echo "the CUDA emulator (QLORA_CUDA_EMULATOR=1): a dry run, no GPU figures"
else
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || echo "gpu-check: nvidia-smi not found"
fi

# cuBLAS for the matrix ceiling: the system's, else the one in Python's nvidia-cublas wheel.
if ! ldconfig -p 2>/dev/null | grep -q 'libcublas\.so'; then
  CUBLAS_DIR=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null || true)
  [[ -n "$CUBLAS_DIR" && -d "$CUBLAS_DIR" ]] && export LD_LIBRARY_PATH="$CUBLAS_DIR:${LD_LIBRARY_PATH:-}"
fi

if command -v cargo >/dev/null 2>&1; then
  build
else
  for b in "$BIN" "$OPS_BIN" "$NF4_BIN" "$PAGED_BIN" "$OPTIM_BIN" "$TRAIN_BIN" "$TRAINER"; do
    [[ -x "$b" ]] || {
      echo "gpu-check: no cargo here and no prebuilt $b: run 'scripts/gpu-check.sh --build' on a CPU machine and carry $BIN_DIR" >&2
      exit 1
    }
  done
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
run_gpu_tests "NF4 weights on CUDA vs the CPU" "NF4 CUDA tests" "$NF4_BIN"
if [[ $EMU == 1 ]]; then
  echo "== paged optimizer state in CUDA unified memory: skipped (managed memory is not emulated)"
  echo "== kernel benchmarks: skipped (the emulator has no timing)"
else
  run_gpu_tests "paged optimizer state in CUDA unified memory" "paged-alloc CUDA tests" "$PAGED_BIN"

  echo "== kernel benchmarks"
  "$BIN" --ignored bench_kernels --nocapture --test-threads=1 2>&1 | grep -v '^running\|^test result\|^$' || {
    echo "gpu-check: FAILED: benchmarks" >&2
    exit 1
  }
fi

run_gpu_tests "optimizers on CUDA tensors vs the host optimizers" "optimizer CUDA tests" "$OPTIM_BIN"
run_gpu_tests "training on CUDA vs the CPU (tiny reference model)" "trainer CUDA tests" "$TRAIN_BIN"

# step7b DTYPE [NF4_LINEAR]: QLoRA steps on the 7B shape (LoRA r 16 on all projections, checkpointing,
# AdamW on the device), its RESULT line kept for the table.
STEPS=$(mktemp)
SHAPE=(--preset llama2-7b --seq-len 512 --batch-size "${BATCH:-4}" --steps 3 --warmup-steps 1)
TITLE="Llama-2-7B shape, seq 512 x batch ${BATCH:-4}"
if [[ $EMU == 1 ]]; then
  SHAPE=(--preset llama2-7b --hidden 256 --layers 2 --heads 4 --kv-heads 4 --intermediate 512 --vocab 1000
    --seq-len 64 --batch-size 1 --steps 1 --warmup-steps 0)
  TITLE="emulator dry run: 2 layers, hidden 256, seq 64 x batch 1"
fi
step7b() {
  local dtype=$1 nf4=${2:-fused} line
  echo "== 7B QLoRA step ($dtype compute, NF4 linear: $nf4)"
  set +e
  line=$(QLORA_NF4_LINEAR=$nf4 "$TRAINER" bench-step "${SHAPE[@]}" --device cuda --compute-dtype "$dtype" \
    --lora-r 16 --gradient-checkpointing true --optimizer adamw --quiet | grep '^RESULT')
  local status=$?
  set -e
  [[ $status == 0 && -n "$line" ]] || { echo "gpu-check: FAILED: 7B step in $dtype" >&2; exit 1; }
  echo "$line"
  echo "$dtype/$nf4 $line" >> "$STEPS"
}
step7b bf16 fused
step7b bf16 cublas
step7b f32

echo "== training step ($TITLE, r 16, checkpointing)"
printf '%-14s %12s %10s %8s %16s %16s\n' compute tokens/s s/step MFU "peak tensors" "peak pool"
python3 - "$STEPS" <<'PY'
import sys
for l in open(sys.argv[1]):
    dtype, rest = l.split(' ', 1)
    kv = dict(x.split('=') for x in rest.split()[2:])
    mfu = float(kv.get('mfu', 'nan')) * 100
    print(f"{dtype:<14} {float(kv['tokens_per_s']):>12.1f} {float(kv['step_s']):>10.3f} {mfu:>7.1f}% "
          f"{float(kv.get('device_peak_mib', 'nan'))/1024:>12.2f} GiB {float(kv.get('device_pool_peak_mib', 'nan'))/1024:>12.2f} GiB")
PY
echo "gpu-check: done in $(( $(date +%s) - T0 )) s"
