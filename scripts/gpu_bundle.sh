#!/usr/bin/env bash
# Packs a CUDA build for a GPU machine that has no package registry (docs/gpu.md): the `tessera` binary, the
# GPU test binaries, and every shared library they and Open MPI's launcher load, except glibc and the CUDA
# libraries (cudart, cuBLASLt, NCCL: such a machine has them in its PyTorch's Python wheels, and
# scripts/gpu_check.sh finds them there). Runs on glibc 2.35 or newer (checked here with objdump -T over every
# object of the bundle: scripts/glibc_compat.py). Open MPI's components and help files keep their absolute paths under
# root/ and are relocated at run time (OPAL_PREFIX; PMIx plugins through PMIX_MCA_mca_base_component_path).
#
# Usage: scripts/gpu_bundle.sh [BUILD_DIR]     (default build/, configured with CUDA and already built)
# Needs objdump (binutils), a C compiler and python3.
# Output: build-gpu/tessera-gpu.tar.xz, xz-compressed (about 19 MB) so it is quick to copy.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=build-gpu

binaries=(tessera tests/cuda_backend_test tests/cuda_device_test tests/nccl_process_group_test)
for binary in "${binaries[@]}"; do
  if [[ ! -x $build/$binary ]]; then
    echo "gpu_bundle: $build/$binary is missing: build with CUDA first, e.g." >&2
    echo "  cmake -S . -B $build -DCMAKE_BUILD_TYPE=Release && make -C $build -j tessera cuda_backend_test cuda_device_test nccl_process_group_test" >&2
    exit 1
  fi
done

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$stage/compat" "$stage/root"
for binary in "${binaries[@]}"; do cp "$build/$binary" "$stage/bin/"; done

# Open MPI 4 (Debian's layout): the launcher, its components and help texts, and PMIx's plugins.
mpi_paths=(/usr/bin/orterun /usr/bin/orted /usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3 /usr/share/openmpi
           /usr/lib/x86_64-linux-gnu/pmix2/lib/pmix /usr/lib/x86_64-linux-gnu/pmix2/share)
for path in "${mpi_paths[@]}"; do
  [[ -e $path ]] && cp -rP --parents "$path" "$stage/root/"
done

# Shared libraries of everything above (ldd gives each object's whole closure). glibc and the CUDA libraries
# stay behind; libstdc++, libgcc_s and libgomp go to compat/, used there only if the machine's are older.
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libpthread\.so|libdl\.so|librt\.so|libresolv\.so|libutil\.so|libcuda\.so|libcudart\.so|libcublas|libcublasLt|libnccl|libcudnn|libnvidia)'
compat='^(libstdc\+\+\.so|libgcc_s\.so|libgomp\.so)'
mapfile -t objects < <(find "$stage/bin" "$stage/root" -type f \( -perm -u+x -o -name '*.so*' \))
for object in "${objects[@]}"; do
  ldd "$object" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r soname path; do
  if [[ $soname =~ $skip ]]; then continue; fi
  if [[ $soname =~ $compat ]]; then cp -L "$path" "$stage/compat/$soname"; else cp -L "$path" "$stage/lib/$soname"; fi
done

strip --strip-unneeded "$stage"/bin/* "$stage"/lib/* 2>/dev/null || true

# glibc 2.35 (Ubuntu 22.04, supported by CUDA 13) as well as Debian 12's 2.36: the only symbols of the bundle
# that need 2.36 are arc4random and arc4random_buf (Debian 12's libstdc++ and libevent). The bundle brings
# its own (preloaded by gpu_check.sh where glibc is older) and its objects' requirement of GLIBC_2.36 is
# made weak; any other symbol newer than 2.35 stops the build here, named (scripts/glibc_compat.py).
cc -O2 -shared -fPIC -o "$stage/lib/libtessera_arc4random.so" scripts/glibc_compat/arc4random.c
mapfile -t elf_files < <(find "$stage" -type f -exec sh -c 'head -c 4 "$1" | grep -q ELF' _ {} \; -print)
if ! python3 scripts/glibc_compat.py weaken --max 2.35 "${elf_files[@]}"; then
  echo "gpu_bundle: the bundle would need a glibc newer than 2.35 (above); nothing written" >&2
  exit 1
fi
mkdir -p "$out"
tar -C "$stage" -cJf "$out/tessera-gpu.tar.xz" .
echo "gpu_bundle: $out/tessera-gpu.tar.xz ($(du -h "$out/tessera-gpu.tar.xz" | cut -f1); $(du -sh "$stage" | cut -f1) unpacked)"
