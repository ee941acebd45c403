#!/usr/bin/env bash
# The whole test suite: installs missing packages, builds, and runs every CTest test (unit, multi-rank MPI,
# PyTorch fixtures through `tessera verify`). GPU tests skip themselves on machines without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
# mpirun refuses to run as root without these; harmless otherwise.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=PASSIVE
ctest --test-dir build --output-on-failure --timeout 600 -j "$(nproc)" "$@"
