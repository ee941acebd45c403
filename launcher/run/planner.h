// The layout planner behind `tessera plan` (docs/planner.md): for a job and a number of devices it enumerates
// every layout `tessera train` accepts (tp, pp, dp, micro-batches, ZeRO stage, activation recomputation),
// predicts each one's memory per device and its step time, refuses those that do not fit, and ranks the rest
// by predicted throughput.
//
// Memory is exact where the code is: parameter shards from the architecture's ParamSpecs (shard_layout,
// split_layers, stage_holds), activations from the models' own arena formulas (models/arena_plan.h) for the
// schedule's micro-batches in flight, and the buffers the optimizer, ZeRO-1, the DP gradient sync and the
// pipeline executor allocate. Step time is a model: compute at a calibrated fraction of the device's peak,
// ring collectives at a calibrated fraction of link bandwidth plus latency, the 1F1B bubble, and the part of
// the DP gradient sync that backward does not hide.
//
// Pure functions of their arguments: no MPI, no device, no environment.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "launcher/common/config.h"
#include "models/arena_plan.h"
#include "proto/config.pb.h"

namespace tessera {

// A device and its links, for the step-time model. Bandwidths are one direction, per device, in GB/s (1e9 B/s).
struct DeviceSpec {
  std::string name;
  double peak_tflops_bf16 = 0;  // dense, no sparsity
  double peak_tflops_fp32 = 0;  // what an FP32 job's matmuls run at
  double memory_gb = 0;         // capacity, 1e9 bytes
  double hbm_gbps = 0;          // memory bandwidth (the optimizer's update is bound by it)
  double intra_gbps = 0;        // inside a node (NVLink; CPU: MPI over shared memory)
  double inter_gbps = 0;        // across nodes (the network, per device)
  double intra_latency_us = 0;  // per collective step
  double inter_latency_us = 0;
  int devices_per_node = 8;
  // Bytes the runtime takes before the model: CUDA context, cuBLASLt and cuDNN workspaces, NCCL's buffers.
  double runtime_bytes = 0;
  // CPU (resident memory per rank, docs/planner.md "Memory model"): the tessera process before it does any work
  // (binary, shared libraries, static initialisation: measured by `tessera plan` of itself), and Open MPI's
  // per-rank memory after MPI_Init: a fixed part and a part per other rank on the node (shared-memory FIFOs).
  double process_bytes = 0;
  double mpi_bytes = 0;
  double mpi_peer_bytes = 0;
  // CPU: each compute thread's share of OpenBLAS's and OpenMP's buffers once the first step has run.
  double thread_bytes = 0;
  // CPU: what a training rank holds beyond the model and MPI, whatever the layout: the HDF5 library and a
  // checkpoint save's buffers, the run directory's writers, the allocator's own bookkeeping.
  double rank_bytes = 0;
};

// The devices the planner knows ("H100-SXM", "A100-80GB", "H200"); docs/planner.md names each number's source.
const std::vector<DeviceSpec>& planner_devices();
// The device called name (case-insensitive), or throws ConfigError listing the known ones.
DeviceSpec planner_device(const std::string& name);
// A CPU node: `cores` cores whose sgemm together reaches total_gflops, `memory_gb` of memory, MPI over shared
// memory; every rank of the job on this one node, sharing its cores and its memory (each rank's device has
// memory_gb / ranks). process_bytes: DeviceSpec::process_bytes
// (startup_memory() of a tessera process; 0 models only what Tessera and MPI allocate).
DeviceSpec cpu_device(double total_gflops, double memory_gb, int ranks, double process_bytes = 0);

// The constants --calibrate fits.
struct PlanConstants {
  double compute_efficiency = 0.5;  // achieved fraction of the peak in the model's matmuls
  double comm_efficiency = 0.7;     // achieved fraction of link bandwidth in collectives and sends
  double dp_overlap = 0.8;          // fraction of the DP gradient sync hidden behind backward (at most its length)
};

// One candidate layout.
struct PlanLayout {
  int tp = 1, pp = 1, dp = 1;
  int micro_batches = 1;
  int micro_batch_size = 1;  // sequences per micro-batch
  int zero_stage = 0;
  Recompute recompute = Recompute::kNone;  // train.recompute
  int recompute_every = 1;                 // train.recompute_every (FULL only)
  int threads = 1;                         // compute threads per rank (CPU memory: DeviceSpec::thread_bytes)
  bool sequence_parallel = false;          // parallel.sequence_parallel (tp > 1)
  int virtual_stages = 1;                  // parallel.virtual_stages (interleaved 1F1B, pp > 1)
};

// Bytes on the fullest rank (the stage that needs most), by part.
struct MemoryPrediction {
  int stage = 0;            // the pipeline stage this describes
  int64_t params = 0;       // elements of this rank's parameter shard
  double master = 0;        // f32 weights
  double grads = 0;         // f32 gradients
  double compute_copy = 0;  // bf16 copy of the weights (mixed precision)
  double optimizer = 0;     // AdamW moments (ZeRO-1: this rank's shard) and ZeRO-1's gradient shard
  double activations = 0;   // the model's arena: the in-flight micro-batches' activations, logits, scratch
  double comm_buffers = 0;  // pipeline exchange and loss buffers
  double workspace = 0;     // the device runtime (DeviceSpec::runtime_bytes)
  double process = 0;       // CPU: the process before it works (DeviceSpec::process_bytes)
  double mpi = 0;           // CPU: Open MPI after MPI_Init (mpi_bytes + mpi_peer_bytes per other rank on the node)
  double threads = 0;       // CPU: the compute threads' BLAS and OpenMP buffers (thread_bytes per thread)
  double rank = 0;          // CPU: the rest of a training rank's fixed memory (DeviceSpec::rank_bytes)
  double runtime() const { return workspace + process + mpi + threads + rank; }
  double total() const { return allocated() + runtime(); }
  // Everything the model and the training objects allocate (total() without the runtime's parts).
  double allocated() const { return master + grads + compute_copy + optimizer + activations + comm_buffers; }
};

// Seconds of one optimizer step, by part.
struct TimePrediction {
  double compute = 0;     // matmuls and attention of the slowest stage, all micro-batches
  double tp_comm = 0;     // TP all-reduces of the slowest stage, all micro-batches
  double pp_comm = 0;     // activation and gradient sends of the slowest stage
  double bubble = 0;      // (p - 1) micro-batch times of the slowest stage (1F1B)
  double dp_exposed = 0;  // the DP gradient sync (and ZeRO-1's all-gather) not hidden behind backward
  double optimizer = 0;   // the AdamW update, memory-bound
  double total() const { return compute + tp_comm + pp_comm + bubble + dp_exposed + optimizer; }
};

struct PlanEntry {
  PlanLayout layout;
  MemoryPrediction memory;
  TimePrediction time;
  double tokens_per_s = 0;
  double mfu = 0;  // model FLOPs (launcher/run/throughput.h) over the devices' peak
};

struct PlanResult {
  std::vector<PlanEntry> fits;     // best (highest tokens/s) first
  int refused_memory = 0;          // legal layouts that do not fit the device's memory
  int illegal = 0;                 // combinations `train` would refuse (heads vs tp, batch vs dp * micro-batches, ...)
  std::vector<std::string> notes;  // the levers not considered and why
};

// The recomputation options `tessera train` accepts in this build, read from config.proto's descriptor
// (train.recompute's enum values); NONE alone when the field does not exist.
std::vector<Recompute> recompute_options();

// The job's own layout (resolved by resolve_layout) as the planner describes it: its ZeRO stage and its
// train.recompute / recompute_every.
PlanLayout plan_layout_of(const config::JobConfig& job, const Layout& resolved);

// Predictions for one layout on `devices` devices.
MemoryPrediction predict_memory(const config::JobConfig& job, const PlanLayout& layout, const DeviceSpec& device);
TimePrediction predict_time(const config::JobConfig& job, const PlanLayout& layout, const DeviceSpec& device,
                            const PlanConstants& constants);
PlanEntry predict(const config::JobConfig& job, const PlanLayout& layout, const DeviceSpec& device,
                  const PlanConstants& constants);

// Every legal layout of job on `devices` devices (resolve_layout decides what is legal), predicted and ranked
// (ties keep the enumeration order: tp, then pp, then micro-batches ascending, ZeRO 0 before 1, NONE before
// SELECTIVE before FULL). With parallel.layout=auto, the layout fields the job sets explicitly (parallel.tp, pp,
// dp, micro_batches, zero_stage, train.recompute / recompute_every) are kept and only the others enumerated
// (Note [Layout constraints] in planner.cc), and a note says which were kept.
PlanResult plan_layouts(const config::JobConfig& job, int devices, const DeviceSpec& device,
                        const PlanConstants& constants);

// A measured run for calibration: its job (parallel.tp/pp/dp/micro_batches/zero_stage set) and step seconds.
struct MeasuredRun {
  config::JobConfig job;
  double step_seconds = 0;
  std::string where;  // for messages
};
// Reads RUN_DIR/config.textproto and the median ms_per_step of RUN_DIR/metrics.jsonl (its first step left out
// when there are more). Throws ConfigError or DataError saying what is missing.
MeasuredRun read_measured_run(const std::string& run_dir);
// The compute and communication efficiencies that minimise the squared relative error of the predicted step
// times (least squares over a log grid); comm_efficiency stays at the given value when no run communicates.
PlanConstants calibrate(const std::vector<MeasuredRun>& runs, const DeviceSpec& device, PlanConstants start,
                        double* rms_relative_error);

// Spearman's rank correlation of two equally long series (average ranks for ties).
double spearman(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace tessera
