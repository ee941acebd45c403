#!/usr/bin/env bash
# The GPU check, in one command, on a GPU machine with no package registry (docs/gpu.md): unpacks the bundle
# made by scripts/gpu_bundle.sh, finds the CUDA libraries (cudart 13, cuBLASLt 13, NCCL 2) among the Python
# wheels of the machine's PyTorch, prints the GPU, driver, CUDA runtime, cuBLASLt, cuDNN and NCCL versions and
# glibc (2.35 or newer), and runs
#   1. the GPU unit tests (cuda_device_test; cuda_backend_test: every CudaBackend op against CpuBackend, in f32
#      and bf16; its attention cases once more with cuDNN attention switched off),
#   2. the NCCL process-group tests on 2 ranks (size-1 groups; multi-rank ones need a GPU per rank),
#   3. `tessera verify` of both GPT-2 fixtures and the Llama one on CUDA, in fp32 and in bf16 (model.dtype=BF16, at the bf16
#      tolerances): single rank over MPI groups, single rank over NCCL (size-1 groups), and tp=2, pp=2, dp=2 on 2
#      ranks sharing the GPU (MPI with host staging); tp=2 x pp=2 x dp=2 on 8 ranks in bf16,
#   4. `tessera bench` on CUDA: GPT-2 124M, 350M and 774M at seq 1024 and Llama 1B at seq 2048 in bf16, and
#      124M in fp32.
# Each step has its own time limit; the whole check stays under 10 minutes. Prints a summary table last and exits
# non-zero if any step failed. Logs (environment.log, steps.log, summary.txt) go to $OUT (if the
# environment names an output folder) or /tmp/tessera-gpu-check.
#
# Usage, from the repository root: bash scripts/gpu_check.sh [BUNDLE]   (default build-gpu/tessera-gpu.tar.xz)
# TESSERA_CUDA_LIB_DIRS (colon-separated) overrides the search for the CUDA libraries. GPU_CHECK_ONLY=REGEX runs
# only the steps whose names match (e.g. 'bf16|bench' or '^cuda_'), to split the check over several sessions.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
bundle=${1:-build-gpu/tessera-gpu.tar.xz}
logs=${OUT:-/tmp/tessera-gpu-check}
work=$(mktemp -d /tmp/tessera-gpu.XXXXXX)
mkdir -p "$logs"

if [[ ! -f $bundle ]]; then
  echo "gpu_check: no bundle at $bundle: run scripts/gpu_bundle.sh on the build machine and carry build-gpu/" >&2
  exit 2
fi
python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$bundle" "$work" || exit 2
# The bundle's libraries come from Debian 12 (glibc 2.36); on glibc 2.35 their only newer symbols, arc4random
# and arc4random_buf, come from the bundle's own library, preloaded (scripts/glibc_compat.py). The loader then
# notes once per process that the weak version GLIBC_2.36 is missing; that is expected.
glibc=$(getconf GNU_LIBC_VERSION | awk '{print $2}')
glibc_note="glibc $glibc"
if [[ $(printf '%s\n2.35\n' "$glibc" | sort -V | head -n 1) != 2.35 ]]; then
  echo "gpu_check: this machine has glibc $glibc; the bundle needs 2.35 or newer" >&2
  exit 2
elif [[ $(printf '%s\n2.36\n' "$glibc" | sort -V | head -n 1) != 2.36 ]]; then
  export LD_PRELOAD="$work/lib/libtessera_arc4random.so${LD_PRELOAD:+:$LD_PRELOAD}"
  glibc_note="$glibc_note (older than the build machine's 2.36: arc4random from the bundle, preloaded)"
fi

# ---- libraries ------------------------------------------------------------------------------------------------
cuda_dirs=${TESSERA_CUDA_LIB_DIRS:-$(python3 - <<'EOF'
import glob, os, site
roots = list(site.getsitepackages())
try:
    roots.append(site.getusersitepackages())
except Exception:
    pass
dirs = []
for name in ("libcudart.so.13", "libcublasLt.so.13", "libnccl.so.2", "libcudnn.so.9"):
    for root in roots:
        for path in glob.glob(os.path.join(root, "nvidia", "**", name), recursive=True):
            if os.path.dirname(path) not in dirs:
                dirs.append(os.path.dirname(path))
print(":".join(dirs))
EOF
)}
library_path="$work/lib:$cuda_dirs"
# Debian 12's libstdc++/libgomp only where the machine's are older or missing (GCC 12 exports GLIBCXX_3.4.30).
system_cxx=$(ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 .*x86-64/ {print $NF; exit}')
if [[ -z $system_cxx ]] || ! grep -q GLIBCXX_3.4.30 "$system_cxx" || ! ldconfig -p | grep -q 'libgomp\.so\.1 '; then
  library_path="$work/compat:$library_path"
fi
export LD_LIBRARY_PATH="$library_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# Open MPI from the bundle, relocated; shared memory between the ranks of this one machine.
export OPAL_PREFIX="$work/root/usr"
export PMIX_MCA_mca_base_component_path="$work/root/usr/lib/x86_64-linux-gnu/pmix2/lib/pmix"
export PATH="$work/bin:$work/root/usr/bin:$PATH"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_mca_base_component_show_load_errors=0
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMP_WAIT_POLICY=PASSIVE
mpirun=(orterun --oversubscribe --bind-to none)

# What this machine has, before any step: GPU, driver, and the versions of the CUDA libraries found, asked of
# the libraries themselves (none of these calls needs a GPU).
versions() {
  nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader 2>/dev/null |
    sed 's/^/GPU: /' || true
  nvidia-smi >/dev/null 2>&1 || echo "GPU: nvidia-smi not available"
  python3 - "$cuda_dirs" <<'EOF'
import ctypes, os, sys
dirs = [d for d in sys.argv[1].split(":") if d]
def load(name):
    for d in dirs + [""]:
        try:
            return ctypes.CDLL(os.path.join(d, name) if d else name)
        except OSError:
            pass
    return None
def number(lib, function):
    value = ctypes.c_int(0)
    return value.value if lib is not None and getattr(lib, function)(ctypes.byref(value)) == 0 else None
cudart = load("libcudart.so.13")
runtime, driver = number(cudart, "cudaRuntimeGetVersion"), number(cudart, "cudaDriverGetVersion")
def cuda(v):
    return "not found" if v is None else "none" if v == 0 else f"{v // 1000}.{v % 1000 // 10}"
print(f"CUDA runtime: {cuda(runtime)}; CUDA supported by the driver: {cuda(driver)}")
cublaslt = load("libcublasLt.so.13")
if cublaslt:
    cublaslt.cublasLtGetVersion.restype = ctypes.c_size_t
    v = cublaslt.cublasLtGetVersion()
    print(f"cuBLASLt: {v // 10000}.{v % 10000 // 100}.{v % 100}")
else:
    print("cuBLASLt: not found")
cudnn = load("libcudnn.so.9")
if cudnn:
    cudnn.cudnnGetVersion.restype = ctypes.c_size_t
    v = cudnn.cudnnGetVersion()
    print(f"cuDNN: {v // 10000}.{v % 10000 // 100}.{v % 100}")
else:
    print("cuDNN: not found")
nccl = load("libnccl.so.2")
v = number(nccl, "ncclGetVersion")
print("NCCL: not found" if v is None else f"NCCL: {v // 10000}.{v % 10000 // 100}.{v % 100}")
EOF
  echo "$glibc_note"
}

{
  versions
  echo "bundle: $bundle -> $work"
  echo "CUDA libraries from: ${cuda_dirs:-(none found)}"
  nvidia-smi -L 2>&1 || echo "nvidia-smi: not available"
  ldd "$work/bin/tessera" | grep -E 'not found|cudart|cublas|nccl|stdc\+\+'
} 2>&1 | tee "$logs/environment.log"

# ---- steps ----------------------------------------------------------------------------------------------------
declare -a names results
# step NAME SECONDS COMMAND...: runs with a time limit, appends its output to $logs/steps.log (one file, so
# the logs stay few), records PASS/FAIL and the time.
: >"$logs/steps.log"
step() {
  local name=$1 limit=$2
  shift 2
  if [[ -n ${GPU_CHECK_ONLY:-} && ! $name =~ $GPU_CHECK_ONLY ]]; then return 0; fi
  local start=$SECONDS
  echo "==> $name: $*" | tee -a "$logs/steps.log"
  timeout --kill-after=10 "$limit" "$@" >"$work/step.log" 2>&1
  local rc=$?
  local verdict=PASS
  if ((rc == 124 || rc == 137)); then verdict="FAIL (timed out after ${limit}s)"; elif ((rc != 0)); then verdict="FAIL (exit $rc)"; fi
  cat "$work/step.log" >>"$logs/steps.log"
  tail -n 3 "$work/step.log" | sed 's/^/    /'
  names+=("$name")
  results+=("$verdict, $((SECONDS - start))s")
}

fixtures="$repo/tests/data"
cuda=(--set train.device=CUDA)
step cuda_device_test 60 cuda_device_test
step cuda_backend_test 150 cuda_backend_test
# bf16 attention runs on cuDNN where it can; the same cases again on Tessera's own attention kernels.
step cuda_backend_test_attention_without_cudnn 60 env TESSERA_CUDNN_ATTENTION=0 cuda_backend_test \
  --gtest_filter='*attention*'
step nccl_process_group_test 90 "${mpirun[@]}" -np 2 nccl_process_group_test
for fixture in gpt2-tiny gpt2-tiny-clip llama-tiny; do
  for dtype in FP32 BF16; do
    tag="${fixture}_cuda_${dtype,,}"
    f=(--fixture "$fixtures/$fixture.h5" "${cuda[@]}" --set model.dtype=$dtype)
    step "verify_$tag" 60 tessera verify "${f[@]}"
    step "verify_${tag}_nccl" 60 tessera verify "${f[@]}" --set parallel.comm=NCCL
    step "verify_${tag}_tp2" 60 "${mpirun[@]}" -np 2 tessera verify "${f[@]}" --set parallel.tp=2
    step "verify_${tag}_pp2" 60 "${mpirun[@]}" -np 2 tessera verify "${f[@]}" --set parallel.pp=2 \
      --set parallel.micro_batches=2
    step "verify_${tag}_dp2" 60 "${mpirun[@]}" -np 2 tessera verify "${f[@]}" --set parallel.dp=2
  done
done
step verify_gpt2-tiny_cuda_bf16_tp2_pp2_dp2 120 "${mpirun[@]}" -np 8 tessera verify \
  --fixture "$fixtures/gpt2-tiny.h5" "${cuda[@]}" --set model.dtype=BF16 --set parallel.tp=2 --set parallel.pp=2 \
  --set parallel.dp=2
for shape in gpt2-124m gpt2-350m gpt2-774m llama-1b; do
  step "bench_${shape}_cuda_bf16" 120 tessera bench --shape $shape --steps 5 "${cuda[@]}"
done
step bench_gpt2-124m_cuda_fp32 120 tessera bench --shape gpt2-124m --steps 5 "${cuda[@]}" --set model.dtype=FP32

echo
printf '%-40s %s\n' "step" "result" | tee "$logs/summary.txt"
failed=0
for i in "${!names[@]}"; do
  printf '%-40s %s\n' "${names[$i]}" "${results[$i]}" | tee -a "$logs/summary.txt"
  [[ ${results[$i]} == PASS* ]] || failed=1
done
sed -n '/==> bench_/,$p' "$logs/steps.log" | grep -E '^(==> bench|  (step time|tokens/s|device|[0-9.]+ TFLOP))'

echo "logs: $logs"
rm -rf "$work"
exit $failed
