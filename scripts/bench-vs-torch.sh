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
#        THREADS=2, BATCH=1)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-5}
warmup=${2:-1}
seq=${3:-256}
preset=${4:-bench-512}
threads=${THREADS:-2}
batch=${BATCH:-1}
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
for ckpt in false true; do
    for side in ours torch; do
        before=$(load)
        if [ "$side" = ours ]; then
            out=$("$ours_bin" bench-step --preset "$preset" --seq-len "$seq" --batch-size "$batch" \
                --steps "$steps" --warmup-steps "$warmup" --lora-r 8 --lora-alpha 16 \
                --gradient-checkpointing "$ckpt" --optimizer adamw --threads "$threads" \
                2>"$log/ours-$ckpt.log")
        else
            out=$(OMP_NUM_THREADS=$threads "$py" scripts/reference/qlora_step.py --preset "$preset" \
                --seq-len "$seq" --batch-size "$batch" --steps "$steps" --warmup-steps "$warmup" \
                --lora-r 8 --lora-alpha 16 --gradient-checkpointing "$ckpt" --threads "$threads" \
                2>"$log/torch-$ckpt.log")
        fi
        after=$(load)
        line=$(grep '^RESULT' <<<"$out")
        echo "$line (ckpt=$ckpt, load $before -> $after)" >&2
        R[$side,$ckpt,tps]=$(field tokens_per_s "$line")
        R[$side,$ckpt,rss]=$(field peak_rss_mib "$line")
        R[$side,$ckpt,load]="$before -> $after"
    done
done

ver=$("$py" -c 'import torch, transformers, peft, bitsandbytes as b; print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, bitsandbytes {b.__version__}")' 2>/dev/null)
echo
echo "QLoRA step, $preset, seq $seq x batch $batch, $steps timed steps after $warmup warm-up, $threads threads; $ver"
printf '%-6s %-6s %12s %14s %22s\n' ckpt stack tokens/s peak-RSS-MiB "load 1m before->after"
for ckpt in false true; do
    for side in ours torch; do
        printf '%-6s %-6s %12.1f %14.1f %22s\n' "$ckpt" "$side" "${R[$side,$ckpt,tps]}" "${R[$side,$ckpt,rss]}" \
            "${R[$side,$ckpt,load]}"
    done
    awk -v c="$ckpt" -v ot="${R[ours,$ckpt,tps]}" -v tt="${R[torch,$ckpt,tps]}" -v orr="${R[ours,$ckpt,rss]}" \
        -v tr="${R[torch,$ckpt,rss]}" 'BEGIN {
            s = ot / tt; m = orr / tr
            printf "%-6s ratio  tokens/s ours/torch %.2fx (goal >= 2.5x: %s)   peak RSS ours/torch %.2fx (goal <= 0.3x: %s)\n",
                c, s, (s >= 2.5 ? "met" : "NOT met"), m, (m <= 0.3 ? "met" : "NOT met") }'
done
