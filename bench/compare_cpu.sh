#!/usr/bin/env bash
# Side-by-side CPU measurements for docs/performance.md: Tessera against PyTorch (Debian's python3-torch) on
# the same shapes, and data-parallel weak scaling (dp=2, one thread per rank, against dp=1 with one thread).
# Runs alternate, so both see the same machine state; compare the ratios, not the absolute numbers.
# Usage: bench/compare_cpu.sh [ROUNDS]   (from the repository root, after scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
export OMP_WAIT_POLICY=PASSIVE OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tessera=build/tessera
pick() { grep -E "tokens/s|hidden|blocked" | sed 's/^ */    /'; }

echo "== machine: $(nproc) cores, $(uptime | sed 's/.*load/load/')"
for round in $(seq 1 "$rounds"); do
  echo "== round $round"
  for shape in tiny gpt2-124m; do
    steps=10; [[ $shape == gpt2-124m ]] && steps=3
    echo "  tessera $shape (1 rank, 2 threads):"
    $tessera bench --shape $shape --steps $steps --set train.threads=2 | pick
    if [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c "import torch" 2>/dev/null; then
      echo "  pytorch $shape (2 threads):"
      /usr/bin/python3 bench/pytorch_baseline.py --shape $shape --steps $steps --threads 2 | pick
    fi
  done
  for shape in tiny gpt2-124m; do
    steps=10; batch=16; [[ $shape == gpt2-124m ]] && steps=3 && batch=4
    echo "  weak scaling $shape: dp=1 (1 thread, batch $batch) vs dp=2 (1 thread per rank, batch $((2 * batch)))"
    $tessera bench --shape $shape --steps $steps --set train.threads=1 --set train.global_batch=$batch | pick
    mpirun --oversubscribe -np 2 $tessera bench --shape $shape --steps $steps --set train.threads=1 \
      --set train.global_batch=$((2 * batch)) --set parallel.dp=2 | pick
  done
done
