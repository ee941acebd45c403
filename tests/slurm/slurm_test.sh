#!/usr/bin/env bash
# Tessera under a real Slurm (the one-machine cluster of tests/slurm/slurm_cluster.sh, started by the CTest
# fixture slurm_cluster_up), started the ways cluster users start it:
#   srun_pmix          srun -n 4 --mpi=pmix --gpus-per-task=1 tessera train (tp=2 dp=2): finishes, and its first
#                      line says slurm srun with the job, step, task and node counts and the GPU Slurm bound
#   salloc_mpirun      salloc -n 4 mpirun tessera train: Open MPI inside the allocation, detected as mpirun
#   srun_without_pmix  srun -n 2 --mpi=none tessera train: refused with exit 2 and what to do, before MPI starts
#   sbatch             sbatch --wait scripts/slurm/train.sbatch (the job script users copy): completes
#   requeue            the job script signalled like its time-limit warning (scancel --signal=USR1) after its
#                      first checkpoint: tessera saves and exits 3, the script requeues the job, and the second
#                      start (same job id) resumes from that checkpoint and finishes; the job ends COMPLETED
# Usage: slurm_test.sh MODE TESSERA_BINARY CLUSTER_DIR SOURCE_DIR. Exit 77 (skip) without root or Slurm.
set -uo pipefail
mode=$1 tessera=$2 cluster=$3 source=$4
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/slurm_cluster.sh" check || exit $?
if [[ ! -f $cluster/env ]]; then echo "FAIL: no cluster in $cluster (the fixture test slurm_cluster_up starts it)"; exit 1; fi
# shellcheck disable=SC1091
source "$cluster/env"
work=$cluster/runs/$mode
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1

fail() {
  echo "FAIL: $*"
  for f in out.txt run/logs/*.out tessera-*.out; do [[ -f $f ]] && { echo "--- $f"; tail -n 40 "$f"; }; done
  exit 1
}

# A tiny GPT (mock data) for 4 ranks as tp=2 x dp=2: STEPS steps, a checkpoint every EVERY.
write_job() {
  cat >job.textproto <<JOB
model { vocab_size: 64 n_layer: 2 n_head: 2 n_embd: 16 max_seq_len: 16 }
train { steps: $1 global_batch: 4 seq_len: 16 threads: 1 }
parallel { tp: 2 dp: 2 }
data { mock: true }
logging { log_every: 50 }
checkpoint { every_steps: $2 }
JOB
}

# The state of job $1 as Slurm reports it (COMPLETED, FAILED, RUNNING, PENDING, ...).
job_state() { scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }

# Waits up to $2 seconds for job $1 to end; prints its final state.
wait_job() {
  local state=""
  for _ in $(seq 1 $(($2 * 2))); do
    state=$(job_state "$1")
    case $state in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY) break ;; esac
    sleep 0.5
  done
  echo "$state"
}

case $mode in
  srun_pmix)
    write_job 6 3
    timeout 90 srun -n 4 --mpi=pmix --gpus-per-task=1 "$tessera" train --config job.textproto --run-dir run \
      >out.txt 2>&1
    code=$?
    [[ $code -eq 0 ]] || fail "srun exited $code"
    first=$(head -n 1 out.txt)
    [[ $first =~ ^launcher:\ slurm\ srun\ \(job\ [0-9]+,\ step\ 0,\ 4\ tasks\ on\ 1\ node,\ PMIx\)\ \|\ GPUs:\ CUDA_VISIBLE_DEVICES=0,\ SLURM_STEP_GPUS=0\  ]] ||
      fail "first line is not the slurm launcher line with task 0's own GPU: '$first'"
    grep -q "tp=2 pp=1 dp=2" out.txt || fail "not the tp=2 dp=2 layout over 4 ranks"
    [[ $(wc -l <run/metrics.jsonl) -eq 6 ]] || fail "metrics.jsonl has not 6 steps"
    [[ $(head -n 1 run/train.log) == "$first" ]] || fail "train.log does not start with the launcher line"
    echo "PASS: $first"
    ;;
  salloc_mpirun)
    write_job 6 3
    timeout 90 salloc -n 4 mpirun --oversubscribe "$tessera" train --config job.textproto --run-dir run >out.txt 2>&1
    code=$?
    [[ $code -eq 0 ]] || fail "salloc mpirun exited $code"
    first=$(grep -m 1 -v "^salloc:" out.txt)
    [[ $first =~ ^launcher:\ mpirun\ \(Open\ MPI,\ 4\ ranks\ on\ 1\ node,\ inside\ Slurm\ job\ [0-9]+\)$ ]] ||
      fail "first line is not the mpirun-inside-Slurm launcher line: '$first'"
    [[ $(wc -l <run/metrics.jsonl) -eq 6 ]] || fail "metrics.jsonl has not 6 steps"
    echo "PASS: $first"
    ;;
  srun_without_pmix)
    write_job 6 3
    timeout 60 srun -n 2 --mpi=none "$tessera" train --config job.textproto --run-dir run >out.txt 2>&1
    code=$?
    [[ $code -eq 2 ]] || fail "srun --mpi=none exited $code, not 2 (config error)"
    grep -q "without PMIx.*srun --mpi=pmix" out.txt || fail "no message saying to use srun --mpi=pmix"
    [[ ! -e run ]] || fail "the refused job created its run directory"
    echo "PASS: refused with exit 2: $(grep -m 1 'without PMIx' out.txt | cut -c1-120)..."
    ;;
  sbatch)
    write_job 10 5
    job=$(CONFIG=job.textproto RUN_DIR=run TESSERA=$tessera sbatch --parsable --nodes=1 --ntasks-per-node=4 \
      --gpus-per-node=4 --cpus-per-task=1 --time=5 "$source/scripts/slurm/train.sbatch") || fail "sbatch refused the job script"
    state=$(wait_job "$job" 90)
    [[ $state == COMPLETED ]] || fail "job $job ended $state, not COMPLETED"
    log=run/logs/slurm-$job.out
    grep -q "^launcher: slurm srun (job $job, step 0, 4 tasks on 1 node, PMIx) | GPUs: CUDA_VISIBLE_DEVICES=0,1,2,3" "$log" ||
      fail "the job's log has no slurm launcher line with the node's 4 GPUs"
    grep -q "^=== tessera exited 0" "$log" || fail "tessera did not exit 0"
    [[ $(wc -l <run/metrics.jsonl) -eq 10 ]] || fail "metrics.jsonl has not 10 steps"
    grep -q "output in $log" "tessera-$job.out" || fail "Slurm's own output file does not point to the log"
    echo "PASS: job $job COMPLETED through scripts/slurm/train.sbatch"
    ;;
  requeue)
    steps=300
    write_job $steps 20
    job=$(CONFIG=job.textproto RUN_DIR=run TESSERA=$tessera sbatch --parsable --nodes=1 --ntasks-per-node=4 \
      --gpus-per-node=4 --cpus-per-task=1 --time=5 "$source/scripts/slurm/train.sbatch") || fail "sbatch refused the job script"
    for _ in $(seq 1 120); do
      [[ -f run/checkpoints/latest ]] && break
      sleep 0.5
    done
    [[ -f run/checkpoints/latest ]] || fail "no checkpoint 60 s after submitting"
    # What --signal=USR1@120 does before the time limit: SIGUSR1 to every task of the job's steps.
    scancel --signal=USR1 "$job" || fail "scancel --signal=USR1 $job failed"
    state=$(wait_job "$job" 100)
    log=run/logs/slurm-$job.out
    [[ $state == COMPLETED ]] || fail "job $job ended $state, not COMPLETED"
    stopped=$(sed -n 's/^stopped by SIGUSR1 after step \([0-9]*\) (exit code 3).*/\1/p' "$log")
    [[ -n $stopped && $stopped -lt $steps ]] || fail "the first start did not stop after SIGUSR1 before step $steps"
    grep -q "^=== tessera exited 3" "$log" || fail "the first start did not exit 3"
    grep -q "^=== requeueing job $job" "$log" || fail "the job script did not requeue the job"
    grep -q "^launcher: slurm srun (job $job, step 0, 4 tasks on 1 node, PMIx, requeued 1x)" "$log" ||
      fail "no second start of job $job (requeued 1x)"
    grep -q "^resumed from run/checkpoints/step_$(printf %08d "$stopped"): step $stopped " "$log" ||
      fail "the second start did not resume from step $stopped's checkpoint"
    [[ $(grep -c "^=== tessera exited" "$log") -eq 2 ]] || fail "not exactly two starts"
    grep -q "^=== tessera exited 0" "$log" || fail "the second start did not exit 0"
    restarts=$(scontrol show job "$job" | sed -n 's/.*Restarts=\([0-9]*\).*/\1/p')
    [[ $restarts == 1 ]] || fail "Slurm counts $restarts restarts, not 1"
    last=$(tail -n 1 run/metrics.jsonl | sed -n 's/^{"step": *\([0-9]*\),.*/\1/p')
    [[ $last == "$steps" ]] || fail "metrics.jsonl ends at step '$last', not $steps"
    echo "PASS: job $job stopped by SIGUSR1 after step $stopped, requeued itself, resumed from step $stopped and completed"
    ;;
  *)
    echo "unknown mode $mode"; exit 2 ;;
esac
