#!/usr/bin/env bash
# Installs the Debian packages Tessera builds and runs with, if any is missing. Needs root (or sudo).
# Usage: scripts/install-deps.sh [--with-corpus]   (--with-corpus adds the English text the demo trains on)
set -euo pipefail

packages=(build-essential cmake pkg-config libopenmpi-dev openmpi-bin libhdf5-openmpi-dev hdf5-tools
          libprotobuf-dev protobuf-compiler libopenblas-openmp-dev libsentencepiece-dev libgtest-dev libcli11-dev zlib1g-dev
          libxxhash-dev nlohmann-json3-dev libfmt-dev xxhash python3-numpy python3-h5py
          iproute2 util-linux procps  # iproute2, util-linux (unshare), procps (sysctl): tests/netns
          slurmctld slurmd slurm-client munge slurm-wlm-basic-plugins)  # the Slurm tests' one-machine cluster
if [[ "${1:-}" == "--with-corpus" ]]; then
  packages+=(fortunes)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "installing: ${missing[*]}"
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "error: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
