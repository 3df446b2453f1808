#!/usr/bin/env bash
# CUDA checks that need no GPU, for CI (called from .ci/run):
#   - the committed kernels/ptx/*.ptx are what kernels/*.cu compile to (pinned nvcc 13.0), and
#     every PTX assembles with ptxas for sm_80 and sm_90;
#   - the tensor crate builds with the `cuda` feature (cudarc loads the driver at run time).
# First run downloads the pinned compiler wheels (about 195 MB: nvrtc 90, nvvm 62, nvcc 37, the rest 5) into .cache/nvcc.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
T0=$(date +%s)
scripts/build-ptx.sh --check --ptxas
cargo check -p tensor --features cuda --tests
echo "ci-cuda: ok in $(( $(date +%s) - T0 )) s"
