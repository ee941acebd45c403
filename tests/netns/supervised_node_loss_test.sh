#!/usr/bin/env bash
# Losing a node under the supervisor: a job of two hosts x two ranks (tp=2 inside a host, dp=2 across) runs
# under scripts/supervise.sh; mid-run the second host loses power (its link goes down and every process on it
# is killed). The supervisor must log the failure with the unreachable host, restart on the first host alone
# (2 ranks), where `--resume auto` takes dp=1 with twice the micro-batches, and the job must finish with the
# losses of an uninterrupted dp=2 run within fp32 rounding. Skipped (exit 77) where namespaces cannot be made.
# Usage: supervised_node_loss_test.sh TESSERA_BINARY SOURCE_DIR
set -u
tessera=$1
source_dir=$2
source "$(dirname "$0")/lib.sh"
write_job "$work/job.textproto" 60
lost=$("$cluster" addr 2)

"$source_dir/scripts/supervise.sh" --max-restarts 2 --hosts "$("$cluster" hosts 2)" --probe "$cluster reachable" \
  --restart-delay 0 --log "$work/supervise.log" -- "$cluster" mpirun --oversubscribe "$tessera" train \
  --config "$work/job.textproto" --run-dir "$work/run" >"$work/out.txt" 2>&1 &
supervisor=$!
wait_for_steps "$work/run" 10 || { cat "$work/out.txt"; exit 1; }
"$cluster" kill 2
killed_at_step=$(wc -l <"$work/run/metrics.jsonl")
wait "$supervisor"; code=$?
grep -v "^step" "$work/out.txt" | grep -v "^\s*$" | grep -v "^\[vm" | head -40
[[ $code -eq 0 ]] || { echo "FAIL: the supervisor exited $code"; exit 1; }
grep -q "the job failed after .*unreachable: $lost" "$work/supervise.log" ||
  { echo "FAIL: the restart log does not name the lost host $lost"; exit 1; }
grep -q "start 2 of at most 3: 2 ranks on $("$cluster" addr 1):2" "$work/supervise.log" ||
  { echo "FAIL: not restarted on the first host alone"; exit 1; }
grep -q "elastic resume: .* dp=2 -> 1, 1 micro-batch of 4 -> 2 micro-batches of 4" "$work/out.txt" ||
  { echo "FAIL: the restarted job did not take dp=1 with two micro-batches"; exit 1; }
grep -q "^done: " "$work/out.txt" || { echo "FAIL: the restarted job did not finish"; exit 1; }

mpirun --oversubscribe -np 4 "$tessera" train --config "$work/job.textproto" --run-dir "$work/reference" \
  >"$work/reference.txt" 2>&1 || { cat "$work/reference.txt"; echo "FAIL: reference run"; exit 1; }
compare_losses "$work/reference" "$work/run" 1e-5 || exit 1
echo "PASS: node 2 killed at step $killed_at_step; restarted on node 1 with dp=1, losses equal to the uninterrupted run's"
