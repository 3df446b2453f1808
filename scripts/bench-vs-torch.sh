#!/usr/bin/env bash
# One QLoRA training step, ours vs PyTorch + transformers + PEFT + bitsandbytes, on the same CPU in
# one invocation: a randomly initialised Llama of PRESET shape (default bench-512: hidden 512,
# 8 layers, 8 heads, intermediate 1376, vocab 32000), NF4 + double-quant base linears, fp32
# compute, LoRA r 8 alpha 16 dropout 0 on all seven projections, AdamW, clip 0.3, seq 256 x
# batch 1, 2 threads each; both without and with gradient checkpointing.
#   ours:  trainer bench-step   (crates/trainer/src/bench_step.rs)
#   torch: scripts/reference/qlora_step.py
# Prints a table of tokens/s and peak RSS for both and ours/torch (goals: tokens/s >= 2.5x,
# peak RSS <= 0.3x), with the 1-minute load average before and after each run. Run it on a quiet
# machine; the numbers mean little when the load average exceeds the core count.
# The reference stack comes from scripts/reference-stack.sh (installed on first use, ~5.7 GB).
# Usage: scripts/bench-vs-torch.sh [STEPS [WARMUP [SEQ [PRESET]]]]   (env CARGO_TARGET_DIR honoured,
#        THREADS=2, BATCH=1, RUNS=3: each stack runs RUNS times per variant, interleaved, and the
#        table gives medians with the range, the ratio of the medians and the range of per-run ratios)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-5}
warmup=${2:-1}
seq=${3:-256}
preset=${4:-bench-512}
threads=${THREADS:-2}
batch=${BATCH:-1}
runs=${RUNS:-3}
py=.cache/refstack/bin/python
[ -x "$py" ] || scripts/reference-stack.sh >&2
target=${CARGO_TARGET_DIR:-target}
cargo build --release -p trainer >&2
ours_bin="$target/release/trainer"
log=${BENCH_LOG:-$(mktemp -d)}
mkdir -p "$log"
echo "logs in $log" >&2

load() { cut -d' ' -f1 /proc/loadavg; }
field() { # field NAME LINE
    sed -n "s/.*$1=\([^ ]*\).*/\1/p" <<<"$2"
}
declare -A R
for run in $(seq 1 "$runs"); do
for ckpt in false true; do
    for side in ours torch; do
        before=$(load)
        if [ "$side" = ours ]; then
            out=$("$ours_bin" bench-step --preset "$preset" --seq-len "$seq" --batch-size "$batch" \
                --steps "$steps" --warmup-steps "$warmup" --lora-r 8 --lora-alpha 16 \
                --gradient-checkpointing "$ckpt" --optimizer adamw --threads "$threads" \
                2>"$log/ours-$ckpt-$run.log")
        else
            out=$(OMP_NUM_THREADS=$threads "$py" scripts/reference/qlora_step.py --preset "$preset" \
                --seq-len "$seq" --batch-size "$batch" --steps "$steps" --warmup-steps "$warmup" \
                --lora-r 8 --lora-alpha 16 --gradient-checkpointing "$ckpt" --threads "$threads" \
                2>"$log/torch-$ckpt-$run.log")
        fi
        after=$(load)
        line=$(grep '^RESULT' <<<"$out")
        echo "$line (run $run, ckpt=$ckpt, load $before -> $after)" >&2
        R[$side,$ckpt,tps]+="$(field tokens_per_s "$line") "
        R[$side,$ckpt,rss]+="$(field peak_rss_mib "$line") "
        R[$side,$ckpt,load]+="$before $after "
    done
done
done

ver=$("$py" -c 'import torch, transformers, peft, bitsandbytes as b; print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, bitsandbytes {b.__version__}")' 2>/dev/null)
echo
echo "QLoRA step, $preset, seq $seq x batch $batch, $steps timed steps after $warmup warm-up, $threads threads, $runs runs; $ver"
for ckpt in false true; do
    "$py" - "$ckpt" "${R[ours,$ckpt,tps]}" "${R[torch,$ckpt,tps]}" "${R[ours,$ckpt,rss]}" "${R[torch,$ckpt,rss]}" \
        "${R[ours,$ckpt,load]} ${R[torch,$ckpt,load]}" <<'PY'
import statistics as st, sys
ckpt, ot, tt, orss, trss, loads = sys.argv[1], *[list(map(float, a.split())) for a in sys.argv[2:]]
med = st.median
def show(name, v, unit):
    return f"{name:<6} median {med(v):8.1f} {unit} [{min(v):.1f}-{max(v):.1f}]"
if ckpt == "false":
    print(f"{'ckpt':<6} {'stack':<6} tokens/s and peak RSS over the runs (load 1m {min(loads):.2f}-{max(loads):.2f})")
for side, tps, rss in (("ours", ot, orss), ("torch", tt, trss)):
    print(f"{ckpt:<6} {show(side, tps, 'tokens/s')}   peak RSS median {med(rss):7.1f} MiB")
s, m = med(ot) / med(tt), med(orss) / med(trss)
per = [a / b for a, b in zip(ot, tt)]
print(f"{ckpt:<6} ratio  tokens/s ours/torch {s:.2f}x (per run {min(per):.2f}-{max(per):.2f}; goal >= 2.5x: "
      f"{'met' if s >= 2.5 else 'NOT met'})   peak RSS ours/torch {m:.2f}x (goal <= 0.3x: {'met' if m <= 0.3 else 'NOT met'})")
PY
done
