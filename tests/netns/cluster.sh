#!/usr/bin/env bash
# A cluster of pretend hosts on one machine, for multi-node tests: each "node" is a Linux network namespace
# with an address of its own on a bridge and, for the processes started in it, a host name of its own (a UTS
# namespace), so that a real `mpirun --host` job spans several hosts whose ranks talk over TCP, and one host
# can be cut off or killed without touching the others.
#
#   cluster.sh check            exit 0 if namespaces can be made here; otherwise say why and exit 77 (skip)
#   cluster.sh up N             make nodes 1..N and the head node 0, where mpirun runs (removing leftovers of an
#                               earlier run first)
#   cluster.sh down             end every process on the nodes and remove them, the bridge and the links
#   cluster.sh hosts SLOTS [I..] the --host list "ADDR:SLOTS,..." of nodes I.. (default: all)
#   cluster.sh name I           node I's host name;  cluster.sh addr I: its address
#   cluster.sh mpirun ARGS...   mpirun on the head node with the launch agent and Open MPI's TCP transport on
#                               the bridge (give --host yourself, from `hosts`)
#   cluster.sh exec HOST CMD... run CMD on a node (HOST: its address or name); mpirun's launch agent
#   cluster.sh cut I / heal I   take node I's link down (a network partition) / bring it back
#   cluster.sh kill I           node I loses power: its link goes down and every process on it is killed
#   cluster.sh reachable HOST   exit 0 if the node's link is up (the probe scripts/supervise.sh takes)
#
# Names come from TESSERA_NETNS_PREFIX (default "tsnt": nodes tsnt1.., bridge tsntbr) and addresses from
# TESSERA_NETNS_NET (default 10.77.83: the bridge .1, node I .(10+I)), so that these tests do not collide with
# other namespaces on the machine; tests that use one cluster hold a CTest RESOURCE_LOCK. Needs root, iproute2
# and util-linux (unshare). Nothing leaves the machine: the bridge has no route out.
set -euo pipefail
prefix=${TESSERA_NETNS_PREFIX:-tsnt}
net=${TESSERA_NETNS_NET:-10.77.83}
bridge=${prefix}br
script=$(readlink -f "$0")

node_name() { echo "${prefix}$1"; }
node_addr() { echo "$net.$((10 + $1))"; }
# The nodes that exist, as indices 1 2 ...
node_indices() {
  ip netns list 2>/dev/null | awk -v p="$prefix" '$1 ~ "^" p "[0-9]+$" { print substr($1, length(p) + 1) }' | sort -n
}
# A node index from an address, a host name or an index.
index_of() {
  case "$1" in
    "$net".*) echo $((${1##*.} - 10)) ;;
    "$prefix"[0-9]*) echo "${1#"$prefix"}" ;;
    [0-9]*) echo "$1" ;;
    *) echo "cluster.sh: '$1' is not a node of this cluster ($prefix*, $net.*)" >&2; return 2 ;;
  esac
}

remove_all() {
  local i ns pids
  for i in $(node_indices); do
    ns=$(node_name "$i")
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    # shellcheck disable=SC2086  # a list of pids
    [[ -n "$pids" ]] && kill -KILL $pids 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    ip link del "v${ns}h" 2>/dev/null || true
  done
  ip link del "$bridge" 2>/dev/null || true
}

make_node() {
  local i=$1 ns
  ns=$(node_name "$i")
  ip netns add "$ns"
  # One end of the pair in the node ("v<node>"), the other ("v<node>h") on the bridge.
  ip link add "v$ns" type veth peer name "v${ns}h"
  ip link set "v$ns" netns "$ns"
  ip link set "v${ns}h" master "$bridge" up
  ip netns exec "$ns" ip addr add "$(node_addr "$i")/24" dev "v$ns"
  ip netns exec "$ns" ip link set "v$ns" up
  ip netns exec "$ns" ip link set lo up
}

case "${1:-}" in
  check)
    why=""
    if [[ $(id -u) -ne 0 ]]; then
      why="not root"
    elif ! command -v ip >/dev/null || ! command -v unshare >/dev/null; then
      why="iproute2 (ip) or util-linux (unshare) is missing"
    else
      probe="${prefix}probe"
      if ! err=$(ip netns add "$probe" 2>&1 && ip link add "v$probe" type veth peer name "v${probe}h" 2>&1 &&
        ip link set "v$probe" netns "$probe" 2>&1 && ip netns exec "$probe" unshare --uts true 2>&1); then
        why="cannot make a network namespace with a veth link: $err"
      fi
      ip link del "v${probe}h" 2>/dev/null || true
      ip netns del "$probe" 2>/dev/null || true
    fi
    if [[ -n "$why" ]]; then
      echo "SKIP: network namespaces cannot be made here ($why); the multi-node tests need root and netns"
      exit 77
    fi
    ;;
  up)
    n=${2:?usage: cluster.sh up N}
    remove_all
    ip link add "$bridge" type bridge
    ip addr add "$net.1/24" dev "$bridge"
    ip link set "$bridge" up
    for i in $(seq 0 "$n"); do make_node "$i"; done
    ip netns exec "$(node_name 0)" sysctl -qw net.ipv4.tcp_retries2=3
    ;;
  down) remove_all ;;
  hosts)
    slots=${2:?usage: cluster.sh hosts SLOTS [I...]}
    shift 2
    list=""
    for i in ${*:-$(node_indices | grep -vx 0)}; do list+="${list:+,}$(node_addr "$i"):$slots"; done
    echo "$list"
    ;;
  name) node_name "${2:?usage: cluster.sh name I}" ;;
  addr) node_addr "${2:?usage: cluster.sh addr I}" ;;
  mpirun)
    shift
    # mpirun runs on the head node (namespace ${prefix}0, address .10), whose TCP gives up on an unanswered
    # connection after 3 retransmissions (~3 s; Linux's default, net.ipv4.tcp_retries2=15, takes ~15 minutes),
    # with keepalive on its connections to the daemons: otherwise mpirun, told to abort by the ranks that
    # survive a cut, waits that long for the lost node's daemon to confirm. docs/reliability.md says more.
    exec ip netns exec "$(node_name 0)" mpirun --mca plm_rsh_agent "$script exec" --mca btl tcp,self --mca btl_tcp_if_include "$net.0/24" \
      --mca oob_tcp_if_include "$net.0/24" --mca oob_tcp_keepalive_time 3 --mca oob_tcp_keepalive_intvl 1 \
      --mca oob_tcp_keepalive_probes 3 "$@"
    ;;
  exec)
    i=$(index_of "${2:?usage: cluster.sh exec HOST CMD...}")
    shift 2
    ns=$(node_name "$i")
    # Like ssh: the arguments are one shell command line, run under the node's own host name.
    exec ip netns exec "$ns" unshare --uts sh -c 'hostname "$1" && shift && exec sh -c "$*"' sh "$ns" "$@"
    ;;
  cut | heal)
    i=$(index_of "${2:?usage: cluster.sh $1 I}")
    ns=$(node_name "$i")
    ip netns exec "$ns" ip link set "v$ns" "$([[ $1 == cut ]] && echo down || echo up)"
    ;;
  kill)
    i=$(index_of "${2:?usage: cluster.sh kill I}")
    ns=$(node_name "$i")
    ip netns exec "$ns" ip link set "v$ns" down
    pids=$(ip netns pids "$ns" || true)
    # shellcheck disable=SC2086  # a list of pids
    [[ -n "$pids" ]] && kill -KILL $pids 2>/dev/null || true
    ;;
  reachable)
    i=$(index_of "${2:?usage: cluster.sh reachable HOST}") || exit 1
    ns=$(node_name "$i")
    [[ "$(ip netns exec "$ns" cat "/sys/class/net/v$ns/operstate" 2>/dev/null)" == up ]]
    ;;
  *)
    sed -n '2,23p' "$script" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
