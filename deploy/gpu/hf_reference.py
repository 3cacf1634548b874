#!/usr/bin/env python3
"""Compare conftag-infer self-check answers with HF transformers greedy decoding.

usage: hf_reference.py MODEL_DIR NEW_TOKENS SELFCHECK_JSON [SELFCHECK_JSON ...]
SELFCHECK_JSON comes from `conftag-infer self-check --word-prompts --out`: prompts are word
strings `w5 w17 ...` for the word-level test tokenizer (token id = the word's number), answers
are the same kind of strings. Prints how many serial / concurrent answers equal HF's greedy ids
(compared over the tokens the engine produced; it stops early only at EOS).
"""
import json, sys
import torch
from transformers import AutoModelForCausalLM

d, n, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
doc = json.load(open(paths[0]))
m = AutoModelForCausalLM.from_pretrained(d, torch_dtype="auto").cuda().eval()
refs = []
with torch.no_grad():
    for p in doc["prompts"]:
        ids = [int(w[1:]) for w in p.split()]
        x = torch.tensor([ids], device="cuda")
        y = m.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                       do_sample=False, eos_token_id=None, pad_token_id=0)
        refs.append(y[0, len(ids):].tolist())

def words(text):
    out = []
    for w in text.split():
        if w.startswith("w") and w[1:].isdigit():
            out.append(int(w[1:]))
        else:
            return None
    return out

for path in paths:
  doc = json.load(open(path))
  for kind in ("serial", "concurrent"):
    same = 0
    first_diff = []
    for ref, ans in zip(refs, doc[kind]):
        got = words(ans)
        if got is not None and len(got) > 0 and ref[: len(got)] == got:
            same += 1
        else:
            k = next((i for i, (a, b) in enumerate(zip(ref, got or [])) if a != b), None)
            first_diff.append(k)
    print(f"{path.split('/')[-1]} {kind}: {same}/{len(refs)} equal HF transformers greedy; first differing token index: {first_diff}")
