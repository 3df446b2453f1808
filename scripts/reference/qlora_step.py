"""QLoRA step timing on the reference stack (PyTorch + transformers + PEFT + bitsandbytes, CPU):
the other side of `trainer bench-step` (scripts/bench-vs-torch.sh runs both).

Run:  scripts/reference-stack.sh && .cache/refstack/bin/python scripts/reference/qlora_step.py \
          --preset bench-512 --seq-len 256 --batch-size 1 --steps 5 --warmup-steps 1 \
          --gradient-checkpointing false --threads 2

Setup, matching bench-step:
  model    transformers LlamaForCausalLM(LlamaConfig(shape of the preset; rope_theta 10000,
           rms_norm_eps 1e-5, untied head, max_position_embeddings 4096)), random init under
           torch.manual_seed(seed) (normal(0, 0.02), norms 1), saved once to a cache directory
           by a child process (so this process never holds the full f32 model), then loaded with
           BitsAndBytesConfig(load_in_4bit, nf4, double quant, compute dtype fp32),
           device_map="cpu": every q/k/v/o/gate/up/down projection is a bnb Linear4bit;
           embed_tokens, lm_head and the norms stay fp32. Default attention (sdpa).
  LoRA     PEFT r 8 alpha 16 dropout 0 on all seven projections (get_peft_model; no
           prepare_model_for_kbit_training, which would upcast and change what is measured).
  step     random token ids (batch x seq, labels = ids), HF causal-LM loss, backward,
           clip_grad_norm_(lora params, 0.3), torch.optim.AdamW(lr 2e-4), zero_grad.
           Optional model.gradient_checkpointing_enable(use_reentrant=False).
Prints progress to stderr and on stdout one line:
  RESULT torch tokens_per_s=.. step_s=.. peak_rss_mib=..
(peak RSS = getrusage(RUSAGE_SELF).ru_maxrss, the whole process including loading).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

PRESETS = {
    # hidden, layers, heads, kv heads, intermediate, vocab
    "bench-512": (512, 8, 8, 8, 1376, 32000),
    "llama2-7b": (4096, 32, 32, 32, 11008, 32000),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ROOT = Path(__file__).resolve().parents[2]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="bench-512", choices=sorted(PRESETS))
    for k in ("hidden", "layers", "heads", "kv-heads", "intermediate", "vocab"):
        p.add_argument(f"--{k}", type=int)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--gradient-checkpointing", default="false", choices=["true", "false"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", default=str(ROOT / ".cache/bench-models"))
    p.add_argument("--make-checkpoint", help=argparse.SUPPRESS)
    return p.parse_args()


def shape(a) -> dict:
    h, l, nh, nkv, i, v = PRESETS[a.preset]
    h = a.hidden or h
    nh = a.heads or nh
    nkv = a.kv_heads or (a.heads or nkv)
    return dict(
        hidden_size=h,
        num_hidden_layers=a.layers or l,
        num_attention_heads=nh,
        num_key_value_heads=nkv,
        intermediate_size=a.intermediate or i,
        vocab_size=a.vocab or v,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        max_position_embeddings=max(4096, a.seq_len),
        initializer_range=0.02,
        use_cache=False,
    )


def make_checkpoint(a, out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(a.seed)
    model = LlamaForCausalLM(LlamaConfig(**shape(a)))
    model.save_pretrained(out)


def rss_mib(peak: bool) -> float:
    if peak:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    a = parse()
    if a.make_checkpoint:
        make_checkpoint(a, Path(a.make_checkpoint))
        return
    s = shape(a)
    key = "-".join(str(s[k]) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                        "num_key_value_heads", "intermediate_size", "vocab_size"))
    ck = Path(a.cache_dir) / f"llama-{key}-seed{a.seed}"
    if not (ck / "config.json").exists():
        print(f"writing the random checkpoint {ck} (child process)", file=sys.stderr)
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--make-checkpoint", str(ck)], check=True)

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import BitsAndBytesConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t0 = time.perf_counter()
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.float32)
    model = LlamaForCausalLM.from_pretrained(ck, quantization_config=q, device_map="cpu", dtype=torch.float32)
    import bitsandbytes as bnb

    n4 = sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert n4 == 7 * s["num_hidden_layers"], n4
    assert model.lm_head.weight.dtype == torch.float32
    model.config.use_cache = False
    if a.gradient_checkpointing == "true":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    pm = get_peft_model(model, LoraConfig(r=a.lora_r, lora_alpha=a.lora_alpha, lora_dropout=0.0,
                                          target_modules=TARGETS, task_type="CAUSAL_LM"))
    pm.train()
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4)
    print(f"loaded in {time.perf_counter() - t0:.1f}s: {n4} Linear4bit, {sum(p.numel() for p in params)} "
          f"trainable params, rss {rss_mib(False):.0f} MiB (peak {rss_mib(True):.0f} MiB); torch "
          f"{torch.__version__} threads {torch.get_num_threads()}, checkpointing {a.gradient_checkpointing}",
          file=sys.stderr)

    gen = torch.Generator().manual_seed(a.seed + 1)
    tokens = a.seq_len * a.batch_size
    timed = 0.0
    for step in range(a.warmup_steps + a.steps):
        ids = torch.randint(0, s["vocab_size"], (a.batch_size, a.seq_len), generator=gen)
        t = time.perf_counter()
        out = pm(input_ids=ids, labels=ids)
        out.loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 0.3)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t
        warm = step < a.warmup_steps
        if not warm:
            timed += dt
        print(f"{'warmup' if warm else 'step'} {step + 1 if warm else step + 1 - a.warmup_steps}: loss "
              f"{float(out.loss):.4f} grad-norm {float(norm):.4f} {dt:.3f}s {tokens / dt:.1f} tok/s",
              file=sys.stderr)
    step_s = timed / a.steps
    print(f"summary: {tokens / step_s:.1f} tokens/s, {step_s:.3f} s/step, peak RSS {rss_mib(True):.0f} MiB",
          file=sys.stderr)
    print(f"RESULT torch tokens_per_s={tokens / step_s:.3f} step_s={step_s:.4f} peak_rss_mib={rss_mib(True):.1f}")


if __name__ == "__main__":
    main()
