#!/usr/bin/env bash
# A one-machine Slurm cluster for tests: Debian's munged, slurmctld and slurmd started by hand (no systemd,
# which CI containers lack), everything they write under one directory, stopped again by `down`.
#
#   slurm_cluster.sh up DIR     start the daemons, wait until the node is idle; prints "up: ..." and writes
#                               DIR/env (export SLURM_CONF=DIR/etc/slurm.conf) for the clients
#   slurm_cluster.sh down DIR   cancel every job, stop the daemons and every process started under them
#   slurm_cluster.sh check      exit 77 with the reason when this machine cannot run it (not root, no Slurm)
#
# The node is this host (`hostname -s`, address 127.0.0.1) and declares 8 CPUs whatever the machine has
# (SlurmdParameters=config_overrides), so that a 4-task job fits on a 2-core machine, and 4 GPUs whose device
# files are /dev/null-like device nodes under DIR/dev: Slurm binds them to tasks (CUDA_VISIBLE_DEVICES, SLURM_STEP_GPUS) as it
# would real ones, which is what Tessera's launcher detection reads; the jobs themselves train on the CPU.
# The ports are free ones chosen at start, so that it does not collide with a Slurm already on the machine.
# Needs root: slurmd runs jobs as their users, which only root can do.
set -euo pipefail

usage() { echo "usage: $0 up DIR | down DIR | check" >&2; exit 2; }

# Exit 77 (CTest's skip code here) with the reason when this machine cannot run a cluster.
check() {
  if [[ $(id -u) -ne 0 ]]; then echo "SKIP: the local Slurm cluster needs root (slurmd runs jobs as root)"; exit 77; fi
  local missing=()
  for tool in munged slurmctld slurmd srun sbatch sinfo scontrol; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if ((${#missing[@]} > 0)); then
    echo "SKIP: no ${missing[*]}: install Debian's slurmctld slurmd slurm-client munge (scripts/install-deps.sh)"
    exit 77
  fi
}

# A TCP port nothing listens on, from a range above the usual ephemeral ones' start.
free_port() {
  local port
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
  echo "no free port found" >&2; exit 1
}

# Pids of the processes whose environment names this cluster's slurm.conf: the daemons, their slurmstepd and the
# job's tasks (all started with SLURM_CONF set to it), never this script itself.
cluster_pids() {
  local conf=$1 environ pid
  for environ in $(grep -lzxF "SLURM_CONF=$conf" /proc/[0-9]*/environ 2>/dev/null); do
    pid=${environ#/proc/}
    pid=${pid%/environ}
    [[ $pid == "$$" || $pid == "$BASHPID" ]] || echo "$pid"
  done
}

down() {
  [[ -d $1 ]] || return 0
  local dir conf
  dir=$(cd "$1" && pwd)
  conf=$dir/etc/slurm.conf
  # Only a running slurmctld answers; scancel would retry for its MessageTimeout otherwise.
  if [[ -f $conf && -f $dir/run/slurmctld.pid ]] && kill -0 "$(cat "$dir/run/slurmctld.pid")" 2>/dev/null; then
    # Cancel the jobs first so that slurmd ends their steps itself; then stop whatever is left.
    SLURM_CONF=$conf timeout 5 scancel --full --quiet --user=root 2>/dev/null || true
    for _ in $(seq 1 20); do
      [[ -z "$(SLURM_CONF=$conf timeout 5 squeue -h 2>/dev/null)" ]] && break
      sleep 0.5
    done
  fi
  # The daemons first (SIGTERM: they clean up), then SIGKILL to whatever of this cluster is left. A pid counts
  # only while its environment names this cluster's slurm.conf (every daemon was started with it), so a stale
  # pid file never hits another process.
  local pids
  pids=$(cluster_pids "$conf")
  [[ -n $pids ]] && kill $pids 2>/dev/null
  for _ in $(seq 1 10); do
    pids=$(cluster_pids "$conf")
    [[ -z $pids ]] && break
    sleep 0.3
  done
  [[ -n $pids ]] && kill -KILL $pids 2>/dev/null
  rm -f "$dir"/run/*.pid
  echo "down: $dir"
}

up() {
  local dir=$1
  check
  down "$dir" >/dev/null  # what a killed earlier run left
  rm -rf "$dir"
  mkdir -p "$dir"/{etc,state,spool/"$(hostname -s)",log,run,munge,dev}
  dir=$(cd "$dir" && pwd)
  chmod 700 "$dir/munge"
  local conf=$dir/etc/slurm.conf host
  host=$(hostname -s)

  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$dir/munge/munge.key"
  SLURM_CONF=$conf munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --log-file="$dir/log/munged.log" --pid-file="$dir/run/munged.pid" --seed-file="$dir/munge/munged.seed"
  # Character devices (Slurm checks), numbered like /dev/nvidiaN, behaving as /dev/null.
  for i in 0 1 2 3; do mknod "$dir/dev/gpu$i" c 1 3; done

  local ctld_port slurmd_port
  ctld_port=$(free_port)
  slurmd_port=$(free_port)
  while [[ $slurmd_port == "$ctld_port" ]]; do slurmd_port=$(free_port); done
  cat >"$conf" <<CONF
ClusterName=tessera-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=5
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=10
InactiveLimit=0
MessageTimeout=20
SlurmdTimeout=60
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=8 Boards=1 SocketsPerBoard=1 CoresPerSocket=8 ThreadsPerCore=1 RealMemory=1000 Gres=gpu:4 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  cat >"$dir/etc/gres.conf" <<CONF
AutoDetect=off
Name=gpu File=$dir/dev/gpu[0-3]
CONF
  echo "export SLURM_CONF=$conf" >"$dir/env"

  SLURM_CONF=$conf slurmctld
  SLURM_CONF=$conf slurmd
  local state=""
  for _ in $(seq 1 60); do
    state=$(SLURM_CONF=$conf sinfo -h -n "$host" -o %T 2>/dev/null || true)
    [[ $state == idle ]] && break
    sleep 0.5
  done
  if [[ $state != idle ]]; then
    echo "FAIL: node $host is '${state:-not reported}' after 30 s, not idle"
    tail -n 20 "$dir"/log/*.log
    down "$dir"
    exit 1
  fi
  echo "up: node $host idle (slurmctld port $ctld_port, slurmd port $slurmd_port); SLURM_CONF=$conf"
}

case "${1:-}" in
  up) [[ $# -eq 2 ]] || usage; up "$2" ;;
  down) [[ $# -eq 2 ]] || usage; down "$2" ;;
  check) check ;;
  *) usage ;;
esac
