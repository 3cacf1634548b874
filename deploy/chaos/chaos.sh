#!/usr/bin/env bash
# The long chaos run: the chaos suite (worker-infer/tests/chaos.rs) with more rounds, longer
# Redis outages and more rows than the bounded run in `cargo test --workspace`.
#
#   deploy/chaos/chaos.sh                 # 30 rounds, 30 s outages, 2400 rows per dataset
#   CONFTAG_CHAOS_SEED=123 deploy/chaos/chaos.sh   # replay a run
#   CHAOS_PROFILE=release deploy/chaos/chaos.sh    # release build (slow to build: ~14 min)
#
# Every setting can be overridden: CONFTAG_CHAOS_ROUNDS, CONFTAG_CHAOS_OUTAGE_SECS,
# CONFTAG_CHAOS_ROWS, CONFTAG_CHAOS_SEED (default: fresh, printed). The summary line
# (`chaos summary: …`) is what docs/reliability.md records. Needs redis-server on the PATH.
# CONFTAG_INFER_BIN=PATH runs another conftag-infer (a release build, or a private copy: a
# target directory shared with other checkouts can have its binaries rebuilt from their
# sources while a long run is going).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/conftag-target}"
export CONFTAG_CHAOS_ROUNDS="${CONFTAG_CHAOS_ROUNDS:-30}"
export CONFTAG_CHAOS_OUTAGE_SECS="${CONFTAG_CHAOS_OUTAGE_SECS:-30}"
export CONFTAG_CHAOS_ROWS="${CONFTAG_CHAOS_ROWS:-2400}"
profile=()
if [[ "${CHAOS_PROFILE:-debug}" == release ]]; then
  profile=(--release)
fi
command -v redis-server >/dev/null || { echo "chaos.sh: redis-server is not on the PATH" >&2; exit 1; }
log="${CHAOS_LOG:-${TMPDIR:-/tmp}/conftag-chaos-$(date +%Y%m%d-%H%M%S).log}"
echo "chaos.sh: rounds=$CONFTAG_CHAOS_ROUNDS outage=${CONFTAG_CHAOS_OUTAGE_SECS}s rows/dataset=$CONFTAG_CHAOS_ROWS profile=${CHAOS_PROFILE:-debug} log=$log"
start=$(date +%s)
set +e
cargo test "${profile[@]}" -p worker-infer --test chaos -- --nocapture 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
echo "chaos.sh: exit $status after $(( $(date +%s) - start )) s (build included); machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
grep '^chaos summary:' "$log" || true
exit "$status"
