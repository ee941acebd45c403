// parallel.layout=auto (proto/config.proto, docs/planner.md): the layout planner's best layout for the job's
// world size and device replaces "auto" before build_job, so the run directory and the checkpoints record the
// layout that ran. `tessera train`, `verify` and `bench` call it; everything else refuses "auto"
// (resolve_layout).
#pragma once

#include <string>
#include <vector>

#include "launcher/run/planner.h"
#include "parallel/mpi_environment.h"
#include "proto/config.pb.h"

namespace tessera {

// The node sgemm rate, in GFLOP/s, that parallel.layout=auto plans a CPU job with. Fixed rather than measured, so
// that every rank, and `tessera plan --gpu cpu --cpu-gflops 100`, reaches the same choice from the same inputs:
// on CPU the rate scales compute against the MPI links' fixed bandwidth, which changes the ranking only where
// compute and communication are close.
constexpr double kAutoLayoutCpuGflops = 100;

// The device parallel.layout=auto plans for. train.device=CPU: cpu_device(kAutoLayoutCpuGflops, memory_gb,
// world_size, process_bytes) (process_bytes: a rank's startup_memory(), launcher/run/process_memory.h). CUDA: the planner's GPU whose name matches gpu_name (as the driver reports it, e.g. "NVIDIA H100
// 80GB HBM3"); an unknown or empty name plans for an H100-SXM and sets *notice to say so. Pure.
DeviceSpec auto_layout_device(const config::JobConfig& job, int world_size, double memory_gb, double process_bytes,
                              const std::string& gpu_name, std::string* notice);

// The planner's choice for a job with parallel.layout=auto.
struct AutoLayout {
  config::JobConfig job;  // the job with the choice's tp, pp, dp, micro_batches, zero_stage, recompute set and
                          // parallel.layout cleared
  PlanEntry chosen;
  std::string line;  // "parallel.layout=auto chose tp=1 pp=1 dp=2 micro_batches=1 zero_stage=1 recompute=NONE: ..."
};

// plan_layouts(job, world_size, device) and its best entry. Pure. ConfigError when no layout fits, saying why
// (the constraints kept, the memory) and what to do.
AutoLayout choose_auto_layout(const config::JobConfig& job, int world_size, const DeviceSpec& device);

// Replaces parallel.layout=auto in job by the planner's choice for this job's world and device; a job without
// it is returned as it is. Collective over MPI_COMM_WORLD (timed by parallel.timeout_s): the ranks plan with the
// smallest physical memory and the largest startup memory of any rank, and check that they all chose the same
// layout. *line gets
// AutoLayout::line, *notice a note about the device (empty if none).
config::JobConfig resolve_auto_layout(const config::JobConfig& job, MpiEnvironment& mpi, std::string* line,
                                      std::string* notice);

}  // namespace tessera
