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
    flag=""; [ "$mode" = paged ] && flag="--paged-attn"
    t "$infer" --weights "$W/small" --dtype f32 --max-num-seqs 32 $flag self-check --word-prompts --prompts 32 --new-tokens 48 --out "$OUT/selfcheck_$mode.json" 2>"$OUT/selfcheck_$mode.log" | sed "s/^/$mode /" | tee -a "$OUT/summary.txt"
  done
  python3 deploy/gpu/hf_reference.py "$W/small" 48 "$OUT/selfcheck_paged.json" "$OUT/selfcheck_plain.json" 2>"$OUT/hf_reference.log" | tee -a "$OUT/summary.txt" ;;
bench8b)
  [ -d "$W/8b" ] || t python3 deploy/gpu/gen_model.py "$W/8b" 8b bf16 >/dev/null
  echo "== (a) bare mistral.rs, 8B shape bf16, BoolQ-like 250 prompt / 128 new ${ENGINE_FLAGS:-}" | tee -a "$OUT/summary.txt"
  # shellcheck disable=SC2086 # ENGINE_FLAGS is a list of flags
  t "$infer" --weights "$W/8b" --dtype bf16 ${ENGINE_FLAGS:-} bench --in-flight "${IN_FLIGHT:-1,16,64}" --prompt-words 250 --new-tokens 128 2>"$OUT/bench8b.log" | tee -a "$OUT/summary.txt"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader | tee -a "$OUT/summary.txt" ;;
hf8b)
  [ -d "$W/8b" ] || t python3 deploy/gpu/gen_model.py "$W/8b" 8b bf16 >/dev/null
  echo "== (c) HF transformers generate, bf16, 250/128" | tee -a "$OUT/summary.txt"
  python3 deploy/gpu/hf_bench.py "$W/8b" 250 128 16 64 256 2>/dev/null | tee -a "$OUT/summary.txt" ;;
e2e8b)
  # (b) conftag-infer pulling shards from a Redis on the device, end to end.
  [ -d "$W/8b" ] || t python3 deploy/gpu/gen_model.py "$W/8b" 8b bf16 >/dev/null
  G="$PWD/.gpu"; port=$((6400 + RANDOM % 2000))
  "$G/redis-server" --port $port --bind 127.0.0.1 --save "" --appendonly no --dir "$W" --daemonize yes
  export REDIS_URL="redis://127.0.0.1:$port"
  python3 - "${E2E_ROWS:-64}" >"$W/boolq.jsonl" <<'PY'
import json, random, sys
random.seed(3)
for i in range(int(sys.argv[1])):
    words = lambda n: " ".join(f"w{random.randrange(1000)}" for _ in range(n))
    print(json.dumps({"question": words(12), "answer": i % 2 == 0, "passage": words(220)}))
PY
  "$G/conftag" submit --model gpu8b --dataset boolq --split test --data "$W/boolq.jsonl" --shard-size 16 --max-tokens 128 >/dev/null
  start=$(date +%s.%N)
  # shellcheck disable=SC2086 # E2E_FLAGS is a list of flags
  RUST_LOG=info "$infer" --model gpu8b --weights "$W/8b" --dtype bf16 --exit-when-done \
    --max-inflight-rows "${E2E_INFLIGHT_ROWS:-128}" ${E2E_FLAGS:---concurrency 16} --log-format json 2>"$OUT/e2e8b.log"
  end=$(date +%s.%N)
  "$G/conftag" status --json >"$OUT/e2e_status.json"
  python3 - "$start" "$end" "$OUT/e2e_status.json" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
s, e, path = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
j = json.load(open(path))["jobs"][0]
loaded = None
for line in open(path.replace("e2e_status.json", "e2e8b.log")):
    try:
        rec = json.loads(line)
    except ValueError:
        continue
    if rec.get("fields", {}).get("message") == "model loaded":
        from datetime import datetime
        loaded = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
gen = e - loaded if loaded else None
print(f"== (b) conftag-infer end to end: {j['rows_inferred']} rows, {j['tokens_generated']} tokens in {e - s:.1f} s "
      f"(model load included) = {j['tokens_generated'] / (e - s):.1f} out tok/s"
      + (f"; after the model loaded: {gen:.1f} s = {j['tokens_generated'] / gen:.1f} out tok/s" if gen else ""))
PY
  ;;
*) echo "unknown step $step" ;;
esac; done
echo "== summary"; cat "$OUT/summary.txt"
