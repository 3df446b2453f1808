#!/usr/bin/env bash
# NF4 quantize (with double quant) and dequantize-to-f32 throughput, ours vs bitsandbytes 0.50.2's
# CPU backend, on a 4096×4096 f32 randn tensor, in one run on the same machine:
#   bnb:  bitsandbytes.functional.quantize_4bit(A, blocksize=64, compress_statistics=True,
#         quant_type="nf4") and dequantize_4bit(qA, state) -> f32; torch threads = 2; median of
#         RUNS timed runs after 2 warm-ups.
#   ours: cargo bench -p benches --bench nf4 (nf4_quantize_dq/elements/4096x4096 and
#         nf4_dequantize_f32/elements/4096x4096, criterion, 20 samples); criterion's median.
# Prints elements/s for both and ours/bnb (targets: quantize ≥ 20×, dequantize ≥ 2×), with the load
# average before and after. Run it on a quiet machine (uptime's 1-minute load < ~2.5 on 2 cores).
# The reference stack comes from scripts/reference-stack.sh (installed on first use, ~5.7 GB).
# Usage: scripts/bench-vs-bnb.sh [RUNS]      (env CARGO_TARGET_DIR is honoured)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-7}
scripts/reference-stack.sh >&2
py=.cache/refstack/bin/python
target=${CARGO_TARGET_DIR:-target}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

bnb=$(OMP_NUM_THREADS=2 "$py" - "$runs" 2>/dev/null <<'PY'
import statistics, sys, time
import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F

torch.set_num_threads(2)
runs = int(sys.argv[1])
A = torch.randn(4096, 4096, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
n = A.numel()

def quant():
    return F.quantize_4bit(A, blocksize=64, compress_statistics=True, quant_type="nf4")

def timed(f):
    for _ in range(2):  # warm up
        f()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)

q, st = quant()
assert st.nested and st.quant_type == "nf4" and st.blocksize == 64
d = F.dequantize_4bit(q, st)
assert d.dtype == torch.float32 and d.shape == A.shape
tq = timed(quant)
td = timed(lambda: F.dequantize_4bit(q, st))
print(f"{n / tq:.6e} {n / td:.6e} {tq:.6e} {td:.6e} torch={torch.__version__} bnb={bnb.__version__}")
PY
)
read -r bnb_q bnb_d bnb_tq bnb_td bnb_ver <<<"$bnb"

cargo bench -p benches --bench nf4 -- 'nf4_(quantize_dq|dequantize_f32)/elements/4096x4096' >&2
median_ns() { # criterion's median time per iteration, ns
    "$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["median"]["point_estimate"])' \
        "$target/criterion/$1/elements/4096x4096/new/estimates.json"
}
ours_tq=$(median_ns nf4_quantize_dq)
ours_td=$(median_ns nf4_dequantize_f32)
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

"$py" - "$bnb_q" "$bnb_d" "$bnb_tq" "$bnb_td" "$ours_tq" "$ours_td" "$bnb_ver" <<'PY'
import sys
bq, bd, btq, btd, otq, otd = map(float, sys.argv[1:7])
n = 4096 * 4096
oq, od = n / (otq * 1e-9), n / (otd * 1e-9)
print(f"4096x4096 f32, NF4 blocksize 64, double quant (nested 256); bnb: {' '.join(sys.argv[7:])}, 2 threads")
print(f"{'':24}{'bnb elem/s':>14}{'ours elem/s':>14}{'bnb ms':>10}{'ours ms':>10}{'ours/bnb':>10}{'target':>8}")
for what, b, o, bt, ot, tgt in (("quantize (double quant)", bq, oq, btq * 1e3, otq * 1e-6, 20),
                                ("dequantize to f32", bd, od, btd * 1e3, otd * 1e-6, 2)):
    r = o / b
    print(f"{what:24}{b:14.3e}{o:14.3e}{bt:10.2f}{ot:10.2f}{r:9.1f}x{'>=' + str(tgt) + 'x':>8} "
          f"{'met' if r >= tgt else 'NOT met'}")
PY
