// The layout planner: enumeration through resolve_layout, memory from the code's own plans, step time from a
// calibrated model (docs/planner.md).
#include "launcher/run/planner.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <sstream>

#include "core/check.h"
#include "launcher/common/json_io.h"
#include "models/registry.h"
#include "parallel/pipeline_schedule.h"

namespace tessera {

namespace {

// Sources: NVIDIA's H100, A100 and H200 data sheets (dense BF16 and FP32/TF32-free peaks, memory, HBM and NVLink
// bandwidth; NVLink's 900 / 600 GB/s are both directions together, halved here), and the DGX H100 / DGX A100
// user guides (one 400 / 200 Gb/s InfiniBand adapter per GPU). Latencies are typical NCCL per-step figures.
// CPU resident memory the model does not allocate, measured on the tiny GPT-2 (docs/planner.md, "Memory model",
// has the phases and the commands):
// - Open MPI's per-rank memory after MPI_Init (its PMIx client, the ob1 PML's free lists, the shared-memory BTL's
//   segment), and what each further rank on the node adds (that peer's FIFO and fragments): VmRSS before and
//   after MPI_Init on 1, 2 and 4 ranks;
// - one compute thread once the first step has run (OpenBLAS's per-thread GEMM packing buffer as far as the
//   step's GEMMs touch it, the OpenMP worker's stack): train.threads 1 against 2;
// - the rest of a rank: building the job beyond its parameter, gradient and optimizer buffers (about 1.5 MiB),
//   and the end of the run, whose checkpoint save through HDF5 and the run directory's writers add about 6 MiB.
constexpr double kMpiRankBytes = 7.5 * (1 << 20);
constexpr double kMpiPeerBytes = 0.8 * (1 << 20);
constexpr double kCpuThreadBytes = 2.8 * (1 << 20);
constexpr double kCpuRankBytes = 8.5 * (1 << 20);

const std::vector<DeviceSpec> kDevices = {
    {"H100-SXM", 989.0, 67.0, 80.0, 3350.0, 450.0, 50.0, 3.0, 8.0, 8, 3.0e9},
    {"A100-80GB", 312.0, 19.5, 80.0, 2039.0, 300.0, 25.0, 3.0, 8.0, 8, 3.0e9},
    {"H200", 989.0, 67.0, 141.0, 4800.0, 450.0, 50.0, 3.0, 8.0, 8, 3.0e9},
};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::vector<int> divisors_of(int n) {
  std::vector<int> d;
  for (int i = 1; i <= n; ++i)
    if (n % i == 0) d.push_back(i);
  return d;
}

struct StagePlan {
  StageRange range;
  int64_t params = 0;              // elements of tp rank 0's shard
  double matmul_params = 0;        // global elements of the stage's matrix-product weights (FLOPs)
  int64_t tied_elems = 0;          // the tied parameter's local elements, when this stage holds it
  int64_t block_params = 0;        // elements of tp rank 0's shard that belong to blocks (ParamPlace::kBlock)
  double block_matmul_params = 0;  // global elements of the stage's blocks' parameters (recomputed FLOPs)
};

int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Each stage's range and parameters, exactly as Model's constructor lays them out for tp rank 0 (every TP rank
// holds the same number: split dimensions divide, the vocabulary is padded to a multiple of tp).
std::vector<StagePlan> plan_stages(const ModelConfig& m, int tp, int pp, int virtual_stages) {
  const std::vector<ParamSpec> specs = param_specs(m);
  const std::vector<std::pair<int, int>> split = split_layers(m.n_layer, pp);
  std::vector<StagePlan> stages;
  for (int s = 0; s < pp; ++s) {
    StagePlan st;
    st.range = StageRange{split[s].first, split[s].second, s == 0, s == pp - 1};
    if (virtual_stages > 1) {  // as launcher/run/job.cc builds the stage: its chunks of the virtual stages
      st.range.chunks = rank_chunks(m.n_layer, pp, s, virtual_stages);
      st.range.first_layer = st.range.chunks.front().first;
      st.range.end_layer = st.range.chunks.back().second;
    }
    for (const ParamSpec& spec : specs) {
      if (!stage_holds(st.range, spec)) continue;
      const int64_t local = product(shard_local_shape(spec, m, tp));
      st.params += local;
      if (spec.place == ParamPlace::kBlock) {
        st.block_params += local;
        st.block_matmul_params += static_cast<double>(spec.numel());
      }
      if (spec.tied_across_stages) st.tied_elems = local;
      // As model_flops_per_token: an input embedding is a lookup, a tied one is the head's product too.
      const bool product_weight = spec.place != ParamPlace::kInput || (spec.tied_across_stages && st.range.has_head);
      if (product_weight) st.matmul_params += static_cast<double>(spec.numel());
    }
    stages.push_back(st);
  }
  return stages;
}

// The most model chunks per pipeline rank the planner tries (Megatron's users rarely go past a few).
constexpr int kMaxVirtualStages = 4;

PipelineKind schedule_of(const config::JobConfig& job) {
  return job.parallel().schedule() == config::GPIPE ? PipelineKind::kGPipe : PipelineKind::kOneFOneB;
}

double ring_allreduce_s(double bytes, int n, double gbps, double latency_us) {
  if (n <= 1) return 0;
  return 2.0 * (n - 1) / n * bytes / (gbps * 1e9) + 2.0 * (n - 1) * latency_us * 1e-6;
}
double ring_half_s(double bytes, int n, double gbps, double latency_us) {  // reduce-scatter or all-gather
  if (n <= 1) return 0;
  return 1.0 * (n - 1) / n * bytes / (gbps * 1e9) + 1.0 * (n - 1) * latency_us * 1e-6;
}

}  // namespace

const std::vector<DeviceSpec>& planner_devices() { return kDevices; }

DeviceSpec planner_device(const std::string& name) {
  std::string known;
  for (const DeviceSpec& d : kDevices) {
    if (lower(d.name) == lower(name)) return d;
    known += (known.empty() ? "" : ", ") + d.name;
  }
  TS_CHECK(false, ConfigError, "unknown --gpu '", name, "': the planner knows ", known,
           " (and cpu: this machine's cores)");
  return {};
}

DeviceSpec cpu_device(double total_gflops, double memory_gb, int ranks, double process_bytes) {
  DeviceSpec d;
  d.name = "cpu";
  // Every rank shares the node's cores: each computes at its share of the node's sgemm rate.
  d.peak_tflops_bf16 = d.peak_tflops_fp32 = total_gflops / 1e3 / std::max(ranks, 1);
  // ... and its memory: the fullest stage's rank must fit the node's memory divided by the ranks.
  d.memory_gb = memory_gb / std::max(ranks, 1);
  d.hbm_gbps = 10.0;
  d.intra_gbps = d.inter_gbps = 4.0;  // Open MPI over shared memory, ranks competing for the cores
  d.intra_latency_us = d.inter_latency_us = 20.0;
  d.devices_per_node = std::max(ranks, 1);
  d.runtime_bytes = 0;
  d.process_bytes = process_bytes;
  d.mpi_bytes = kMpiRankBytes;
  d.mpi_peer_bytes = kMpiPeerBytes;
  d.thread_bytes = kCpuThreadBytes;
  d.rank_bytes = kCpuRankBytes;
  return d;
}

std::vector<Recompute> recompute_options() {
  std::vector<Recompute> options = {Recompute::kNone};
  const google::protobuf::FieldDescriptor* field = config::TrainConfig::descriptor()->FindFieldByName("recompute");
  if (field == nullptr || field->enum_type() == nullptr) return options;
  const google::protobuf::EnumDescriptor* e = field->enum_type();
  if (e->FindValueByName("SELECTIVE") != nullptr) options.push_back(Recompute::kSelective);
  if (e->FindValueByName("FULL") != nullptr) options.push_back(Recompute::kFull);
  return options;
}

namespace {

// predict_memory and predict_time given plan_stages(model, tp, pp, virtual_stages), which plan_layouts computes
// once per (tp, pp, virtual_stages) rather than per candidate.
MemoryPrediction memory_of(const config::JobConfig& job, const PlanLayout& layout, const DeviceSpec& device,
                           const std::vector<StagePlan>& stages) {
  ModelConfig m = model_config_from(job.model());
  m.recompute = layout.recompute;  // the arena formulas read what is recomputed from the config, as the models do
  m.recompute_every = layout.recompute_every;
  const int64_t B = layout.micro_batch_size, T = job.train().seq_len(), C = m.n_embd;
  const double compute_bytes = m.dtype == DType::kBF16 ? 2.0 : 4.0;
  MemoryPrediction best;
  for (int s = 0; s < layout.pp; ++s) {
    const StagePlan& st = stages[s];
    MemoryPrediction p;
    p.stage = s;
    p.params = st.params;
    const double n = static_cast<double>(st.params);
    p.master = 4 * n;
    p.grads = 4 * n;
    p.compute_copy = m.dtype == DType::kBF16 ? 2 * n : 0;
    if (layout.zero_stage >= 1 && layout.dp > 1) {
      // Moments and the reduce-scattered gradient shard: this rank's 1/dp of every bucket (rounded up).
      const double shard = std::ceil(n / layout.dp);
      p.optimizer = 8 * shard + 4 * shard;
    } else {
      p.optimizer = 8 * n;
    }
    if (layout.zero_stage == 2 && layout.dp > 1 && st.block_params > 0) {
      // Note [Gradient storage] (parallel/model.h): the resident (input- and output-side) gradients, a ring of
      // min(2, blocks) one-layer slots padded to a multiple of dp, and the slots' receive chunks.
      const int blocks = st.range.layer_count();
      const double layer = static_cast<double>(st.block_params) / blocks;
      const double slot = std::ceil(layer / layout.dp) * layout.dp;
      const double ring = std::min(2, blocks);
      p.grads = 4 * (n - static_cast<double>(st.block_params) + ring * slot);
      p.optimizer += 4 * ring * slot / layout.dp;
    }
    ArenaPlanShape shape;
    shape.tp = layout.tp;
    shape.stage = st.range;
    shape.micro_batch = layout.micro_batch_size;
    shape.seq_len = static_cast<int>(T);
    shape.slots = pipeline_in_flight(schedule_of(job), layout.pp, s, layout.micro_batches, layout.virtual_stages);
    shape.sequence_parallel = layout.sequence_parallel && layout.tp > 1;
    p.activations = static_cast<double>(model_architecture(m.arch).train_arena_bytes(m, shape));
    // PipelineExecutor: the received output gradient (+ the tied parameter's peer gradient), the step's losses.
    // With sequence parallelism the stage boundary carries this TP rank's 1/tp of the tokens.
    const double rows = shape.sequence_parallel ? static_cast<double>(B * T / layout.tp) : static_cast<double>(B * T);
    double exchange = std::ceil(rows * C * compute_bytes / 64) * 64;
    if (layout.pp > 1) exchange += 4.0 * static_cast<double>(st.tied_elems);
    p.comm_buffers = exchange + (st.range.has_head ? 4.0 * layout.micro_batches * B * T : 0);
    p.workspace = device.runtime_bytes;
    p.process = device.process_bytes;
    const int local_ranks = std::min(layout.tp * layout.pp * layout.dp, device.devices_per_node);
    p.mpi = device.mpi_bytes + device.mpi_peer_bytes * (local_ranks - 1);
    p.threads = device.thread_bytes * std::max(layout.threads, 1);
    p.rank = device.rank_bytes;
    if (s == 0 || p.total() > best.total()) best = p;
  }
  return best;
}

TimePrediction time_of(const config::JobConfig& job, const PlanLayout& layout, const DeviceSpec& device,
                       const PlanConstants& k, const std::vector<StagePlan>& stages) {
  const ModelConfig m = model_config_from(job.model());
  const double T = job.train().seq_len(), C = m.n_embd;
  const double tokens_mb = static_cast<double>(layout.micro_batch_size) * T;
  const double compute_bytes = m.dtype == DType::kBF16 ? 2.0 : 4.0;
  const double peak = (m.dtype == DType::kBF16 ? device.peak_tflops_bf16 : device.peak_tflops_fp32) * 1e12;
  const double rate = peak * k.compute_efficiency;
  // Ranks: tp fastest, then dp, then pp (parallel/rank_grid.h). A group stays on one node while its span does.
  const bool tp_local = layout.tp <= device.devices_per_node;
  const bool dp_local = layout.tp * layout.dp <= device.devices_per_node;
  const bool pp_local = layout.tp * layout.dp * layout.pp <= device.devices_per_node;
  auto bw = [&](bool local) { return (local ? device.intra_gbps : device.inter_gbps) * k.comm_efficiency; };
  auto lat = [&](bool local) { return local ? device.intra_latency_us : device.inter_latency_us; };
  const double activation_bytes = tokens_mb * C * compute_bytes;

  TimePrediction t;
  double slowest = 0, slowest_compute = 0, slowest_tp = 0, slowest_pp = 0;
  double dp_seconds = 0, optimizer_seconds = 0;
  for (int s = 0; s < layout.pp; ++s) {
    const StagePlan& st = stages[s];
    const double layers = st.range.layer_count();
    const double block_params = st.block_matmul_params;  // for recomputation's extra forward
    double flops_per_token = 6 * st.matmul_params + 12 * layers * C * T;
    // FULL re-runs the forward of its recomputed blocks (every recompute_every-th), SELECTIVE the attention core.
    double recomputed = 0;
    for (int l = st.range.first_layer; l < st.range.end_layer; ++l)
      recomputed += st.range.holds_layer(l) && l % std::max(layout.recompute_every, 1) == 0 ? 1 : 0;
    if (layout.recompute == Recompute::kFull && layers > 0) {
      flops_per_token += recomputed / layers * (2 * block_params + 4 * layers * C * T);
    }
    if (layout.recompute == Recompute::kSelective) flops_per_token += 4 * layers * C * T;
    const double compute = flops_per_token * tokens_mb / layout.tp / rate;
    // Per block two all-reduces forward and two backward, plus the embedding's and the head's. Sequence
    // parallelism turns each into a reduce-scatter and an all-gather of the same total volume.
    const double tp_collectives = 4 * layers + (st.range.has_embedding ? 1 : 0) + (st.range.has_head ? 2 : 0);
    const double tp = tp_collectives * ring_allreduce_s(activation_bytes, layout.tp, bw(tp_local), lat(tp_local));
    // Every chunk receives its input and sends its output (but the first and the last virtual stage), each
    // message 1/tp of the tokens with sequence parallelism.
    const int V = std::max(layout.virtual_stages, 1);
    const double sends = 2.0 * V - (s == 0 ? 1 : 0) - (s == layout.pp - 1 ? 1 : 0);
    const double message = layout.sequence_parallel && layout.tp > 1 ? activation_bytes / layout.tp : activation_bytes;
    const double pp = layout.pp > 1 ? sends * (message / (bw(pp_local) * 1e9) + lat(pp_local) * 1e-6) : 0;
    const double per_mb = compute + tp + pp;
    if (per_mb > slowest) {
      slowest = per_mb;
      slowest_compute = compute;
      slowest_tp = tp;
      slowest_pp = pp;
    }
    // DP: f32 gradients all-reduced, or reduce-scattered and the updated f32 weights all-gathered (ZeRO-1).
    const double grad_bytes = 4.0 * static_cast<double>(st.params);
    double dp = 0;
    if (layout.dp > 1) {
      dp = layout.zero_stage >= 1 ? 2 * ring_half_s(grad_bytes, layout.dp, bw(dp_local), lat(dp_local))
                                  : ring_allreduce_s(grad_bytes, layout.dp, bw(dp_local), lat(dp_local));
      // Backward of the last micro-batch is the window the bucketed sync overlaps with; ZeRO-2 reduce-scatters
      // the blocks' gradients after every micro-batch's backward (M times their traffic, M windows).
      double window = compute * 2.0 / 3.0;
      if (layout.zero_stage == 2) {
        const double block_bytes = 4.0 * static_cast<double>(st.block_params);
        dp += (layout.micro_batches - 1) * ring_half_s(block_bytes, layout.dp, bw(dp_local), lat(dp_local));
        window *= layout.micro_batches;
      }
      dp = std::max((1 - k.dp_overlap) * dp, dp - k.dp_overlap * window);
    }
    dp_seconds = std::max(dp_seconds, dp);
    // AdamW reads and writes master, moments and gradient (28 B) of the parameters it owns, and writes the copy.
    const double owned = layout.zero_stage >= 1 ? static_cast<double>(st.params) / layout.dp : st.params;
    optimizer_seconds =
        std::max(optimizer_seconds, (28 * owned + (compute_bytes < 4 ? 2.0 * st.params : 0)) / (device.hbm_gbps * 1e9));
  }
  const double M = layout.micro_batches;
  t.compute = M * slowest_compute;
  t.tp_comm = M * slowest_tp;
  t.pp_comm = M * slowest_pp;
  // 1F1B and GPipe alike: p - 1 micro-batch times of fill and drain; with V chunks per rank each of those is a
  // chunk's time, 1/V of a micro-batch on the stage (Note [Interleaved 1F1B] in parallel/pipeline_schedule.h).
  t.bubble = (layout.pp - 1) * slowest / std::max(layout.virtual_stages, 1);
  t.dp_exposed = dp_seconds;
  t.optimizer = optimizer_seconds;
  return t;
}

PlanEntry entry_of(const config::JobConfig& job, const PlanLayout& layout, const DeviceSpec& device,
                   const PlanConstants& constants, const std::vector<StagePlan>& stages) {
  PlanEntry e;
  e.layout = layout;
  e.memory = memory_of(job, layout, device, stages);
  e.time = time_of(job, layout, device, constants, stages);
  const ModelConfig m = model_config_from(job.model());
  const double T = job.train().seq_len();
  const double tokens = static_cast<double>(job.train().global_batch()) * T;
  e.tokens_per_s = tokens / e.time.total();
  const double devices = static_cast<double>(layout.tp) * layout.pp * layout.dp;
  const double peak = (m.dtype == DType::kBF16 ? device.peak_tflops_bf16 : device.peak_tflops_fp32) * 1e12;
  e.mfu = model_flops_per_token(m, static_cast<int64_t>(T)) * e.tokens_per_s / (devices * peak);
  return e;
}

std::vector<StagePlan> stages_of(const config::JobConfig& job, const PlanLayout& layout) {
  return plan_stages(model_config_from(job.model()), layout.tp, layout.pp, layout.virtual_stages);
}

}  // namespace

MemoryPrediction predict_memory(const config::JobConfig& job, const PlanLayout& layout, const DeviceSpec& device) {
  return memory_of(job, layout, device, stages_of(job, layout));
}

TimePrediction predict_time(const config::JobConfig& job, const PlanLayout& layout, const DeviceSpec& device,
                            const PlanConstants& constants) {
  return time_of(job, layout, device, constants, stages_of(job, layout));
}

PlanEntry predict(const config::JobConfig& job, const PlanLayout& layout, const DeviceSpec& device,
                  const PlanConstants& constants) {
  return entry_of(job, layout, device, constants, stages_of(job, layout));
}

PlanResult plan_layouts(const config::JobConfig& job, int devices, const DeviceSpec& device,
                        const PlanConstants& constants) {
  validate_job_config(job);
  PlanResult result;
  result.notes.push_back("ZeRO-3 and zero-bubble schedules: not considered (tessera train has neither)");
  if (recompute_options().size() == 1) {
    result.notes.push_back("activation recomputation: not considered (this build's train has no train.recompute)");
  }
  // Note [Layout constraints]: with parallel.layout=auto the layout fields set explicitly are kept, as a Megatron
  // user expects of the arguments they pass; only the others are chosen. Without it every field is free (`tessera
  // plan` of a config that sets parallel.tp still shows every tp).
  const config::ParallelConfig& asked = job.parallel();
  const config::TrainConfig& train = job.train();
  const bool constrained = asked.has_layout();
  auto keeps = [&](bool set, int value, int candidate) { return !constrained || !set || value == candidate; };
  std::vector<Recompute> recomputes = recompute_options();
  const ModelConfig trained = training_model_config(job);
  const bool recompute_set = constrained && (train.has_recompute() || train.has_recompute_every());
  if (recompute_set) recomputes = {trained.recompute};
  if (constrained) {
    std::string kept;
    auto keep = [&](bool set, const char* name, int value) {
      if (set) kept += str_cat(kept.empty() ? "" : ", ", name, "=", value);
    };
    keep(asked.has_tp(), "parallel.tp", asked.tp());
    keep(asked.has_pp(), "parallel.pp", asked.pp());
    keep(asked.has_dp(), "parallel.dp", asked.dp());
    keep(asked.has_micro_batches(), "parallel.micro_batches", asked.micro_batches());
    keep(asked.has_zero_stage(), "parallel.zero_stage", asked.zero_stage());
    keep(asked.has_sequence_parallel(), "parallel.sequence_parallel", asked.sequence_parallel() ? 1 : 0);
    keep(asked.has_virtual_stages(), "parallel.virtual_stages", asked.virtual_stages());
    if (recompute_set) kept += str_cat(kept.empty() ? "" : ", ", "train.recompute=", recompute_name(trained.recompute));
    if (recompute_set && trained.recompute == Recompute::kFull) {
      kept += str_cat(" every ", trained.recompute_every);
    }
    result.notes.push_back(
        str_cat("parallel.layout=auto: ", kept.empty() ? "no layout field set, all chosen" : "kept as set: " + kept));
  }
  const double capacity = device.memory_gb * 1e9;
  for (int tp : divisors_of(devices)) {
    if (!keeps(asked.has_tp(), asked.tp(), tp)) continue;
    for (int pp : divisors_of(devices / tp)) {
      const int dp = devices / tp / pp;
      if (!keeps(asked.has_pp(), asked.pp(), pp) || !keeps(asked.has_dp(), asked.dp(), dp)) continue;
      const int global_batch = job.train().global_batch();
      for (int micro_batches : divisors_of(std::max(global_batch / dp, 1))) {
        if (!keeps(asked.has_micro_batches(), asked.micro_batches(), micro_batches)) continue;
        config::JobConfig candidate = job;
        config::ParallelConfig* parallel = candidate.mutable_parallel();
        parallel->clear_layout();
        parallel->set_tp(tp);
        parallel->set_pp(pp);
        parallel->set_dp(dp);
        parallel->set_micro_batches(micro_batches);
        for (int virtual_stages = 1; virtual_stages <= kMaxVirtualStages; ++virtual_stages) {
          if (virtual_stages > 1 && pp == 1) break;
          if (!keeps(asked.has_virtual_stages(), asked.virtual_stages(), virtual_stages)) continue;
          std::vector<StagePlan> stages;  // of (tp, pp, virtual_stages), once a candidate of them is legal
          for (bool sequence_parallel : {false, true}) {
            if (sequence_parallel && tp == 1) continue;
            if (!keeps(asked.has_sequence_parallel(), asked.sequence_parallel() ? 1 : 0, sequence_parallel ? 1 : 0)) {
              continue;
            }
            parallel->set_virtual_stages(virtual_stages);
            parallel->set_sequence_parallel(sequence_parallel);
            Layout resolved;
            try {
              resolved = resolve_layout(candidate, devices);  // the rules `train` applies, nothing re-derived
            } catch (const ConfigError&) {
              ++result.illegal;
              continue;
            }
            for (int zero_stage : {0, 1, 2}) {
              if (zero_stage >= 1 && dp == 1) continue;  // the same layout as ZeRO 0
              if (!keeps(asked.has_zero_stage(), asked.zero_stage(), zero_stage)) continue;
              for (Recompute recompute : recomputes) {
                const int every = recompute == Recompute::kFull && recompute_set ? trained.recompute_every : 1;
                PlanLayout layout{tp,
                                  pp,
                                  dp,
                                  micro_batches,
                                  resolved.micro_batch_size,
                                  zero_stage,
                                  recompute,
                                  every,
                                  std::max(train.threads(), 1),
                                  sequence_parallel,
                                  virtual_stages};
                if (stages.empty()) stages = stages_of(candidate, layout);
                PlanEntry e = entry_of(candidate, layout, device, constants, stages);
                if (e.memory.total() > capacity) {
                  ++result.refused_memory;
                  continue;
                }
                result.fits.push_back(e);
              }
            }
          }
        }
      }
    }
  }
  std::stable_sort(result.fits.begin(), result.fits.end(),
                   [](const PlanEntry& a, const PlanEntry& b) { return a.tokens_per_s > b.tokens_per_s; });
  return result;
}

MeasuredRun read_measured_run(const std::string& run_dir) {
  MeasuredRun run;
  run.where = run_dir;
  run.job = load_job_config(run_dir + "/config.textproto", {});
  std::ifstream metrics(run_dir + "/metrics.jsonl");
  TS_CHECK(metrics.good(), ConfigError, "--calibrate ", run_dir, ": no metrics.jsonl there; give the run directory ",
           "of a finished `tessera train --run-dir` run");
  std::vector<double> ms;
  std::string line;
  while (std::getline(metrics, line)) {
    if (line.empty()) continue;
    const Json row = parse_json(line, run_dir + "/metrics.jsonl");
    if (const auto v = row.find("ms_per_step"); v != row.end() && v->is_number()) ms.push_back(v->get<double>());
  }
  TS_CHECK(!ms.empty(), ConfigError, "--calibrate ", run_dir, ": metrics.jsonl has no ms_per_step; run at least ",
           "one step");
  if (ms.size() > 1) ms.erase(ms.begin());  // the first step warms caches and allocators
  std::sort(ms.begin(), ms.end());
  run.step_seconds = ms[ms.size() / 2] / 1e3;
  return run;
}

PlanLayout plan_layout_of(const config::JobConfig& job, const Layout& resolved) {
  const ModelConfig m = training_model_config(job);
  return PlanLayout{resolved.tp,
                    resolved.pp,
                    resolved.dp,
                    resolved.micro_batches,
                    resolved.micro_batch_size,
                    job.parallel().zero_stage(),
                    m.recompute,
                    m.recompute_every,
                    std::max(job.train().threads(), 1),
                    job.parallel().sequence_parallel() && resolved.tp > 1,
                    std::max(job.parallel().virtual_stages(), 1)};
}

namespace {

PlanLayout layout_of(const config::JobConfig& job) {
  const config::ParallelConfig& p = job.parallel();
  const int dp = p.has_dp() ? p.dp() : 1;
  return plan_layout_of(job, resolve_layout(job, p.tp() * p.pp() * dp));
}

}  // namespace

PlanConstants calibrate(const std::vector<MeasuredRun>& runs, const DeviceSpec& device, PlanConstants start,
                        double* rms_relative_error) {
  TS_CHECK(!runs.empty(), ConfigError, "--calibrate needs at least one run directory");
  std::vector<PlanLayout> layouts;
  bool communicates = false;
  for (const MeasuredRun& r : runs) {
    layouts.push_back(layout_of(r.job));
    const PlanLayout& l = layouts.back();
    communicates = communicates || l.tp > 1 || l.pp > 1 || l.dp > 1;
  }
  auto error = [&](const PlanConstants& k) {
    double sum = 0;
    for (size_t i = 0; i < runs.size(); ++i) {
      const double predicted = predict_time(runs[i].job, layouts[i], device, k).total();
      const double rel = (predicted - runs[i].step_seconds) / runs[i].step_seconds;
      sum += rel * rel;
    }
    return sum;
  };
  PlanConstants best = start;
  double best_error = error(start);
  // Least squares over a log grid: efficiencies from 0.1% to 100%.
  for (int i = 0; i <= 120; ++i) {
    const double e = std::pow(10.0, -3.0 + 3.0 * i / 120);
    for (int j = 0; j <= (communicates ? 120 : 0); ++j) {
      PlanConstants k = start;
      k.compute_efficiency = e;
      if (communicates) k.comm_efficiency = std::pow(10.0, -3.0 + 3.0 * j / 120);
      const double err = error(k);
      if (err < best_error) {
        best_error = err;
        best = k;
      }
    }
  }
  // Then refine around the best grid point: multiplicative steps, halved until below 0.01%.
  for (double step = std::pow(10.0, 3.0 / 120); step > 1.0001; step = std::sqrt(step)) {
    for (bool improved = true; improved;) {
      improved = false;
      for (int axis = 0; axis < (communicates ? 2 : 1); ++axis) {
        for (double f : {step, 1 / step}) {
          PlanConstants k = best;
          double& v = axis == 0 ? k.compute_efficiency : k.comm_efficiency;
          v = std::min(1.0, v * f);
          const double err = error(k);
          if (err < best_error) {
            best_error = err;
            best = k;
            improved = true;
          }
        }
      }
    }
  }
  if (rms_relative_error != nullptr) *rms_relative_error = std::sqrt(best_error / runs.size());
  return best;
}

double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  TS_ASSERT(a.size() == b.size() && a.size() >= 2, "spearman of ", a.size(), " and ", b.size());
  auto ranks = [](const std::vector<double>& v) {
    std::vector<size_t> order(v.size());
    for (size_t i = 0; i < v.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t x, size_t y) { return v[x] < v[y]; });
    std::vector<double> r(v.size());
    for (size_t i = 0; i < order.size();) {
      size_t j = i;
      while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
      for (size_t k = i; k <= j; ++k) r[order[k]] = (i + j) / 2.0 + 1;
      i = j + 1;
    }
    return r;
  };
  const std::vector<double> ra = ranks(a), rb = ranks(b);
  const double n = static_cast<double>(a.size()), mean = (n + 1) / 2;
  double cov = 0, va = 0, vb = 0;
  for (size_t i = 0; i < ra.size(); ++i) {
    cov += (ra[i] - mean) * (rb[i] - mean);
    va += (ra[i] - mean) * (ra[i] - mean);
    vb += (rb[i] - mean) * (rb[i] - mean);
  }
  return va > 0 && vb > 0 ? cov / std::sqrt(va * vb) : 0;
}

}  // namespace tessera
