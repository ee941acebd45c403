#!/usr/bin/env bash
# A rank that stops answering must turn into an error on its peers at the collective timeout (plus at most a
# second), and the job must exit non-zero, never hang. Starts a 2-rank training job with a 3 s timeout,
# freezes rank 1 with SIGSTOP after it has started training, and expects rank 0's CommError within 4 s,
# naming the operation, the group, the ranks and what became of rank 1 (stopped, with its pid and host).
# Usage: stuck_rank_test.sh TESSERA_BINARY
set -u
tessera=$1
work=$(mktemp -d)
trap 'pkill -CONT -f "$work" 2>/dev/null; pkill -KILL -f "$work" 2>/dev/null; rm -rf "$work"' EXIT
cat > "$work/job.textproto" <<JOB
model { vocab_size: 64 n_layer: 1 n_head: 2 n_embd: 16 max_seq_len: 16 }
train { steps: 100000 global_batch: 4 seq_len: 16 threads: 1 }
parallel { dp: 2 timeout_s: 3 }
data { mock: true }
logging { log_every: 1000 run_dir: "$work/run" }
JOB
mpirun --oversubscribe -np 2 "$tessera" train --config "$work/job.textproto" > "$work/out.txt" 2>&1 &
launcher=$!
# Wait until training runs (metrics.jsonl has lines), then freeze rank 1.
for _ in $(seq 1 100); do
  [[ -s "$work/run/metrics.jsonl" ]] && break
  sleep 0.1
done
pids=$(pgrep -f "train --config $work/job.textproto" | sort -n)
victim=""
for pid in $pids; do
  [[ "$(cat /proc/$pid/comm 2>/dev/null)" == "tessera" ]] || continue
  grep -q "OMPI_COMM_WORLD_RANK=1" /proc/$pid/environ 2>/dev/null && victim=$pid
done
if [[ -z "$victim" ]]; then
  echo "could not find rank 1"; cat "$work/out.txt"; exit 1
fi
kill -STOP "$victim"
start=$(date +%s.%N)
reported=""
for _ in $(seq 1 1200); do
  if [[ -z "$reported" ]] && grep -q "did not complete within" "$work/out.txt"; then reported=$(date +%s.%N); fi
  kill -0 "$launcher" 2>/dev/null || break
  sleep 0.05
done
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
if kill -0 "$launcher" 2>/dev/null; then
  echo "FAIL: job still running ${elapsed}s after rank 1 froze"; cat "$work/out.txt"; exit 1
fi
wait "$launcher"; code=$?
cat "$work/out.txt" | grep -v "^\s*$" | head -20
if [[ $code -eq 0 ]]; then echo "FAIL: job exited 0"; exit 1; fi
if ! grep -q "did not complete within 3 s" "$work/out.txt"; then echo "FAIL: no timeout message"; exit 1; fi
if ! grep -q "world rank 1 (pid $victim on .*) is stopped" "$work/out.txt"; then
  echo "FAIL: the error does not say that rank 1 (pid $victim) is stopped"; exit 1
fi
detected=$(awk -v a="$start" -v b="$reported" 'BEGIN { printf "%.2f", b - a }')
if ! awk -v d="$detected" 'BEGIN { exit !(d <= 4.0) }'; then
  echo "FAIL: the timeout error came ${detected}s after rank 1 froze; parallel.timeout_s is 3"; exit 1
fi
echo "PASS: error ${detected}s and job end ${elapsed}s after rank 1 froze, exit code $code"
