#!/usr/bin/env bash
# Checkpoint benchmark (not a test): GPT-2 small (124M parameters, 1.49 GB of weights + AdamW moments) on
# generated tokens, saving every few steps, synchronously and asynchronously, on 1 rank and on 2 (tp=2), then
# resuming. Prints the disk's direct-write bandwidth (dd) for comparison and each save's log line: bytes,
# write time and bandwidth, and how long the training loop was blocked.
# Usage: scripts/bench-checkpoints.sh [DIR]   (DIR on the disk to measure; default runs/bench-checkpoints)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-runs/bench-checkpoints}
mkdir -p "$dir"
tessera=build/tessera
[[ -x $tessera ]] || tessera=build/launcher/tessera
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=PASSIVE

echo "== disk: dd 1 GiB, O_DIRECT"
dd if=/dev/zero of="$dir/dd.bin" bs=1M count=1024 oflag=direct 2>&1 | tail -1
rm -f "$dir/dd.bin"

common=(--config configs/gpt2-124m.textproto --set optimizer.warmup_steps=1 --set train.global_batch=1
        --set train.seq_len=64 --set checkpoint.keep_last=1 --set logging.log_every=1)
run() {  # NAME RANKS ARGS...
  local name=$1 ranks=$2
  shift 2
  echo "== $name"
  rm -rf "${dir:?}/$name"
  mpirun --oversubscribe -np "$ranks" "$tessera" train "${common[@]}" --run-dir "$dir/$name" "$@" 2>&1 |
    grep -E "^(step|checkpoint|resumed)"
}
run sync 1 --set train.steps=4 --set checkpoint.every_steps=1
run async 1 --set train.steps=9 --set checkpoint.every_steps=3 --set checkpoint.async=true
run sync-tp2 2 --set parallel.tp=2 --set train.steps=4 --set checkpoint.every_steps=1
run async-tp2 2 --set parallel.tp=2 --set train.steps=9 --set checkpoint.every_steps=3 --set checkpoint.async=true
echo "== load: resume the 1-rank checkpoint on 1 rank and in tp=2"
mpirun -np 1 "$tessera" train "${common[@]}" --run-dir "$dir/sync" --set train.steps=5 \
  --set checkpoint.save_on_exit=false --resume latest 2>&1 | grep -E "^resumed"
mpirun --oversubscribe -np 2 "$tessera" train "${common[@]}" --run-dir "$dir/sync" --set train.steps=5 \
  --set parallel.tp=2 --set checkpoint.save_on_exit=false --resume latest 2>&1 | grep -E "^resumed"
du -sh "$dir"/sync/checkpoints/step_*
