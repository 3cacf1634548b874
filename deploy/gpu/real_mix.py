#!/usr/bin/env python3
"""Write the "real mix" for `conftag-infer bench --mix`: the token lengths of real seed prompts
and a varied new-token budget per row, so a benchmark sees what real jobs do to a batch
(prompts of different lengths; sequences that finish at different times while new ones join).

usage: real_mix.py SHARED_DATA_DIR SMOLLM2_GGUF ROWS OUT_JSON

- Prompt lengths: the seed prompts (the wording of common/src/prompt.rs) of the first rows of
  MATH, MedQA (4 options) and BoolQ in SHARED_DATA_DIR, a third each, interleaved, counted
  with SmolLM2's tokenizer (byte-level BPE, read from the GGUF that the demo uses). The
  benchmark rebuilds them as word prompts of those lengths for the word-level random model.
- Budgets: uniform between an eighth of the dataset's new-token budget (MATH 512, MedQA 256,
  BoolQ 128) and all of it, seeded, so every engine compared gets the same budgets.
Only numbers are written: no row text leaves SHARED_DATA_DIR.
Needs: pip install gguf tokenizers
"""
import json
import random
import sys

import gguf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

MATH = "Solve the following math problem. Show your work and give the final answer."
MEDQA = "Answer the following medical question by choosing the correct option."
BOOLQ = "Read the passage below and answer the question about it."
BUDGET = {"math": 512, "medqa": 256, "boolq": 128}


def prompt(dataset, row):
    if dataset == "math":
        return f"{MATH}\n\nProblem: {row['problem']}\n\nSolution:"
    if dataset == "medqa":
        opts = "".join(f"{k}: {v}\n" for k, v in sorted(row["options"].items()))
        return f"{MEDQA}\n\nQuestion: {row['question']}\nOptions:\n{opts}\nAnswer:"
    return f"{BOOLQ}\n\nPassage: {row['passage']}\nQuestion: {row['question']}\n\nAnswer (yes or no):"


def tokenizer_from_gguf(path):
    r = gguf.GGUFReader(path)

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def main():
    data, gguf_path, rows, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    tok = tokenizer_from_gguf(gguf_path)
    files = {"math": "math/test.jsonl", "medqa": "medqa/test_4options.jsonl", "boolq": "boolq/test.jsonl"}
    per = {d: [json.loads(l) for _, l in zip(range(rows // 3 + 1), open(f"{data}/{p}"))] for d, p in files.items()}
    rng = random.Random(12)
    mix = []
    for i in range(rows):
        d = ("math", "medqa", "boolq")[i % 3]
        n = len(tok.encode(prompt(d, per[d][i // 3])).ids)
        mix.append({"dataset": d, "prompt_tokens": n,
                    "max_new_tokens": rng.randint(BUDGET[d] // 8, BUDGET[d])})
    doc = {
        "about": "token lengths of real seed prompts (SmolLM2 tokenizer) and varied new-token budgets; "
                 "written by deploy/gpu/real_mix.py",
        "rows": mix,
    }
    with open(out, "w") as f:
        f.write("{\"about\": " + json.dumps(doc["about"]) + ",\n\"rows\": [\n" + ",\n".join(json.dumps(r) for r in doc["rows"]) + "\n]}")
        f.write("\n")
    for d in BUDGET:
        ls = sorted(r["prompt_tokens"] for r in mix if r["dataset"] == d)
        bs = [r["max_new_tokens"] for r in mix if r["dataset"] == d]
        print(f"{d}: {len(ls)} rows, prompt tokens min {ls[0]} median {ls[len(ls) // 2]} max {ls[-1]}, "
              f"new-token budget mean {sum(bs) / len(bs):.0f}")


if __name__ == "__main__":
    main()
