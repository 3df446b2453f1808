"""10-step QLoRA training trajectory on the tiny Llama, computed with PyTorch + PEFT on the CPU
-> crates/trainer/tests/fixtures/peft_trajectory/ (checked by crates/trainer/tests/peft_trajectory.rs).

Run:  scripts/reference-stack.sh && .cache/refstack/bin/python scripts/reference/trajectory.py
      (from the repository root; about 10 s; deterministic: rerunning gives identical files)

Setup (the "qlora_spec" route of shared/reference/tiny_llama_ref.py, then 10 optimizer steps):
  base     crates/llama/tests/fixtures/tiny-llama (fp32), its 7 projection weights per layer
           replaced by the spec NF4 + double-quant dequantized weights (nf4_ref.py: blocksize 64,
           nested blocksize 256, offset = f64-accumulated mean rounded to f32); embed_tokens,
           lm_head and the norms stay fp32. Attention implementation "eager"; the model is in
           train() mode (dropout 0 everywhere).
  LoRA     the fixture's adapter/ (r 8, alpha 16, all 7 projections, lora_dropout 0) loaded with
           PeftModel.from_pretrained(..., is_trainable=True): only lora_A / lora_B train.
  data     torch.randint(0, 256, (20, 16), generator=torch.Generator().manual_seed(7)),
           written to data.jsonl as {"input_ids": [...]} in row order.
  step s   (s = 0..9) one batch of rows 2s, 2s+1 (no padding, labels = input_ids): HF causal-LM
           loss (mean CE over the 2 x 15 shifted positions), backward,
           clip_grad_norm_(lora params, 0.3), torch.optim.AdamW(lr 1e-3, betas (0.9, 0.999),
           eps 1e-8, weight_decay 0), constant lr, no warmup; fp32 everywhere.
Writes data.jsonl, trajectory.json (per-step loss before the update, pre-clip grad norm, config,
versions, checks) and final_adapter/ (adapter_model.safetensors in PEFT naming + the input
adapter_config.json).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import nf4_ref as R  # noqa: E402

TINY = ROOT / "crates/llama/tests/fixtures/tiny-llama"
OUT = ROOT / "crates/trainer/tests/fixtures/peft_trajectory"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
STEPS, BATCH, SEQ, ROWS = 10, 2, 16, 20
LR, BETAS, EPS, WD, MAX_NORM = 1e-3, (0.9, 0.999), 1e-8, 0.0, 0.3
ATTN = os.environ.get("TRAJ_ATTN", "eager")


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def load_base(tmp: Path, attn: str):
    """fp32 tiny Llama from a private copy of config.json + model.safetensors (so no stray file
    beside the base, such as an adapter_config.json, is auto-loaded), with spec-dequantized
    projection weights."""
    from transformers import LlamaForCausalLM

    for f in ("config.json", "model.safetensors"):
        shutil.copy(TINY / f, tmp / f)
    model = LlamaForCausalLM.from_pretrained(tmp, dtype=torch.float32, attn_implementation=attn)
    dyn = R.dynamic_map_from_bnb()
    hashes = {}
    with torch.no_grad():
        for name, mod in model.named_modules():
            if name.split(".")[-1] in TARGETS:
                w = mod.weight.detach().float().numpy()
                packed, absmax = R.quantize_4bit(w, 64, "nf4")
                qa, nested, off = R.double_quantize_absmax(absmax, dyn)
                wd = R.dequantize_4bit_f32(packed, R.restore_absmax(qa, nested, off, dyn), w.size).reshape(w.shape)
                mod.weight.copy_(torch.from_numpy(wd))
                hashes[name + ".weight"] = hashlib.sha256(np.ascontiguousarray(wd).tobytes()).hexdigest()
    return model.train(), hashes


def attach_adapter(model):
    from peft import PeftModel

    pm = PeftModel.from_pretrained(model, str(TINY / "adapter"), is_trainable=True)
    pm.train()
    return pm


def run(attn: str, rows: torch.Tensor, tmp: Path) -> dict:
    base, hashes = load_base(tmp, attn)
    pm = attach_adapter(base)
    named = [(k, p) for k, p in pm.named_parameters() if p.requires_grad]
    assert named and all(("lora_A" in k or "lora_B" in k) for k, _ in named), [k for k, _ in named]
    params = [p for _, p in named]
    # sanity: the starting point reproduces the reference qlora_spec loss on its 32 tokens
    ref = json.loads((TINY / "reference.json").read_text())
    with torch.no_grad():
        ref_tokens = torch.tensor([ref["tokens"]])
        ref_loss = float(pm(input_ids=ref_tokens, labels=ref_tokens).loss)

    opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    losses, norms, norms_post = [], [], []
    for s in range(STEPS):
        batch = rows[2 * s : 2 * s + 2]
        opt.zero_grad(set_to_none=True)
        out = pm(input_ids=batch, labels=batch)
        out.loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
        norms_post.append(float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params))))
        opt.step()
        losses.append(float(out.loss.detach()))
        norms.append(float(norm))
    with torch.no_grad():  # loss of the final adapter on every row, for information
        final_all = float(pm(input_ids=rows, labels=rows).loss)
    final = {k.replace(".default", ""): p.detach().clone().contiguous() for k, p in named}
    return {
        "losses": losses,
        "grad_norms": norms,
        "grad_norms_after_clip": norms_post,
        "final": final,
        "ref_loss": ref_loss,
        "ref_loss_expected": ref["loss"]["qlora_spec"],
        "weight_hashes": hashes,
        "ref_hashes": {k: v["sha256_dequant_f32"] for k, v in ref["spec_quantized_weights"].items()},
        "n_trainable": sum(p.numel() for p in params),
        "n_trainable_tensors": len(params),
        "final_loss_all_rows": final_all,
    }


def main() -> None:
    from importlib.metadata import version

    from safetensors.torch import save_file

    torch.set_num_threads(int(os.environ.get("REF_THREADS", "2")))
    torch.use_deterministic_algorithms(True)
    OUT.mkdir(parents=True, exist_ok=True)
    rows = torch.randint(0, 256, (ROWS, SEQ), generator=torch.Generator().manual_seed(7))
    with tempfile.TemporaryDirectory() as t:
        main_run = run(ATTN, rows, Path(t))
        other_attn = "sdpa" if ATTN == "eager" else "eager"
        other = run(other_attn, rows, Path(t))

    assert main_run["weight_hashes"] == main_run["ref_hashes"], "spec weights differ from reference.json"
    with open(OUT / "data.jsonl", "w") as f:
        for r in rows.tolist():
            f.write(json.dumps({"input_ids": r}) + "\n")
    fa = OUT / "final_adapter"
    fa.mkdir(exist_ok=True)
    save_file(main_run["final"], str(fa / "adapter_model.safetensors"))
    (fa / "adapter_model.safetensors").chmod(0o644)  # safetensors writes 0600
    shutil.copy(TINY / "adapter/adapter_config.json", fa / "adapter_config.json")

    loss_diff_attn = max(abs(a - b) for a, b in zip(main_run["losses"], other["losses"]))
    param_diff_attn = max(float((main_run["final"][k] - other["final"][k]).abs().max()) for k in main_run["final"])
    doc = {
        "what": "10-step QLoRA run with PyTorch + PEFT on the CPU (scripts/reference/trajectory.py)",
        "config": {
            "model": "crates/llama/tests/fixtures/tiny-llama (fp32 config.json + model.safetensors)",
            "base": "fp32 model whose 7 projection weights per layer (q,k,v,o,gate,up,down) are replaced by "
            "the spec NF4 + double-quant dequantized weights (scripts/reference/nf4_ref.py: blocksize 64, "
            "nested blocksize 256, signed 8-bit dynamic map, offset = f64-accumulated mean of absmax "
            "rounded to f32), i.e. tiny_llama_ref.py's qlora_spec; embed_tokens, lm_head and norms fp32",
            "attn_implementation": ATTN,
            "mode": "model.train() (all dropouts 0)",
            "lora": "adapter/ of the tiny-llama fixture loaded with PeftModel.from_pretrained(is_trainable=True): "
            "r 8, lora_alpha 16 (scaling 2), lora_dropout 0, all 7 projections, bias none; trainable = "
            "only lora_A / lora_B",
            "data": "torch.randint(0, 256, (20, 16), generator=torch.Generator().manual_seed(7)); data.jsonl "
            "holds the rows in order as {\"input_ids\": [...]}",
            "batches": "step s (0..9) = rows 2s and 2s+1 as one batch of 2, no padding, labels = input_ids",
            "loss": "HF causal-LM loss: mean cross-entropy over the 2 x 15 shifted positions",
            "optimizer": "torch.optim.AdamW(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0), "
            "constant lr, no warmup, one optimizer step per batch",
            "clipping": "torch.nn.utils.clip_grad_norm_(lora params, 0.3) before each step",
            "dtype": "float32 everywhere",
            "threads": torch.get_num_threads(),
        },
        "losses": main_run["losses"],
        "loss_rule": "losses[s] = loss of step s's forward, before step s's update",
        "grad_norms": main_run["grad_norms"],
        "grad_norm_rule": "grad_norms[s] = total L2 norm of all LoRA grads at step s, before clipping "
        "(clip_grad_norm_'s return value)",
        "grad_norms_after_clip": main_run["grad_norms_after_clip"],
        "final_adapter": "final_adapter/adapter_model.safetensors: lora A/B after the 10th update (PEFT names); "
        "adapter_config.json copied from the input adapter",
        "final_loss_all_20_rows": main_run["final_loss_all_rows"],
        "trainable_params": main_run["n_trainable"],
        "trainable_tensors": main_run["n_trainable_tensors"],
        "checks": {
            "spec_weights_sha256_equal_reference_json": main_run["weight_hashes"] == main_run["ref_hashes"],
            "initial_loss_on_reference_tokens": main_run["ref_loss"],
            "reference_json_qlora_spec_loss": main_run["ref_loss_expected"],
            f"{other_attn}_losses": other["losses"],
            f"{ATTN}_vs_{other_attn}_loss_max_abs": loss_diff_attn,
            f"{ATTN}_vs_{other_attn}_final_adapter_max_abs": param_diff_attn,
        },
        "inputs_sha256": {
            "model.safetensors": sha256(TINY / "model.safetensors"),
            "adapter/adapter_model.safetensors": sha256(TINY / "adapter/adapter_model.safetensors"),
        },
        "versions": {
            "python": sys.version.split()[0],
            **{p: version(p) for p in ("torch", "transformers", "peft", "bitsandbytes", "safetensors", "numpy")},
        },
    }
    (OUT / "trajectory.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: doc[k] for k in ("losses", "grad_norms", "checks")}, indent=1))


if __name__ == "__main__":
    main()
