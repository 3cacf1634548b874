#!/usr/bin/env python3
"""Where a concurrent greedy answer differs from the one-at-a-time answer, was it a near-tie?

usage: divergence.py MODEL_DIR SELFCHECK_JSON [SELFCHECK_JSON ...]
SELFCHECK_JSON comes from `conftag-infer self-check --word-prompts --out` (word prompts for the
word-level test tokenizer: token id = the word's number). For every prompt whose serial and
concurrent answers differ, it finds the first differing token k, runs the model in float32
(weights upcast: an independent, higher-precision reference) on prompt + the shared k tokens,
and prints the reference's logits of the two tokens the engine chose there and their gap,
relative to the largest logit. A gap within bf16 rounding of the logits (< 2^-7 relative:
two bf16 ulps) is numerical noise; a larger one points at a scheduling bug (lost KV,
re-prefill). Last line: `divergence: N/M equal, D differ, T at near-ties, worst gap G`.
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM

NEAR_TIE = 2.0 ** -7


def words(text):
    out = []
    for w in text.split():
        if w.startswith("w") and w[1:].isdigit():
            out.append(int(w[1:]))
        else:
            break
    return out


d, paths = sys.argv[1], sys.argv[2:]
m = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32).cuda().eval()
for path in paths:
    doc = json.load(open(path))
    equal, differ, ties, worst = 0, 0, 0, 0.0
    for p, a, b in zip(doc["prompts"], doc["serial"], doc["concurrent"]):
        if a == b:
            equal += 1
            continue
        differ += 1
        ids = [int(w[1:]) for w in p.split()]
        ta, tb = words(a), words(b)
        k = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
        if k >= min(len(ta), len(tb)):
            print(f"{path}: {p[:30]!r}: answers differ in length or in a non-word token at {k}")
            worst = float("inf")
            continue
        with torch.no_grad():
            x = torch.tensor([ids + ta[:k]], device="cuda")
            logits = m(x).logits[0, -1].float()
        top = logits.abs().max().item()
        la, lb = logits[ta[k]].item(), logits[tb[k]].item()
        gap = abs(la - lb) / max(top, 1e-6)
        worst = max(worst, gap)
        ties += gap < NEAR_TIE
        rank = lambda t: int((logits > logits[t]).sum().item())
        print(f"{path.split('/')[-1]}: prompt {len(ids)} words, first differs at token {k}: "
              f"serial w{ta[k]} (rank {rank(ta[k])}, logit {la:.4f}) vs concurrent w{tb[k]} "
              f"(rank {rank(tb[k])}, logit {lb:.4f}), gap {gap:.2e} of the top logit "
              f"{'near-tie' if gap < NEAR_TIE else 'NOT a near-tie'}")
    print(f"divergence {path.split('/')[-1]}: {equal}/{equal + differ} equal, {differ} differ, "
          f"{ties} at near-ties, worst gap {worst:.2e}")
