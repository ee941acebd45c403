#!/usr/bin/env bash
# A network partition: two hosts of two ranks (tp=2 inside a host, dp=2 across) train with
# parallel.timeout_s=3, then the second host's link is cut. Every rank on the first host must end within the
# timeout plus 3 s, one of them with an error that names the operation, the timeout and the lost host, and
# mpirun must exit non-zero (it notices the lost daemon through TCP keepalive, tests/netns/cluster.sh). Skipped
# (exit 77) where network namespaces cannot be made.
# Usage: cut_link_test.sh TESSERA_BINARY
set -u
tessera=$1
source "$(dirname "$0")/lib.sh"
write_job "$work/job.textproto" 100000
lost=$("$cluster" name 2)

"$cluster" mpirun --oversubscribe -np 4 --host "$("$cluster" hosts 2)" "$tessera" train --config "$work/job.textproto" \
  --run-dir "$work/run" --set checkpoint.every_steps=0 --set logging.log_every=1000 >"$work/out.txt" 2>&1 &
launcher=$!
wait_for_steps "$work/run" 5 || { cat "$work/out.txt"; exit 1; }
"$cluster" cut 2
cut_at=$(now)
survivors_ended=""
for _ in $(seq 1 600); do
  [[ -z "$survivors_ended" && -z "$(tessera_pids 1)" ]] && survivors_ended=$(seconds_since "$cut_at")
  kill -0 "$launcher" 2>/dev/null || break
  sleep 0.05
done
job_ended=$(seconds_since "$cut_at")
if kill -0 "$launcher" 2>/dev/null; then
  echo "FAIL: mpirun still runs ${job_ended} s after the link was cut"; grep -v "^step" "$work/out.txt"; exit 1
fi
wait "$launcher"; code=$?
grep -v "^step" "$work/out.txt" | grep -v "^\s*$" | head -30
[[ -n "$survivors_ended" ]] || { echo "FAIL: ranks of the first host still run"; exit 1; }
[[ $code -ne 0 ]] || { echo "FAIL: the job exited 0"; exit 1; }
# Whichever of the first host's ranks waits on the lost host names it; the other may be waiting in a TP
# collective for its neighbour (alive, but stuck) and be stopped by that one's abort before its own timeout.
first=$("$cluster" name 1)
if ! grep -q "error on rank [01]/4 on $first: .* did not complete within 3 s.*runs on $lost" "$work/out.txt"; then
  echo "FAIL: no error of the first host's ranks names the lost host $lost"; exit 1
fi
awk -v d="$survivors_ended" 'BEGIN { exit !(d <= 6.0) }' ||
  { echo "FAIL: the first host's ranks ended ${survivors_ended} s after the cut; parallel.timeout_s is 3"; exit 1; }
echo "PASS: surviving ranks ended ${survivors_ended} s and mpirun ${job_ended} s after the cut, exit code $code"
