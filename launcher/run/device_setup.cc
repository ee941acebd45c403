// Backend and process-group choice for a rank.
#include "launcher/run/device_setup.h"

#include "core/check.h"
#include "kernels/cpu/cpu_backend.h"
#include "launcher/common/human_format.h"
#include "parallel/host_staged_process_group.h"
#include "parallel/mpi_process_group.h"
#include "parallel/parallel_groups.h"

#if TESSERA_HAS_CUDA
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device.h"
#endif
#if TESSERA_HAS_NCCL
#include "parallel/nccl_process_group.h"
#endif

namespace tessera {

namespace {

// The minimum of `value` over every rank of the job: a timed all-reduce over MPI_COMM_WORLD.
int32_t job_minimum(int32_t value, double timeout_s) {
  // min(x) = -max(-x): process groups reduce by sum or max.
  int32_t negated = -value;
  MpiProcessGroup world(MPI_COMM_WORLD, "world", timeout_s);
  world.all_reduce(Tensor(&negated, DType::kI32, Device::kCpu, {1}), ReduceOp::kMax)->wait();
  return -negated;
}

}  // namespace

DeviceSupport device_support() {
  DeviceSupport support;
#if TESSERA_HAS_CUDA
  support.cuda = true;
  support.gpus = cuda::device_count();
#endif
#if TESSERA_HAS_NCCL
  support.nccl = true;
#endif
  return support;
}

std::string first_gpu_name() {
#if TESSERA_HAS_CUDA
  if (cuda::device_count() > 0) {
    try {
      return cuda::device_name(0);
    } catch (const std::exception&) {
      return "";
    }
  }
#endif
  return "";
}

config::Comm choose_comm(const config::JobConfig& job, const DeviceSupport& support, int local_size) {
  const config::Comm asked = job.parallel().comm();
  if (asked == config::MPI) return config::MPI;
  const bool gpu = job.train().device() == config::CUDA;
  const bool gpu_per_rank = support.gpus >= local_size;
  if (asked == config::AUTO) return gpu && support.nccl && gpu_per_rank ? config::NCCL : config::MPI;
  TS_CHECK(gpu, ConfigError, "parallel.comm=NCCL needs train.device=CUDA");
  TS_CHECK(support.nccl, ConfigError,
           "parallel.comm=NCCL, but this build of Tessera has no NCCL (CMake did not find nccl.h and libnccl next "
           "to the CUDA toolkit): install NCCL and rebuild, or set parallel.comm=MPI");
  TS_CHECK(gpu_per_rank, ConfigError, "parallel.comm=NCCL needs a GPU for each rank, but this host runs ", local_size,
           " ranks on ", support.gpus,
           " GPU(s) and NCCL refuses two ranks on one GPU: start at most as many ranks per host as it has GPUs, or "
           "set parallel.comm=MPI (or AUTO) to stage GPU tensors through host memory");
  return config::NCCL;
}

std::unique_ptr<Backend> make_backend(const config::JobConfig& job, const ProcessEnv& env, int threads) {
  if (job.train().device() == config::CPU) return std::make_unique<CpuBackend>(threads);
  const DeviceSupport support = device_support();
  TS_CHECK(support.cuda, ConfigError,
           "train.device=CUDA, but this build of Tessera has no CUDA backend (CMake found no CUDA toolkit): build "
           "where nvcc is installed (CMake looks in /usr/local/cuda, or set CMAKE_CUDA_COMPILER), or set "
           "train.device=CPU");
  // Every rank must have a GPU; a rank without one stops all of them alike.
  const int32_t all_have_gpus = job_minimum(support.gpus > 0 ? 1 : 0, job.parallel().timeout_s());
  TS_CHECK(all_have_gpus == 1, ConfigError, "train.device=CUDA, but ",
           support.gpus > 0 ? "another rank of the job sees" : "this rank sees",
           " no CUDA GPU (no device, no driver, or a driver older than this build's CUDA): run on machines with "
           "GPUs, check CUDA_VISIBLE_DEVICES, or set train.device=CPU");
#if TESSERA_HAS_CUDA
  return std::make_unique<CudaBackend>(cuda::select_device(env.local_rank));
#else
  (void)env;
  return nullptr;  // unreachable: support.cuda is false
#endif
}

DeviceDescription describe_device(const Backend& backend) {
#if TESSERA_HAS_CUDA
  if (const auto* gpu = dynamic_cast<const CudaBackend*>(&backend)) {
    return DeviceDescription{gpu->device_name(), cuda::dense_bf16_peak_tflops(gpu->device_name())};
  }
#endif
  return DeviceDescription{backend.name(), 0};
}

std::string attention_engine(const Backend& backend) {
#if TESSERA_HAS_CUDA
  if (const auto* gpu = dynamic_cast<const CudaBackend*>(&backend)) return gpu->attention_engine();
#endif
  return backend.name();
}

std::string memory_report(const Backend& backend) {
#if TESSERA_HAS_CUDA
  if (const auto* gpu = dynamic_cast<const CudaBackend*>(&backend)) {
    const cuda::CachingAllocator::Stats stats = gpu->memory_stats();
    return str_cat("GPU memory: peak ", human_bytes(static_cast<double>(stats.peak_in_use_bytes)), " in use, ",
                   human_bytes(static_cast<double>(stats.cached_bytes)), " cached, ", stats.device_allocations,
                   " cudaMalloc calls");
  }
#endif
  (void)backend;
  return "";
}

std::string device_line(const DeviceDescription& device, DType compute) {
  const std::string head = str_cat("device: ", device.name, ", ", dtype_name(compute), " compute");
  if (device.name == "cpu") return head + " (MFU is reported on GPUs only)";
  if (device.bf16_peak_tflops > 0) {
    return str_cat(head, "; MFU against its dense bf16 peak of ", static_cast<int>(device.bf16_peak_tflops),
                   " TFLOP/s");
  }
  return head + "; dense bf16 peak unknown (not in Tessera's table), so no MFU: TFLOP/s per GPU instead";
}

ParallelGroups make_groups(const config::JobConfig& job, const RankGrid& grid, int world_rank, Backend& backend,
                           const ProcessEnv& env) {
  const double timeout_s = job.parallel().timeout_s();
  if (backend.device() == Device::kCpu) return make_mpi_groups(grid, world_rank, timeout_s);

  // Each rank's own answer, then the job's: 0 = NCCL impossible though asked for, 1 = MPI, 2 = NCCL.
  int32_t mine = 0;
  std::string why;
  try {
    mine = choose_comm(job, device_support(), env.local_size) == config::NCCL ? 2 : 1;
  } catch (const ConfigError& error) {
    why = error.what();
  }
  const int32_t agreed = job_minimum(mine, timeout_s);
  TS_CHECK(agreed != 0, ConfigError,
           why.empty() ? "parallel.comm=NCCL, but another rank of the job cannot use NCCL (see its host's GPUs)" : why);
#if TESSERA_HAS_NCCL
  if (agreed == 2) {
    auto* cuda_backend = dynamic_cast<CudaBackend*>(&backend);
    TS_ASSERT(cuda_backend != nullptr, "NCCL groups need the CUDA backend");
    return make_nccl_groups(grid, world_rank, timeout_s, cuda_backend->stream());
  }
#endif
  return stage_through_host(make_mpi_groups(grid, world_rank, timeout_s), backend);
}

}  // namespace tessera
