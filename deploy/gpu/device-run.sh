#!/usr/bin/env bash
# Runs ON a GPU node from the repo root, with .gpu/ carried (see docs/gpu.md):
#   .gpu/conftag-infer.xz  CUDA build of conftag-infer (deploy/gpu/build-cuda.sh)
#   .gpu/conftag           conftag (CPU build), .gpu/redis-server + .gpu/lib/*.so
# usage: deploy/gpu/device-run.sh STEP...
#   patched      the engine issue's sweep, patched engine: equal 250/128 and the real mix
#   published    the same binary with MISTRALRS_UNPATCHED=1 (mistral.rs as published)
#   divergence   concurrent vs one-at-a-time answers, small f32 + 8B bf16, near-tie check
#   hfmix        (d) HF generate on the equal shape and the real mix
#   ltgemm       linear layers through cuBLAS matmul (quant patch 0003) vs cuBLASLt, bench
#   perseq       a decode step's inputs in one upload (core patch 0008) vs per sequence, bench
#   mixedprefill the patched engine with MISTRALRS_MIXED_PREFILL=1 (patch 0007, opt-in)
#   neartie      concurrent vs one-at-a-time with the engine's own logits of both runs
#                (self-check --top-logits): are bf16 differences near-ties? small f32 + 8B bf16
#   ncudecode    Nsight Compute: GPU time per kernel of a decode step at 256 sequences (8B)
#   ncuprefill   Nsight Compute: GPU time per kernel of two single-prompt prefills (8B, 250 words)
#   queue        (c) the same rows through a Redis on the node and conftag-infer's worker loop
#                (bench --through-queue), beside the bare engine (b) in the same call
#   correctness  small f32 model: concurrent vs one-at-a-time vs HF greedy (paged and plain)
#   bench8b      (a) bare mistral.rs, 8B shape bf16; SHAPE=boolq (250/128) or math (150/512)
#   profile8b    flamegraphs of the bare engine at 1 and 64 in flight (needs --features profile)
#   hf8b         (c) HF transformers generate, SHAPE as above, batches 16/64/256
#   e2e8b        (b) conftag-infer pulling shards from a Redis on the node, end to end
#   openai8b     (b') conftag-infer --engine openai against hf_server.py (HF batching) on the node
#   twogpu       one worker on GPU 0, then one per GPU on GPUs 0 and 1, same job size
#   tp2          --tensor-parallel-size 1 vs 2 on a 2-GPU node (needs an nccl build): bench,
#                and no rank process left behind
# Results go to $OUT.
# ENGINE_FLAGS, E2E_FLAGS, HF_BATCHES and BENCH_ROWS are flag lists split on purpose:
# shellcheck disable=SC2086,SC2046
set -uo pipefail
OUT="${OUT:-/tmp/conftag-out}"; mkdir -p "$OUT"
W=/tmp/conftag-gpu; mkdir -p "$W"
G="$PWD/.gpu"
# NCCL (an nccl build links libnccl.so.2) from PyTorch's wheel on the node.
nccl="$(python3 -c 'import site; print(site.getsitepackages()[0])')/nvidia/nccl/lib"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:/usr/local/nvidia/lib64:$G/lib:$nccl"
# Never NVLink multicast on shared hosts (the lent machines' rule; inherited by the ranks).
export NCCL_NVLS_ENABLE=0
export HF_HOME="$W/hf" RUST_LOG="${RUST_LOG:-warn}"
if [ ! -x "$W/conftag-infer" ]; then xz -dc "$G/conftag-infer.xz" >"$W/conftag-infer" && chmod +x "$W/conftag-infer"; fi
infer="$W/conftag-infer"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
t() { /usr/bin/time -f "  [%e s]" "$@"; }
case "${SHAPE:-boolq}" in
  math) PW=150; NT=512 ;;
  *) PW=250; NT=128 ;;
esac
model8b() { [ -d "$W/8b" ] || t python3 deploy/gpu/gen_model.py "$W/8b" 8b bf16 >/dev/null; }

# A Redis on the node, once.
start_redis() {
  local port=$((6400 + RANDOM % 2000))
  [ -n "${REDIS_URL:-}" ] || {
    "$G/redis-server" --port $port --bind 127.0.0.1 --save "" --appendonly no --dir "$W" --daemonize yes >/dev/null
    export REDIS_URL="redis://127.0.0.1:$port"; sleep 0.5; }
}

# A job of $1 BoolQ-like rows of $PW-word prompts for model name $2.
start_job() {
  local rows=$1 name=$2
  start_redis
  python3 - "$rows" "$PW" >"$W/$name.jsonl" <<'PY'
import json, random, sys
random.seed(3)
n, pw = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    words = lambda k: " ".join(f"w{random.randrange(1000)}" for _ in range(k))
    print(json.dumps({"question": words(12), "answer": i % 2 == 0, "passage": words(pw - 30)}))
PY
  "$G/conftag" submit --model "$name" --dataset boolq --split test --data "$W/$name.jsonl" \
    --shard-size 16 --max-tokens "$NT" >/dev/null
}

# Wait until job $1 has every row inferred, then print its throughput since $2.
wait_done() {
  python3 - "$1" "$2" "$G/conftag" "$OUT/status_$1.json" <<'PY' | tee -a "$OUT/summary.txt"
import json, subprocess, sys, time
name, s, conftag, path = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
while True:
    doc = json.loads(subprocess.run([conftag, "status", "--json"], capture_output=True, text=True).stdout)
    j = [j for j in doc["jobs"] if j["model"] == name][0]
    if j["rows_inferred"] >= j["rows"]:
        break
    time.sleep(0.5)
e = time.time()
json.dump(doc, open(path, "w"), indent=1)
print(f"== {name}: {j['rows_inferred']}/{j['rows']} rows, {j['tokens_generated']} tokens in {e - s:.1f} s "
      f"= {j['tokens_generated'] / (e - s):.1f} out tok/s (from submit, workers already loaded)")
PY
}

# Wait until every worker log says the model is loaded (or the worker died).
wait_loaded() {
  for log in "$@"; do
    until grep -q '"model loaded"\|model loaded\|external engine ready' "$log" 2>/dev/null; do
      sleep 1; jobs -r | grep -q . || { echo "worker exited: $(tail -3 "$log")"; return 1; }
    done
  done
}

# Append bench JSON lines ($1) to $OUT/gpu-results.jsonl as {"date","card","shape","engine",…}.
label() {
  [ -s "$1" ] || return 0
  python3 - "$1" "$2" "$3" "$(head -1 "$OUT/gpu.txt" | cut -d, -f1)" >>"$OUT/gpu-results.jsonl" <<'PY'
import datetime, json, sys
path, engine, shape, card = sys.argv[1:5]
for line in open(path):
    r = json.loads(line)
    print(json.dumps({"date": datetime.date.today().isoformat(), "card": card, "shape": shape,
                      "engine": engine, "in_flight": r["in_flight"], "rows": r["rows"],
                      "out_tok_s": r["out_tok_s"], "step_ms": r.get("step_ms")}))
PY
}
# The engine issue's sweep: bare engine, 8B shape bf16, PagedAttention, patched and (with
# MISTRALRS_UNPATCHED=1, the same binary) as published, on the equal 250/128 shape and the
# real mix (deploy/gpu/real-mix.json). Rows: 2 x in flight (4 at 1), so sequences finish and
# new ones join. The step log (MISTRALRS_DEBUG) goes to the .log files.
bench_engine() { # engine-label shape-label in-flight [bench args...]
  local engine=$1 shape=$2 flights=$3; shift 3
  local env=(MISTRALRS_UNPATCHED=0)
  [ "$engine" = mistralrs-published ] && env=(MISTRALRS_UNPATCHED=1)
  [ "$engine" = mistralrs-mixed-prefill ] && env=(MISTRALRS_MIXED_PREFILL=1)
  [ "$engine" = mistralrs-lt-gemm ] && env=(MISTRALRS_LT_GEMM=1)
  [ "$engine" = mistralrs-per-seq-inputs ] && env=(MISTRALRS_PER_SEQ_INPUTS=1)
  echo "== $engine $shape in flight $flights" | tee -a "$OUT/summary.txt"
  env "${env[@]}" MISTRALRS_DEBUG=1 RUST_LOG=warn,mistralrs_core::engine=info timeout "${BENCH_TIMEOUT:-400}" \
    "$infer" --weights "$W/8b" --dtype bf16 ${ENGINE_FLAGS:-} bench --in-flight "$flights" \
    --jsonl "$W/$engine-$shape.jsonl" "$@" 2>>"$OUT/$engine-$shape.log" | tee -a "$OUT/summary.txt"
  label "$W/$engine-$shape.jsonl" "$engine" "$shape"; rm -f "$W/$engine-$shape.jsonl"
}

for step in "$@"; do case "$step" in
patched)
  model8b
  bench_engine mistralrs-patched equal-250-128 "${IN_FLIGHT:-1,16,64,128,256}" --prompt-words 250 --new-tokens 128
  bench_engine mistralrs-patched real-mix "${IN_FLIGHT:-1,16,64,128,256}" --mix deploy/gpu/real-mix.json ;;
ltgemm)
  # mistralrs-quant patch 0003 (linear layers through cuBLAS `matmul`, rows written in place)
  # against the cuBLASLt path it replaces (`MISTRALRS_LT_GEMM=1`), same binary, same rows.
  model8b
  for engine in mistralrs-patched mistralrs-lt-gemm; do
    bench_engine $engine real-mix "${IN_FLIGHT:-128,256}" --mix deploy/gpu/real-mix.json
    bench_engine $engine equal-250-128 "${EQUAL_FLIGHTS:-256}" --prompt-words 250 --new-tokens 128
  done ;;
perseq)
  # mistralrs-core patch 0008 (a decode step's inputs in one upload, last hidden states as one
  # view) against the per-sequence tensors it replaces (`MISTRALRS_PER_SEQ_INPUTS=1`).
  model8b
  for engine in mistralrs-patched mistralrs-per-seq-inputs; do
    bench_engine $engine real-mix "${IN_FLIGHT:-128,256}" --mix deploy/gpu/real-mix.json
    bench_engine $engine equal-250-128 "${EQUAL_FLIGHTS:-256}" --prompt-words 250 --new-tokens 128
  done ;;
mixedprefill)
  # Patch 0007 switched on: prompts of different lengths prefilled together.
  model8b
  bench_engine mistralrs-mixed-prefill real-mix "${IN_FLIGHT:-64,128,256}" --mix deploy/gpu/real-mix.json
  bench_engine mistralrs-mixed-prefill equal-250-128 "${EQUAL_FLIGHTS:-256}" --prompt-words 250 --new-tokens 128
  for env in MISTRALRS_MIXED_PREFILL=0 MISTRALRS_MIXED_PREFILL=1; do
    env $env "$infer" --weights "$W/8b" --dtype bf16 --max-num-seqs 32 self-check --word-prompts --prompts 32 \
      --new-tokens 32 --out "$OUT/selfcheck_8b_$env.json" 2>/dev/null | sed "s/^/8b $env /" | tee -a "$OUT/summary.txt"
  done ;;
queue)
  # (c) conftag-infer pulling the real mix from a Redis on the node: bench --through-queue
  # submits each setting's rows as a job (shards of 32, `conftag submit`'s default) and runs
  # the worker's own loop (leases, look-ahead of one row) on them; (b) the bare engine on the
  # same rows right before, so the ratio is from one call.
  model8b; start_redis
  bench_engine mistralrs-patched real-mix "${IN_FLIGHT:-64,128,256}" --mix deploy/gpu/real-mix.json
  queued=conftag-infer # the engine label of (c) in gpu-results.jsonl
  bench_engine "$queued" real-mix "${IN_FLIGHT:-64,128,256}" --mix deploy/gpu/real-mix.json --through-queue
  bench_engine "$queued" equal-250-128 "${QUEUE_EQUAL_FLIGHTS:-256}" --prompt-words 250 --new-tokens 128 --through-queue ;;
neartie)
  # The bf16 check the float32 reference cannot make: the engine's own top logits in both
  # runs; a difference is a near-tie when both runs' gaps between the two tokens are within
  # twice the largest logit change batching made where the runs agreed (worker-infer
  # src/near_tie.rs).
  for m in ${NEARTIE_MODELS:-small:f32 8b:bf16}; do
    [ -d "$W/${m%%:*}" ] || python3 deploy/gpu/gen_model.py "$W/${m%%:*}" "${m%%:*}" "${m##*:}" >/dev/null
    # NEARTIE_FLAGS: engine flags (e.g. --paged-attn-block-size 16), NEARTIE_TAG: file suffix.
    tag="${m%%:*}${NEARTIE_TAG:-}"
    "$infer" --weights "$W/${m%%:*}" --dtype "${m##*:}" --max-num-seqs 32 ${NEARTIE_FLAGS:-} self-check --word-prompts --prompts 32 \
      --new-tokens "${DIV_TOKENS:-48}" --top-logits "${TOP_LOGITS:-8}" --out "$OUT/neartie_$tag.json" 2>"$OUT/neartie_$tag.log" \
      | sed "s/^/$tag /" | tee -a "$OUT/summary.txt"
  done ;;
ncudecode)
  # Where a decode step at 256 sequences spends its GPU time: two runs of 256 prompts of 250
  # words, NCU_SHORT (2) and NCU_LONG (6) new tokens; the per-kernel difference is
  # NCU_LONG - NCU_SHORT decode steps of 256 sequences (the prefill and warm-up cancel out).
  model8b
  for nt in "${NCU_SHORT:-2}" "${NCU_LONG:-6}"; do
    timeout "${NCU_TIMEOUT:-240}" ncu --clock-control none --launch-count "${NCU_LAUNCHES:-40000}" \
      --metrics gpu__time_duration.sum --print-units base --print-summary per-kernel --csv \
      "$infer" --weights "$W/8b" --dtype bf16 bench --in-flight 256 --rows 256 --prompt-words 250 --new-tokens "$nt" \
      >"$OUT/ncu-decode-$nt.csv" 2>"$OUT/ncu-decode-$nt.log"
  done
  python3 - "$OUT/ncu-decode-${NCU_SHORT:-2}.csv" "$OUT/ncu-decode-${NCU_LONG:-6}.csv" "$(( ${NCU_LONG:-6} - ${NCU_SHORT:-2} ))" <<'PY' | tee -a "$OUT/summary.txt"
import csv, sys
def per_kernel(path):
    rows = [r for r in csv.reader(open(path)) if len(r) > 5]
    head = rows[0]
    col = lambda name: next(i for i, h in enumerate(head) if name.lower() in h.lower())
    k, n, a = col("Kernel Name"), col("Invocations"), col("Average")
    out = {}
    for r in rows[1:]:
        try:
            t, c = float(r[a].replace(",", "")) * int(r[n]), int(r[n])
        except ValueError:
            continue
        name = r[k][:90]
        pt, pc = out.get(name, (0.0, 0))
        out[name] = (pt + t, pc + c)
    return out
short, long_, steps = per_kernel(sys.argv[1]), per_kernel(sys.argv[2]), int(sys.argv[3])
diff = sorted(((long_[k][0] - short.get(k, (0, 0))[0], long_[k][1] - short.get(k, (0, 0))[1], k)
               for k in long_), reverse=True)
total = sum(t for t, _, _ in diff)
print(f"== ncu decode: {total / 1e6 / steps:.2f} ms GPU time per step at 256 sequences ({steps} steps)")
for t, c, name in diff[:20]:
    print(f"{t / 1e6 / steps:9.3f} ms {c // steps:6d}x per step  {name}")
PY
  ;;
ncuprefill)
  # Where a single prompt's prefill spends its GPU time (the real mix prefills one prompt at
  # a time, ~30 ms each): every kernel of two 250-word prefills (1 new token each), summed
  # per kernel name; compare the sum with the step log's wall time per prefill.
  # NCU_FLIGHT=64 NCU_ROWS=64: one prefill of 64 prompts at once instead.
  model8b
  MISTRALRS_DEBUG=1 RUST_LOG=warn,mistralrs_core::engine=info timeout "${NCU_TIMEOUT:-200}" \
    ncu --clock-control none --launch-count "${NCU_LAUNCHES:-3000}" --metrics gpu__time_duration.sum --print-units base --print-summary per-kernel --csv \
    "$infer" --weights "$W/8b" --dtype bf16 bench --in-flight "${NCU_FLIGHT:-1}" --rows "${NCU_ROWS:-2}" --prompt-words 250 --new-tokens 1 \
    >"$OUT/ncu-prefill.csv" 2>"$OUT/ncu-prefill.log"
  python3 - "$OUT/ncu-prefill.csv" <<'PY' | tee -a "$OUT/summary.txt"
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 5]
head = rows[0]; body = rows[1:]
def col(name):
    return next(i for i, h in enumerate(head) if name.lower() in h.lower())
try:
    k, n, a = col("Kernel Name"), col("Invocations"), col("Average")
except StopIteration:
    print("ncu: unexpected header", head); sys.exit()
tot = []
for r in body:
    try:
        tot.append((float(r[a].replace(",", "")) * int(r[n]), int(r[n]), r[k][:90]))
    except ValueError:
        pass
tot.sort(reverse=True)
print(f"== ncu: {sum(t for t, _, _ in tot) / 1e6:.2f} ms GPU time in {sum(c for _, c, _ in tot)} kernels (ncu --print-units base: ns)")
for t, c, name in tot[:25]:
    print(f"{t / 1e6:9.3f} ms {c:6d}x {name}")
PY
  ;;
published)
  model8b
  # As published the engine preempts and re-prefills by length: 64 in flight ran at ~114
  # tok/s, so rows = in flight here and the sweep stops at 64 (128/256 would take minutes).
  for c in ${PUB_FLIGHTS:-1 16 64}; do
    bench_engine mistralrs-published equal-250-128 "$c" --rows "$c" --prompt-words 250 --new-tokens 128
  done
  bench_engine mistralrs-published real-mix "${PUB_MIX_FLIGHTS:-16}" --rows "${PUB_MIX_ROWS:-32}" --mix deploy/gpu/real-mix.json ;;
divergence)
  # Concurrent vs one-at-a-time greedy answers (32 word prompts of different lengths, all at
  # once) on the small f32 model and the 8B shape in bf16, and for every answer that differs,
  # the float32 reference's logit gap at the first differing token (deploy/gpu/divergence.py).
  [ -d "$W/small" ] || python3 deploy/gpu/gen_model.py "$W/small" small f32 >/dev/null
  model8b
  for m in small:f32 8b:bf16; do
    dir="$W/${m%%:*}"; dt="${m##*:}"
    for env in ${DIV_VARIANTS:-patched published}; do
      e=(); [ $env = published ] && e=(MISTRALRS_UNPATCHED=1)
      env "${e[@]}" "$infer" --weights "$dir" --dtype "$dt" --max-num-seqs 32 self-check --word-prompts --prompts 32 \
        --new-tokens "${DIV_TOKENS:-48}" --out "$OUT/selfcheck_${m%%:*}_$env.json" 2>"$OUT/selfcheck_${m%%:*}_$env.log" \
        | sed "s/^/${m%%:*} $env /" | tee -a "$OUT/summary.txt"
    done
    python3 deploy/gpu/divergence.py "$dir" $(for v in ${DIV_VARIANTS:-patched published}; do echo "$OUT/selfcheck_${m%%:*}_$v.json"; done) \
      2>"$OUT/divergence_${m%%:*}.err" | tee -a "$OUT/summary.txt"
  done ;;
hfmix)
  model8b
  echo "== (d) HF transformers generate, bf16, equal 250/128 and the real mix" | tee -a "$OUT/summary.txt"
  # HF_SHAPES="mix" skips the equal shape.
  [[ " ${HF_SHAPES:-equal mix} " == *" equal "* ]] &&
    python3 deploy/gpu/hf_bench.py "$W/8b" 250 128 ${HF_BATCHES:-16 64 256} 2>>"$OUT/hf.jsonl" | tee -a "$OUT/summary.txt"
  [[ " ${HF_SHAPES:-equal mix} " == *" mix "* ]] &&
    python3 deploy/gpu/hf_bench.py "$W/8b" --mix deploy/gpu/real-mix.json ${HF_BATCHES:-16 64 256} 2>>"$OUT/hf.jsonl" | tee -a "$OUT/summary.txt"
  python3 - "$OUT/hf.jsonl" "$(head -1 "$OUT/gpu.txt" | cut -d, -f1)" >>"$OUT/gpu-results.jsonl" <<'PY'
import datetime, json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line)
        r = {"date": datetime.date.today().isoformat(), "card": sys.argv[2], **r}
        print(json.dumps(r))
PY
  ;;
correctness)
  [ -d "$W/small" ] || python3 deploy/gpu/gen_model.py "$W/small" small f32 >/dev/null
  echo "== correctness: small f32 model, 32 word prompts, 48 new tokens"
  for mode in paged plain; do
    flag=""; [ "$mode" = paged ] && flag="--paged-attn"
    t "$infer" --weights "$W/small" --dtype f32 --max-num-seqs 32 $flag self-check --word-prompts --prompts 32 --new-tokens 48 --out "$OUT/selfcheck_$mode.json" 2>"$OUT/selfcheck_$mode.log" | sed "s/^/$mode /" | tee -a "$OUT/summary.txt"
  done
  python3 deploy/gpu/hf_reference.py "$W/small" 48 "$OUT/selfcheck_paged.json" "$OUT/selfcheck_plain.json" 2>"$OUT/hf_reference.log" | tee -a "$OUT/summary.txt" ;;
bench8b)
  model8b
  echo "== (a) bare mistral.rs, 8B shape bf16, ${SHAPE:-boolq}-like $PW prompt / $NT new ${ENGINE_FLAGS:-}" | tee -a "$OUT/summary.txt"
  t "$infer" --weights "$W/8b" --dtype bf16 ${ENGINE_FLAGS:-} bench --in-flight "${IN_FLIGHT:-1,16,64}" ${BENCH_ROWS:+--rows $BENCH_ROWS} --prompt-words $PW --new-tokens $NT 2>"$OUT/bench8b_${SHAPE:-boolq}.log" | tee -a "$OUT/summary.txt"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader | tee -a "$OUT/summary.txt" ;;
profile8b)
  model8b
  echo "== host profile of the bare engine, 8B bf16, $PW/64, 1 and 64 in flight" | tee -a "$OUT/summary.txt"
  "$infer" --weights "$W/8b" --dtype bf16 --max-num-seqs 64 ${ENGINE_FLAGS:-} bench --in-flight 1,64 --rows 64 --prompt-words $PW --new-tokens 64 --profile "$OUT" 2>"$OUT/profile8b.log" | tee -a "$OUT/summary.txt" ;;
hf8b)
  model8b
  echo "== (c) HF transformers generate, bf16, $PW/$NT" | tee -a "$OUT/summary.txt"
  python3 deploy/gpu/hf_bench.py "$W/8b" $PW $NT ${HF_BATCHES:-16 64 256} 2>/dev/null | tee -a "$OUT/summary.txt" ;;
e2e8b)
  model8b
  name="e2e-${SHAPE:-boolq}"
  start_redis
  RUST_LOG=info "$infer" --model "$name" --weights "$W/8b" --dtype bf16 \
    ${E2E_FLAGS:---concurrency 64 --max-num-seqs 64 --lease-secs 15} --log-format json 2>"$OUT/$name.log" &
  wait_loaded "$OUT/$name.log" && s=$(date +%s.%N) && start_job "${E2E_ROWS:-64}" "$name" && wait_done "$name" "$s"
  # What an operator sees: the worker's rate against its GPU's decode ceiling.
  sleep "${STATUS_AFTER:-0}"; "$G/conftag" status | tee -a "$OUT/summary.txt"
  kill $(jobs -p) 2>/dev/null; wait ;;
openai8b)
  model8b
  python3 deploy/gpu/hf_server.py "$W/8b" --port 8011 --served-name hf8b --max-batch "${SERVER_BATCH:-256}" >"$OUT/hf_server.log" 2>&1 &
  srv=$!
  until curl -sf localhost:8011/v1/models >/dev/null; do sleep 1; kill -0 $srv 2>/dev/null || { tail "$OUT/hf_server.log"; break; }; done
  name="openai-${SHAPE:-boolq}"; s=$(date +%s.%N); start_job "${E2E_ROWS:-512}" "$name"
  RUST_LOG=info "$infer" --model "$name" --engine openai --engine-url http://127.0.0.1:8011/v1 --engine-model hf8b \
    --concurrency "${SERVER_BATCH:-256}" --exit-when-done --log-format json 2>"$OUT/$name.log"
  wait_done "$name" "$s"; curl -s localhost:8011/stats | tee -a "$OUT/summary.txt"; echo
  kill $srv ;;
twogpu)
  model8b
  start_redis
  for n in 1 2; do
    name="gpus$n"; logs=()
    for g in $(seq 0 $((n - 1))); do
      CUDA_VISIBLE_DEVICES=$g RUST_LOG=info "$infer" --model "$name" --weights "$W/8b" --dtype bf16 \
        ${E2E_FLAGS:---concurrency 64 --max-num-seqs 64} --worker-id "gpu$g" --log-format json 2>"$OUT/$name-$g.log" &
      logs+=("$OUT/$name-$g.log")
    done
    wait_loaded "${logs[@]}" && s=$(date +%s.%N) && start_job "${E2E_ROWS:-128}" "$name" && wait_done "$name" "$s"
    kill $(jobs -p) 2>/dev/null; wait
  done ;;
tp2)
  model8b
  echo "== tensor parallelism, 8B shape bf16, $PW/$NT, both GPUs visible" | tee -a "$OUT/summary.txt"
  # tp 1: one GPU although two are visible (the worker pins one; mistral.rs alone spreads the
  # layers and failed). tp 2: one request at a time (the worker's default under TP).
  for tp in 1 2; do
    flights=1,16; [ $tp = 2 ] && flights=1
    t timeout 240 "$infer" --weights "$W/8b" --dtype bf16 --tensor-parallel-size $tp bench --in-flight "$flights" \
      --rows "${BENCH_ROWS:-16}" --prompt-words $PW --new-tokens $NT 2>"$OUT/tp${tp}_bench.log" | sed "s/^/tp$tp /" | tee -a "$OUT/summary.txt"
    sleep 3; echo "tp$tp conftag-infer processes left after it exited: $(pgrep -c -f "$W/conftag-infer" || true)" | tee -a "$OUT/summary.txt"
    pkill -9 -f "$W/conftag-infer"
  done ;;
*) echo "unknown step $step" ;;
esac; done
echo "== summary"; cat "$OUT/summary.txt"
