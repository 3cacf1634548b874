#!/usr/bin/env python3
"""Summarise mistral.rs's per-iteration step log (MISTRALRS_DEBUG=1 with the step-log patch).

usage: step_log.py LOG [LOG ...]
Each `Prompt[…] Completion[…] - N ms` line is one engine iteration. Prints, per log: prompt
iterations (count, total ms, prompts per iteration) and decode iterations grouped by how many
sequences they ran, with the median milliseconds per iteration: where a run's time goes.
"""
import re
import statistics
import sys

LINE = re.compile(r"Prompt\[(.*?)\] Completion\[(.*?)\] - ([\d.]+)ms")


def count(field):
    if not field:
        return 0
    m = re.match(r"(\d+) seqs", field)
    return int(m.group(1)) if m else len(field.split(","))


for path in sys.argv[1:]:
    prompts, decodes = [], []
    for line in open(path, errors="replace"):
        m = LINE.search(line)
        if not m:
            continue
        p, c, ms = count(m.group(1)), count(m.group(2)), float(m.group(3))
        (prompts if p else decodes).append((p or c, ms))
    total = sum(ms for _, ms in prompts) + sum(ms for _, ms in decodes)
    print(f"== {path}: {len(prompts) + len(decodes)} iterations, {total / 1000:.1f} s")
    if prompts:
        print(f"  prefill: {len(prompts)} iterations, {sum(ms for _, ms in prompts) / 1000:.1f} s, "
              f"{statistics.mean(n for n, _ in prompts):.1f} prompts each, "
              f"median {statistics.median(ms for _, ms in prompts):.1f} ms")
    for lo, hi in ((1, 1), (2, 16), (17, 64), (65, 128), (129, 192), (193, 256)):
        group = [ms for n, ms in decodes if lo <= n <= hi]
        if group:
            print(f"  decode {lo:>3}-{hi:<3} seqs: {len(group):>5} iterations, {sum(group) / 1000:6.1f} s, "
                  f"median {statistics.median(group):6.1f} ms")
