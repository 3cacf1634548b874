#!/usr/bin/env bash
# Runs ON the device machine, from the repo root, with .gpu/ carried (see docs/gpu.md):
#   .gpu/conftag-infer.xz  CUDA build of conftag-infer (deploy/gpu/build-cuda.sh)
#   .gpu/conftag           conftag (release), .gpu/redis-server + .gpu/lib/*.so
# usage: deploy/gpu/device-run.sh STEP...   STEP: correctness | bench8b | e2e8b
# Results go to $OUT (the device tool brings them back).
set -uo pipefail
OUT="${OUT:-/tmp/conftag-out}"; mkdir -p "$OUT"
W=/tmp/conftag-gpu; mkdir -p "$W"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:/usr/local/nvidia/lib64:$PWD/.gpu/lib"
export HF_HOME="$W/hf" RUST_LOG="${RUST_LOG:-warn}"
if [ ! -x "$W/conftag-infer" ]; then xz -dc .gpu/conftag-infer.xz >"$W/conftag-infer" && chmod +x "$W/conftag-infer"; fi
infer="$W/conftag-infer"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
t() { /usr/bin/time -f "  [%e s]" "$@"; }

for step in "$@"; do case "$step" in
correctness)
  [ -d "$W/small" ] || python3 deploy/gpu/gen_model.py "$W/small" small f32 >/dev/null
  echo "== correctness: small f32 model, 32 word prompts, 48 new tokens"
  for mode in paged plain; do
    flag=""; [ "$mode" = plain ] && flag="--no-paged-attn"
    t "$infer" --weights "$W/small" --dtype f32 --max-num-seqs 32 $flag self-check --word-prompts --prompts 32 --new-tokens 48 --out "$OUT/selfcheck_$mode.json" 2>"$OUT/selfcheck_$mode.log" | tee -a "$OUT/summary.txt"
    python3 deploy/gpu/hf_reference.py "$W/small" "$OUT/selfcheck_$mode.json" 48 2>/dev/null | sed "s/^/$mode /" | tee -a "$OUT/summary.txt"
  done ;;
bench8b)
  [ -d "$W/8b" ] || t python3 deploy/gpu/gen_model.py "$W/8b" 8b bf16 >/dev/null
  echo "== (a) bare mistral.rs, 8B shape bf16, BoolQ-like 250 prompt / 128 new" | tee -a "$OUT/summary.txt"
  t "$infer" --weights "$W/8b" --dtype bf16 bench --in-flight "${IN_FLIGHT:-1,16,64}" --rows "${ROWS:-64}" --prompt-words 250 --new-tokens 128 2>"$OUT/bench8b.log" | tee -a "$OUT/summary.txt"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader | tee -a "$OUT/summary.txt" ;;
hf8b)
  [ -d "$W/8b" ] || t python3 deploy/gpu/gen_model.py "$W/8b" 8b bf16 >/dev/null
  echo "== (c) HF transformers generate, bf16, 250/128" | tee -a "$OUT/summary.txt"
  python3 deploy/gpu/hf_bench.py "$W/8b" 250 128 16 64 256 2>/dev/null | tee -a "$OUT/summary.txt" ;;
*) echo "unknown step $step" ;;
esac; done
echo "== summary"; cat "$OUT/summary.txt"
