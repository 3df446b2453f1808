#!/usr/bin/env bash
# Compiles every kernels/*.cu to PTX for sm_80 and sm_90 into kernels/ptx/<stem>.sm_XX.ptx.
# The PTX files are committed and embedded into the binary (`include_str!` in
# crates/tensor/src/cuda/ptx.rs), so building the Rust crates never needs nvcc, and a GPU machine
# needs only the driver. No GPU is needed here.
#
# The compiler comes from pip, PINNED to CUDA 13.0 (a 580 driver loads PTX ISA 9.0; parts from a
# newer 13.x emit a newer ISA that it rejects), installed once into the git-ignored .cache/nvcc.
#
# Usage:
#   scripts/build-ptx.sh            regenerate kernels/ptx/
#   scripts/build-ptx.sh --check    regenerate into a temp dir; fail if the committed PTX differs
#   scripts/build-ptx.sh --ptxas    also assemble every PTX with ptxas (sm_90 and sm_80) to prove
#                                   it is valid machine-level code (flags combine: --check --ptxas)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CHECK=0
PTXAS=0
for a in "$@"; do
  case "$a" in
    --check) CHECK=1 ;;
    --ptxas) PTXAS=1 ;;
    -h|--help) sed -n 2,15p "$0"; exit 0 ;;
    *) echo "build-ptx: unknown argument '$a'" >&2; exit 2 ;;
  esac
done

NV_DIR="$ROOT/.cache/nvcc"
NV_TOP="$NV_DIR/nvidia/cu13"
PINS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cuda-runtime==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-cccl==13.0.85
)
STAMP="$NV_DIR/.pins"
if [[ ! -x "$NV_TOP/bin/nvcc" || "$(cat "$STAMP" 2>/dev/null)" != "${PINS[*]}" ]]; then
  echo "build-ptx: installing the pinned CUDA 13.0 compiler into .cache/nvcc (about 490 MB unpacked)"
  rm -rf "$NV_DIR"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$NV_DIR" "${PINS[@]}"
  echo "${PINS[*]}" > "$STAMP"
fi

# nvcc.profile in the wheel points nvcc at ../nvvm/bin (cicc) and ../include; PATH covers ptxas.
export PATH="$NV_TOP/bin:$NV_TOP/nvvm/bin:$PATH"
NVCC="$NV_TOP/bin/nvcc"
"$NVCC" --version | grep -q "release 13.0" || { echo "build-ptx: nvcc is not 13.0" >&2; exit 1; }

OUT="kernels/ptx"
if [[ $CHECK == 1 ]]; then
  OUT="$(mktemp -d)"
  trap 'rm -rf "$OUT"' EXIT
fi
mkdir -p "$OUT"

ARCHS=(80 90)
# Deterministic output: relative source paths, no -lineinfo/-G (they embed paths), no host
# compiler output. IEEE division and sqrt stay on (no --use_fast_math): the NF4 and AdamW kernels
# must match the CPU bit for bit and use explicit *_rn intrinsics where contraction would differ.
FLAGS=(-ptx -std=c++17 -O3 -Ikernels --extended-lambda)

jobs=()
for cu in kernels/*.cu; do
  stem="$(basename "$cu" .cu)"
  for a in "${ARCHS[@]}"; do
    jobs+=("$cu $stem $a")
  done
done

export NVCC OUT
export FLAGS_STR="${FLAGS[*]}"
# Two at a time: the CI and developer machines have two cores.
printf '%s\n' "${jobs[@]}" | xargs -P 2 -L 1 bash -c 'read -ra FLAGS <<< "$FLAGS_STR"; cu=$0; stem=$1; a=$2; "$NVCC" "${FLAGS[@]}" -arch="compute_$a" "$cu" -o "$OUT/$stem.sm_$a.ptx"'

n=$(ls "$OUT"/*.ptx | wc -l)
echo "build-ptx: $n PTX files, $(du -ch "$OUT"/*.ptx | tail -1 | cut -f1) in $OUT"

if [[ $CHECK == 1 ]]; then
  stale=0
  for f in "$OUT"/*.ptx; do
    b="$(basename "$f")"
    if ! cmp -s "$f" "kernels/ptx/$b"; then
      echo "build-ptx --check: kernels/ptx/$b is stale or missing (run scripts/build-ptx.sh)" >&2
      stale=1
    fi
  done
  for f in kernels/ptx/*.ptx; do
    [[ -e "$f" ]] || continue
    if [[ ! -e "$OUT/$(basename "$f")" ]]; then
      echo "build-ptx --check: kernels/ptx/$(basename "$f") has no source in kernels/" >&2
      stale=1
    fi
  done
  [[ $stale == 0 ]] || exit 1
  echo "build-ptx --check: committed PTX is up to date"
fi

if [[ $PTXAS == 1 ]]; then
  for f in "$OUT"/*.ptx; do
    case "$f" in
      *.sm_90.ptx) arch=sm_90 ;;
      *.sm_80.ptx) arch=sm_80 ;;
      *) continue ;;
    esac
    ptxas -arch="$arch" "$f" -o /dev/null || { echo "build-ptx --ptxas: $f failed" >&2; exit 1; }
  done
  echo "build-ptx --ptxas: every PTX assembles (sm_80, sm_90)"
fi
