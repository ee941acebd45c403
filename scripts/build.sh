#!/usr/bin/env bash
# Configures and builds Tessera in build/ (Release). Extra arguments go to CMake's configure step,
# e.g. scripts/build.sh -DTESSERA_ENABLE_CUDA=OFF. TESSERA_BUILD_TARGETS="tessera" builds only those targets.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j "$(nproc)" ${TESSERA_BUILD_TARGETS:+--target $TESSERA_BUILD_TARGETS}
