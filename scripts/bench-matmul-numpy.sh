#!/usr/bin/env bash
# Times numpy's f32 matmul at N³ (default 1024) as the yardstick for our gemm path: prints the
# median of several runs in GFLOP/s (2·N³ per product). Compare with
#   cargo bench -p benches --bench matmul -- f32_1024x1024x1024
# numpy is installed into .cache/venv (git-ignored) on first use. OPENBLAS_CORETYPE and
# OPENBLAS_L2_SIZE are cleared for this run only, so OpenBLAS picks its own kernel for the CPU.
# Usage: scripts/bench-matmul-numpy.sh [N] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.cache/venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import numpy" 2>/dev/null; then
    "$venv/bin/pip" install --quiet numpy
fi
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$venv/bin/python" - "${1:-1024}" "${2:-15}" <<'PY'
import statistics, sys, time
import numpy as np

n, runs = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
for _ in range(3):  # warm up: thread pool, page faults
    a @ b
times = []
for _ in range(runs):
    t = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - t)
med = statistics.median(times)
cfg = np.show_config(mode="dicts") if hasattr(np, "show_config") else {}
blas = cfg.get("Build Dependencies", {}).get("blas", {}).get("name", "?") if isinstance(cfg, dict) else "?"
print(f"numpy {np.__version__} ({blas}) f32 {n}x{n}x{n}: median {med * 1e3:.2f} ms over {runs} runs, "
      f"{2 * n**3 / med / 1e9:.1f} GFLOP/s")
PY
