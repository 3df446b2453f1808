"""Check that an adapter written by `trainer train` loads with PEFT and gives our logits.

Usage (reference stack from scripts/reference-stack.sh):
  trainer logits --model BASE --adapter ADAPTER --quant none --tokens 5,17,200 --output ours.safetensors
  .cache/refstack/bin/python scripts/reference/peft_load.py BASE ADAPTER ours.safetensors 5,17,200
Prints the largest logit difference against transformers + PeftModel.from_pretrained (fp32 base),
and the adapter's own effect for scale; exits 1 if the difference exceeds 1e-4 of the largest logit.
"""
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

base_dir, adapter_dir, ours_file, tokens = sys.argv[1:5]
ids = torch.tensor([[int(t) for t in tokens.split(",")]])
model = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32), adapter_dir)
model.eval()
with torch.no_grad():
    ref = model(ids).logits[0]
    with model.disable_adapter():
        base = model(ids).logits[0]
ours = load_file(ours_file)["logits"]
diff = (ref - ours).abs().max().item()
scale = ref.abs().max().item()
print(f"max |ours - peft| = {diff:.3e} (max |logit| {scale:.3f}); adapter effect {(ref - base).abs().max().item():.3e}")
sys.exit(0 if diff <= 1e-4 * scale else 1)
