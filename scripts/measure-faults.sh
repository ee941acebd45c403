#!/usr/bin/env bash
# Measures how long faults take to end a training job, and a requeue to train again (docs/reliability.md):
#   killed  - SIGKILL one rank of a 2-rank job on one host: seconds until mpirun exits
#   stopped - SIGSTOP one rank of a 2-rank job on one host: seconds until mpirun exits
#   cut     - cut one host's link in a 2-host x 2-rank job (tests/netns/cluster.sh; root, skipped without
#             network namespaces): seconds until the other host's ranks end, and until mpirun exits
#   requeue - start `train --resume auto` on a run with a checkpoint: seconds until its first new step is logged
# Each is repeated TRIALS times (default 5); prints min / median / max. parallel.timeout_s is TIMEOUT (default 3).
# Usage: scripts/measure-faults.sh [TESSERA_BINARY] [TRIALS] [TIMEOUT]
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
tessera=$(readlink -f "${1:-$root/build/tessera}")
trials=${2:-5}
timeout_s=${3:-3}
cluster="$root/tests/netns/cluster.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
work=$(mktemp -d)
netns=0
cleanup() { [[ $netns -eq 1 ]] && "$cluster" down; rm -rf "$work"; }
trap cleanup EXIT

cat >"$work/job.textproto" <<JOB
model { vocab_size: 64 n_layer: 2 n_head: 2 n_embd: 16 max_seq_len: 16 }
train { steps: 100000 global_batch: 8 seq_len: 16 threads: 1 }
parallel { timeout_s: $timeout_s }
data { mock: true }
checkpoint { every_steps: 0 }
logging { log_every: 1000 }
JOB

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
lines() { cat "$1" 2>/dev/null | wc -l; }
wait_lines() {  # FILE N: until FILE has N lines (60 s at most)
  local deadline=$((SECONDS + 60))
  while [[ $(lines "$1") -lt $2 && $SECONDS -lt $deadline ]]; do sleep 0.02; done
}
summary() {  # NAME VALUES...
  local name=$1
  shift
  printf '%s\n' "$@" | sort -g | awk -v name="$name" '{ v[NR] = $1 } END {
    if (NR == 0) { printf "%-34s no trials\n", name; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%-34s min %6.2f  median %6.2f  max %6.2f  (%d trials)\n", name, v[1], m, v[NR], NR }'
}
rank_pid() {  # PATTERN RANK: the tessera process of that world rank whose command line holds PATTERN
  local pid
  for pid in $(pgrep -f "$1"); do
    [[ "$(cat /proc/$pid/comm 2>/dev/null)" == tessera ]] || continue
    grep -qz "^OMPI_COMM_WORLD_RANK=$2$" /proc/$pid/environ 2>/dev/null && echo "$pid" && return
  done
}

# A 2-rank dp job on this host; SIGNAL to rank 1 once it trains; seconds until mpirun exits.
one_host_fault() {
  local signal=$1 run=$work/run-$RANDOM start pid launcher
  mpirun --oversubscribe -np 2 "$tessera" train --config "$work/job.textproto" --run-dir "$run" \
    >"$run.txt" 2>&1 &
  launcher=$!
  wait_lines "$run/metrics.jsonl" 3
  pid=$(rank_pid "$run" 1)
  start=$(now)
  kill -"$signal" "$pid"
  wait "$launcher"
  since "$start"
  kill -KILL "$pid" 2>/dev/null  # a stopped rank that mpirun left behind
  rm -rf "$run" "$run.txt"
}

killed=() stopped=() cut_ranks=() cut_job=() requeue=()
for _ in $(seq 1 "$trials"); do killed+=("$(one_host_fault KILL)"); done
for _ in $(seq 1 "$trials"); do stopped+=("$(one_host_fault STOP)"); done

# Requeue: a run with a checkpoint at step 4, continued with --resume auto; until its first new step's line.
for _ in $(seq 1 "$trials"); do
  run=$work/requeue-$RANDOM
  mpirun --oversubscribe -np 2 "$tessera" train --config "$work/job.textproto" --run-dir "$run" \
    --set train.steps=4 >/dev/null 2>&1
  start=$(now)
  mpirun --oversubscribe -np 2 "$tessera" train --config "$work/job.textproto" --run-dir "$run" \
    --set train.steps=5 --resume auto >/dev/null 2>&1 &
  wait_lines "$run/metrics.jsonl" 5
  requeue+=("$(since "$start")")
  wait
  rm -rf "$run"
done

if "$cluster" check >/dev/null; then
  netns=1
  "$cluster" up 2
  for _ in $(seq 1 "$trials"); do
    run=$work/cut-$RANDOM
    "$cluster" mpirun --oversubscribe -np 4 --host "$("$cluster" hosts 2)" "$tessera" train \
      --config "$work/job.textproto" --run-dir "$run" --set parallel.tp=2 >/dev/null 2>&1 &
    launcher=$!
    wait_lines "$run/metrics.jsonl" 3
    "$cluster" cut 2
    start=$(now) ranks=""
    while kill -0 "$launcher" 2>/dev/null; do
      if [[ -z "$ranks" ]]; then
        alive=0
        for pid in $(ip netns pids "$("$cluster" name 1)"); do
          [[ "$(cat /proc/$pid/comm 2>/dev/null)" == tessera ]] && alive=1
        done
        [[ $alive -eq 0 ]] && ranks=$(since "$start")
      fi
      sleep 0.02
    done
    cut_job+=("$(since "$start")")
    cut_ranks+=("${ranks:-$(since "$start")}")
    "$cluster" up 2  # a fresh cluster: the cut node's processes are gone with it
    rm -rf "$run"
  done
else
  "$cluster" check
fi

echo "parallel.timeout_s = $timeout_s; seconds from the fault (or the requeue) to:"
summary "killed rank -> job exit" "${killed[@]}"
summary "stopped rank (SIGSTOP) -> job exit" "${stopped[@]}"
summary "cut link -> surviving ranks end" "${cut_ranks[@]}"
summary "cut link -> job exit" "${cut_job[@]}"
summary "requeue -> first new step" "${requeue[@]}"
