#!/usr/bin/env bash
# A config error on one rank only must stop the job with that rank's message, not leave the other ranks
# waiting for it: rank 0 reads a valid job and rank 1 a copy with an unknown field (as when nodes read
# different copies of a job file), under one mpirun (MPMD). Expects a non-zero exit well before the job's
# 120 s collective timeout, with rank 1's message. And when every rank has the same config error, it is
# reported once (by rank 0) and the job exits at once.
# Usage: rank_config_error_test.sh TESSERA_BINARY
set -u
tessera=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/good.textproto" <<JOB
model { vocab_size: 64 n_layer: 1 n_head: 2 n_embd: 16 max_seq_len: 16 }
train { steps: 2 global_batch: 4 seq_len: 16 threads: 1 }
parallel { dp: 2 timeout_s: 120 }
data { mock: true }
logging { log_every: 1 }
JOB
sed 's/data { mock: true }/data { mock: true shuffle_seed: 3 }/' "$work/good.textproto" > "$work/bad.textproto"
start=$(date +%s)
timeout 100 mpirun --oversubscribe -np 1 "$tessera" train --config "$work/good.textproto" --run-dir "$work/run1" \
  : -np 1 "$tessera" train --config "$work/bad.textproto" --run-dir "$work/run1" > "$work/one.txt" 2>&1
rc=$?
elapsed=$(( $(date +%s) - start ))
cat "$work/one.txt"
if [[ $rc -eq 0 || $rc -eq 124 ]]; then echo "FAIL: exit code $rc after ${elapsed} s"; exit 1; fi
if (( elapsed > 60 )); then echo "FAIL: took ${elapsed} s"; exit 1; fi
if ! grep -q "config error on rank 1/2 .*on this rank only .*unknown field 'shuffle_seed'" "$work/one.txt"; then
  echo "FAIL: rank 1's config error is not reported"; exit 1
fi
start=$(date +%s)
mpirun --oversubscribe -np 2 "$tessera" train --config "$work/bad.textproto" --run-dir "$work/run2" > "$work/all.txt" 2>&1
rc=$?
elapsed=$(( $(date +%s) - start ))
cat "$work/all.txt"
if [[ $rc -eq 0 ]]; then echo "FAIL: the shared config error exited 0"; exit 1; fi
if (( elapsed > 8 )); then echo "FAIL: the shared config error took ${elapsed} s"; exit 1; fi
if [[ $(grep -c "unknown field 'shuffle_seed'" "$work/all.txt") -ne 1 ]]; then
  echo "FAIL: the shared config error is not reported exactly once"; exit 1
fi
echo "PASS: one rank's config error stopped the job, a shared one was reported once"
