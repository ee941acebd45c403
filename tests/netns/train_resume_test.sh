#!/usr/bin/env bash
# Two hosts (network namespaces) of two ranks each: tensor parallelism inside a host, data parallelism across
# the two over TCP. The job trains 8 steps and stops, then a second job resumes its checkpoint and trains to
# step 12; the losses must equal, bit for bit, those of one uninterrupted 12-step run of the same layout on a
# single host. Skipped (exit 77) where network namespaces cannot be made.
# Usage: train_resume_test.sh TESSERA_BINARY
set -u
tessera=$1
source "$(dirname "$0")/lib.sh"
hosts=$("$cluster" hosts 2)
write_job "$work/job.textproto" 12

"$cluster" mpirun --oversubscribe -np 4 --host "$hosts" "$tessera" train --config "$work/job.textproto" \
  --run-dir "$work/run" --set train.steps=8 >"$work/first.txt" 2>&1 || { cat "$work/first.txt"; echo "FAIL: first job"; exit 1; }
grep -q "tp=2 pp=1 dp=2" "$work/first.txt" || { cat "$work/first.txt"; echo "FAIL: not tp=2 x dp=2"; exit 1; }
"$cluster" mpirun --oversubscribe -np 4 --host "$hosts" "$tessera" train --config "$work/job.textproto" \
  --run-dir "$work/run" --resume auto >"$work/second.txt" 2>&1 || { cat "$work/second.txt"; echo "FAIL: resumed job"; exit 1; }
grep -q "resumed from .*step_00000008" "$work/second.txt" || { cat "$work/second.txt"; echo "FAIL: did not resume at step 8"; exit 1; }
# Which hosts the ranks ran on, from their own host names.
for i in 1 2; do
  grep -q "$("$cluster" name $i)" <("$cluster" mpirun --oversubscribe -np 4 --host "$hosts" hostname) ||
    { echo "FAIL: no rank ran on node $i"; exit 1; }
done

mpirun --oversubscribe -np 4 "$tessera" train --config "$work/job.textproto" --run-dir "$work/reference" \
  >"$work/reference.txt" 2>&1 || { cat "$work/reference.txt"; echo "FAIL: reference run"; exit 1; }
compare_losses "$work/reference" "$work/run" 0 || exit 1
echo "PASS: 2 hosts x 2 ranks trained 8 steps, resumed to 12, losses equal to one run on one host"
