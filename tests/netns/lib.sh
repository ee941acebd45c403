# Shared by the multi-node tests (sourced): the cluster, a small job, and waiting for training to reach a step.
# The caller sets `tessera` (the binary) before sourcing; the cluster is removed when the test exits.
# shellcheck shell=bash
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cluster="$here/cluster.sh"
"$cluster" check || exit 77
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
work=$(mktemp -d)
trap '"$cluster" down; rm -rf "$work"' EXIT
"$cluster" up 2

# write_job FILE STEPS: tp=2 within a node, dp left to the world (2 across two nodes); a constant learning rate,
# so that a run stopped early and continued trains exactly as one run of all the steps.
write_job() {
  cat >"$1" <<JOB
model { vocab_size: 64 n_layer: 2 n_head: 2 n_embd: 16 max_seq_len: 16 }
train { steps: $2 global_batch: 8 seq_len: 16 threads: 1 }
optimizer { schedule: CONSTANT }
parallel { tp: 2 timeout_s: 3 }
data { mock: true }
checkpoint { every_steps: 4 }
logging { log_every: 1 }
JOB
}

# wait_for_steps RUN_DIR N [SECONDS]: until metrics.jsonl has N lines (exit 1 after SECONDS, default 60).
wait_for_steps() {
  local deadline=$((SECONDS + ${3:-60}))
  while [[ $(cat "$1/metrics.jsonl" 2>/dev/null | wc -l) -lt $2 ]]; do
    [[ $SECONDS -lt $deadline ]] || { echo "FAIL: $1 did not reach step $2"; return 1; }
    sleep 0.1
  done
}

# tessera_pids NODE: the tessera processes running on node NODE.
tessera_pids() {
  local pid
  for pid in $(ip netns pids "$("$cluster" name "$1")" 2>/dev/null); do
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == tessera ]] && echo "$pid"
  done
  return 0
}

now() { date +%s.%N; }
seconds_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# compare_losses A B TOLERANCE: every step of A's metrics.jsonl in B with a relative loss difference <= TOLERANCE.
compare_losses() {
  python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" "$3" <<'PY'
import json, sys
a = {r["step"]: r["loss"] for r in map(json.loads, open(sys.argv[1]))}
b = {r["step"]: r["loss"] for r in map(json.loads, open(sys.argv[2]))}
tol = float(sys.argv[3])
if sorted(a) != sorted(b):
    sys.exit(f"FAIL: steps differ: {sorted(a)} vs {sorted(b)}")
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in a)
print(f"{len(a)} steps, largest relative loss difference {worst:.3g} (tolerance {tol:g})")
sys.exit(0 if worst <= tol else "FAIL: losses differ")
PY
}
