#!/usr/bin/env bash
# Restarts a failed training job on the hosts that are left.
#
#   scripts/supervise.sh [--max-restarts N] [--hosts H:SLOTS,...] [--hosts-file FILE] [--probe CMD]
#                        [--restart-delay S] [--log FILE] -- MPIRUN [MPIRUN OPTIONS] tessera train ARGS...
#
# The supervisor owns the launcher's placement: it adds `-np TOTAL --host H1:S1,H2:S2,...` right after the
# word `mpirun` (or `mpiexec`; a wrapper that ends in `mpirun` is fine) and `--resume auto` to tessera's
# arguments unless they hold a --resume. When the job exits non-zero it logs the cause (the exit code or
# signal, the host Open MPI reported losing, the hosts the probe cannot reach), drops the unreachable hosts,
# and reruns on the rest. `tessera train --resume auto` then continues from the newest complete checkpoint,
# taking dp from the smaller world (Note [Elastic layout], launcher/checkpoints/elastic_layout.h), with the
# same global batch and data order. It stops after N restarts (default 3), when no host is left, when
# tessera reports a config error (exit 2: rerunning would not help), or when it is itself sent SIGTERM or
# SIGINT (passed on to the job, whose checkpoint is saved; exit 3 means "requeue me").
#
#   --hosts H:S,...   hosts and slots (ranks) per host, Open MPI's --host syntax
#   --hosts-file F    one host per line, "HOST", "HOST:SLOTS" or "HOST slots=SLOTS" (# comments)
#   --probe CMD       a host is reachable when `CMD HOST` exits 0 (default: ssh -o BatchMode=yes
#                     -o ConnectTimeout=5 HOST true)
#   --log FILE        the restart log, also printed on stderr (default: stderr only)
#
# Each log line starts with the UTC time. Exit: the job's last exit code (0 when it finished).
set -uo pipefail

max_restarts=3 hosts_arg="" hosts_file="" probe="ssh -o BatchMode=yes -o ConnectTimeout=5" delay=1 log=""
usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --max-restarts) max_restarts=${2:?}; shift 2 ;;
    --hosts) hosts_arg=${2:?}; shift 2 ;;
    --hosts-file) hosts_file=${2:?}; shift 2 ;;
    --probe) probe=${2:?}; shift 2 ;;
    --restart-delay) delay=${2:?}; shift 2 ;;
    --log) log=${2:?}; shift 2 ;;
    --) shift; break ;;
    -h | --help) usage ;;
    *) echo "supervise.sh: unknown option '$1' (the job's command goes after --)" >&2; exit 2 ;;
  esac
done
[[ $# -gt 0 ]] || { echo "supervise.sh: give the job's command after --: -- mpirun ... tessera train ..." >&2; exit 2; }
[[ "$max_restarts" =~ ^[0-9]+$ ]] || { echo "supervise.sh: --max-restarts takes a count, not '$max_restarts'" >&2; exit 2; }

note() {
  local line
  line="$(date -u +%Y-%m-%dT%H:%M:%SZ) supervise: $*"
  echo "$line" >&2
  [[ -z "$log" ]] || echo "$line" >>"$log"
}

# ---- hosts: parallel arrays of names and slots ----
host_names=() host_slots=()
add_host() {
  local entry=$1 name slots=1
  entry=${entry//[[:space:]]slots=/:}
  name=${entry%%:*}
  [[ "$entry" == *:* ]] && slots=${entry#*:}
  if [[ -z "$name" || ! "$slots" =~ ^[1-9][0-9]*$ ]]; then
    echo "supervise.sh: '$1' is not HOST, HOST:SLOTS or HOST slots=SLOTS" >&2; exit 2
  fi
  host_names+=("$name") host_slots+=("$slots")
}
if [[ -n "$hosts_file" ]]; then
  [[ -r "$hosts_file" ]] || { echo "supervise.sh: cannot read --hosts-file $hosts_file" >&2; exit 2; }
  while IFS= read -r line; do
    line=${line%%#*}
    line=$(echo "$line" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
    [[ -n "$line" ]] && add_host "$line"
  done <"$hosts_file"
fi
IFS=, read -r -a listed <<<"$hosts_arg"
for entry in "${listed[@]}"; do [[ -n "$entry" ]] && add_host "$entry"; done
[[ ${#host_names[@]} -gt 0 ]] || { echo "supervise.sh: give the hosts with --hosts H:S,... or --hosts-file FILE" >&2; exit 2; }

# ---- the command: where -np/--host go, and whether tessera already has --resume ----
command=("$@")
launcher_at=-1 tessera_at=-1 has_resume=0
for i in "${!command[@]}"; do
  word=${command[$i]}
  case "$(basename -- "$word")" in
    mpirun | mpiexec) [[ $launcher_at -lt 0 ]] && launcher_at=$i ;;
    tessera) [[ $tessera_at -lt 0 ]] && tessera_at=$i ;;
  esac
  case "$word" in
    -np | -n | --np | -H | --host | -host | --hostfile | -hostfile | --machinefile)
      [[ $tessera_at -lt 0 ]] && { echo "supervise.sh: leave $word to the supervisor (it places the ranks on the hosts left)" >&2; exit 2; } ;;
    --resume | --resume=*) [[ $tessera_at -ge 0 ]] && has_resume=1 ;;
  esac
done
if [[ $launcher_at -lt 0 ]]; then
  echo "supervise.sh: the command must start the job through mpirun (or mpiexec), e.g. -- mpirun build/tessera train ..." >&2
  exit 2
fi
if [[ $tessera_at -lt 0 || "${command[$((tessera_at + 1))]:-}" != train ]]; then
  echo "supervise.sh: the command must run 'tessera train' (restarts resume its checkpoints)" >&2
  exit 2
fi
[[ $has_resume -eq 1 ]] || command+=(--resume auto)

child=0 stopping=0
stop() {
  stopping=1
  note "received SIG$1: passing it on to the job and not restarting"
  [[ $child -gt 0 ]] && kill -"$1" "$child" 2>/dev/null
}
trap 'stop TERM' TERM
trap 'stop INT' INT

output=$(mktemp "${TMPDIR:-/tmp}/supervise.XXXXXX")
trap 'rm -f "$output"' EXIT

restarts=0
while true; do
  np=0 placement=""
  for i in "${!host_names[@]}"; do
    np=$((np + host_slots[i]))
    placement+="${placement:+,}${host_names[$i]}:${host_slots[$i]}"
  done
  run=("${command[@]:0:$((launcher_at + 1))}" -np "$np" --host "$placement" "${command[@]:$((launcher_at + 1))}")
  note "start $((restarts + 1)) of at most $((max_restarts + 1)): $np ranks on $placement"
  started=$(date +%s.%N)
  # The job's output goes to ours and, through tee, to $output (read below for Open MPI's diagnosis).
  exec {copy}> >(tee "$output")
  tee_pid=$!
  "${run[@]}" >&"$copy" 2>&1 &
  child=$!
  wait "$child"; code=$?
  # A signal interrupts wait before the job ends: wait for the job itself.
  while kill -0 "$child" 2>/dev/null; do wait "$child"; code=$?; done
  child=0
  exec {copy}>&-
  wait "$tee_pid" 2>/dev/null
  elapsed=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if [[ $code -eq 0 ]]; then
    note "the job finished (exit 0) after ${elapsed} s"
    exit 0
  fi
  cause="exit code $code"
  [[ $code -gt 128 && $code -lt 160 ]] && cause+=" (signal $(kill -l $((code - 128)) 2>/dev/null || echo $((code - 128))))"
  [[ $code -eq 3 ]] && cause+=" (stopped by a signal after saving its checkpoint)"
  # Open MPI names the daemon it lost: "Remote daemon: [[...],2] on node HOST".
  reported=$(sed -n 's/.*Remote daemon:.* on node \([^ ]*\).*/\1/p' "$output" | sort -u | paste -sd, -)
  [[ -n "$reported" ]] && cause+="; Open MPI lost the daemon on $reported"
  lost=() kept_names=() kept_slots=()
  for i in "${!host_names[@]}"; do
    # shellcheck disable=SC2086  # probe is a command line
    if $probe "${host_names[$i]}" >/dev/null 2>&1 </dev/null; then
      kept_names+=("${host_names[$i]}") kept_slots+=("${host_slots[$i]}")
    else
      lost+=("${host_names[$i]}")
    fi
  done
  [[ ${#lost[@]} -gt 0 ]] && cause+="; unreachable: ${lost[*]}"
  note "the job failed after ${elapsed} s: $cause"
  if [[ $stopping -eq 1 ]]; then exit "$code"; fi
  if [[ $code -eq 2 ]]; then
    note "not restarting: exit code 2 is a usage or config error (see the job's message)"
    exit "$code"
  fi
  if [[ $restarts -ge $max_restarts ]]; then
    note "not restarting: --max-restarts $max_restarts reached"
    exit "$code"
  fi
  if [[ ${#kept_names[@]} -eq 0 ]]; then
    note "not restarting: no reachable host is left"
    exit "$code"
  fi
  host_names=("${kept_names[@]}") host_slots=("${kept_slots[@]}")
  restarts=$((restarts + 1))
  note "restart $restarts of $max_restarts in ${delay} s on ${#host_names[@]} host(s)${lost:+ without ${lost[*]}}"
  sleep "$delay"
done
