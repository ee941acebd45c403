// Where a rank computes (train.device: CpuBackend or CudaBackend) and how its process groups carry data
// (parallel.comm: NCCL, or MPI with GPU tensors staged through host memory). Used by build_job.
#pragma once

#include <memory>
#include <string>

#include "cluster/process_env.h"
#include "core/backend.h"
#include "parallel/process_group.h"
#include "parallel/rank_grid.h"
#include "proto/config.pb.h"

namespace tessera {

// What this build and this process's host offer.
struct DeviceSupport {
  bool cuda = false;  // built with the CUDA backend
  bool nccl = false;  // built with the NCCL process group
  int gpus = 0;       // GPUs visible to this process
};

// This build's support; asks the CUDA driver for the GPU count (0 without a GPU or driver). Never throws.
DeviceSupport device_support();

// The name of this process's first visible GPU as the driver reports it ("NVIDIA H100 80GB HBM3"); empty in a
// build without CUDA or where no GPU is visible. Never throws.
std::string first_gpu_name();

// The transport for this rank from parallel.comm. AUTO: NCCL when train.device=CUDA, the build has NCCL and this
// host has a GPU for each of its ranks (local_size <= gpus; NCCL refuses two ranks of a communicator on one
// GPU), else MPI. NCCL asked for but impossible (CPU device, no NCCL in the build, fewer GPUs than ranks on the
// host): ConfigError saying why and what to set. Pure; make_groups makes all ranks agree on one answer.
config::Comm choose_comm(const config::JobConfig& job, const DeviceSupport& support, int local_size);

// The rank's backend: CpuBackend(threads) for train.device=CPU; for CUDA, a CudaBackend on GPU
// env.local_rank % (visible GPUs), after every rank of the job has confirmed it has a GPU (a timed MPI
// all-reduce over MPI_COMM_WORLD, so that a rank without one stops the whole job with the same ConfigError
// instead of leaving the others waiting). ConfigError when the build has no CUDA or a rank sees no GPU.
// Collective for train.device=CUDA.
std::unique_ptr<Backend> make_backend(const config::JobConfig& job, const ProcessEnv& env, int threads);

// What a backend runs on, for reports: "cpu" or the GPU's name, and the GPU's dense bf16 peak in TFLOP/s (0: a
// CPU, or a GPU model not in the table of kernels/cuda/device.h).
struct DeviceDescription {
  std::string name;
  double bf16_peak_tflops = 0;
};
DeviceDescription describe_device(const Backend& backend);
// One line for the start of a run: the device, the compute dtype and how MFU is reported, e.g.
// "device: NVIDIA H100 80GB HBM3, bf16 compute; MFU against its dense bf16 peak of 989 TFLOP/s", or for a GPU
// missing from the table "...: dense bf16 peak unknown, so no MFU (TFLOP/s per GPU instead)".
std::string device_line(const DeviceDescription& device, DType compute);
// Which attention implementation the backend ran last: "cudnn" or "tessera" on a GPU (kernels/cuda, Note
// [Attention choice]), "cpu" otherwise.
std::string attention_engine(const Backend& backend);
// "GPU memory: peak 14.2 GB in use, 1.1 GB cached, 212 cudaMalloc calls" from the CUDA backend's caching
// allocator; empty for other backends.
std::string memory_report(const Backend& backend);

// The rank's world/tp/pp/dp groups for `backend`. Collective over MPI_COMM_WORLD (as make_mpi_groups):
// - CPU backend: make_mpi_groups.
// - CUDA backend: the ranks agree on choose_comm (the job takes MPI unless every rank can take NCCL; NCCL asked
//   for where a rank cannot is a ConfigError on every rank); then make_nccl_groups on the backend's stream, or
//   make_mpi_groups wrapped by stage_through_host.
ParallelGroups make_groups(const config::JobConfig& job, const RankGrid& grid, int world_rank, Backend& backend,
                           const ProcessEnv& env);

}  // namespace tessera
