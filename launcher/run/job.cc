// Building a rank's training job.
#include "launcher/run/job.h"

#include <vector>

#include "core/check.h"
#include "launcher/common/human_format.h"
#include "launcher/run/device_setup.h"
#include "parallel/mpi_environment.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/zero_optimizer.h"

namespace tessera {

LrSchedule lr_schedule_from(const config::JobConfig& job) {
  const config::OptimizerConfig& o = job.optimizer();
  LrSchedule s;
  s.lr = o.lr();
  s.min_lr = o.min_lr();
  s.warmup_steps = o.warmup_steps();
  s.decay_steps = o.has_decay_steps() ? o.decay_steps() : job.train().steps() - o.warmup_steps();
  switch (o.schedule()) {
    case config::COSINE:
      s.decay = LrDecay::kCosine;
      break;
    case config::LINEAR:
      s.decay = LrDecay::kLinear;
      break;
    case config::CONSTANT:
      s.decay = LrDecay::kConstant;
      break;
  }
  return s;
}

namespace {

// This rank's pipeline stage: its blocks (virtual_stages chunks of them, Note [Interleaved 1F1B] in
// parallel/pipeline_schedule.h), the embedding on the first stage, the head on the last.
StageRange stage_of(const Job& job, int pp_rank, int virtual_stages) {
  StageRange stage;
  stage.has_embedding = pp_rank == 0;
  stage.has_head = pp_rank == job.layout.pp - 1;
  if (virtual_stages == 1) {
    const auto layers = split_layers(job.model_config.n_layer, job.layout.pp);
    stage.first_layer = layers[pp_rank].first;
    stage.end_layer = layers[pp_rank].second;
    return stage;
  }
  stage.chunks = rank_chunks(job.model_config.n_layer, job.layout.pp, pp_rank, virtual_stages);
  stage.first_layer = stage.chunks.front().first;
  stage.end_layer = stage.chunks.back().second;
  return stage;
}

}  // namespace

Job build_inference_job(const config::JobConfig& config, MpiEnvironment& mpi, const ProcessEnv& env, int batch,
                        int seq_len) {
  Job job;
  job.config = config;
  // Inference runs one model chunk per rank whatever layout trained the checkpoint (checkpoints are per
  // parameter), so a training config's virtual stages neither apply nor constrain the layout here.
  job.config.mutable_parallel()->clear_virtual_stages();
  job.world_rank = mpi.world_rank();
  job.layout = resolve_layout(job.config, mpi.world_size());
  TS_CHECK(job.layout.dp == 1, ConfigError, "generation runs one copy of the model, but parallel.tp=", job.layout.tp,
           " * parallel.pp=", job.layout.pp, " on ", mpi.world_size(), " ranks makes parallel.dp=", job.layout.dp,
           ": run on ", job.layout.tp * job.layout.pp, " ranks (mpirun -np ", job.layout.tp * job.layout.pp,
           "), or set parallel.tp and parallel.pp whose product is ", mpi.world_size());
  job.model_config = model_config_from(config.model());
  TS_ASSERT(batch >= 1 && seq_len >= 1 && seq_len <= job.model_config.max_seq_len, "inference plan of ", batch, " x ",
            seq_len);
  job.threads = config.train().threads() > 0 ? config.train().threads() : default_threads_per_rank(env);
  job.backend = make_backend(config, env, job.threads);
  RankGrid grid(job.layout.tp, job.layout.pp, job.layout.dp);
  job.groups = make_groups(config, grid, job.world_rank, *job.backend, env);
  // Inference runs one chunk per rank whatever the training layout was (checkpoints are per parameter).
  const StageRange stage = stage_of(job, job.groups.pp->rank(), 1);
  job.model =
      create_model(job.model_config, *job.backend, *job.groups.tp, stage, batch, seq_len, 1, ModelUse::kInference);
  return job;
}

Job build_job(const config::JobConfig& config, MpiEnvironment& mpi, const ProcessEnv& env) {
  Job job;
  job.config = config;
  job.world_rank = mpi.world_rank();
  job.layout = resolve_layout(config, mpi.world_size());
  job.model_config = training_model_config(config);
  const int zero_stage = config.parallel().zero_stage();
  if (zero_stage == 2) {
    // ZeRO-2: the blocks' gradients in a ring of one-layer slots, padded so that a reduce-scatter over the DP
    // group reads a slot in place (Note [ZeRO-2 gradient ring] in parallel/grad_sync.h).
    job.model_config.gradient_storage = GradientStorage::kLayerRing;
    job.model_config.gradient_ring = 2;
    job.model_config.gradient_ring_align = job.layout.dp;
  }
  job.threads = config.train().threads() > 0 ? config.train().threads() : default_threads_per_rank(env);
  job.backend = make_backend(config, env, job.threads);

  RankGrid grid(job.layout.tp, job.layout.pp, job.layout.dp);
  job.groups = make_groups(config, grid, job.world_rank, *job.backend, env);

  const int pp_rank = job.groups.pp->rank();
  const int virtual_stages = config.parallel().virtual_stages();
  const StageRange stage = stage_of(job, pp_rank, virtual_stages);
  const PipelineKind schedule =
      config.parallel().schedule() == config::GPIPE ? PipelineKind::kGPipe : PipelineKind::kOneFOneB;
  const int slots = pipeline_in_flight(schedule, job.layout.pp, pp_rank, job.layout.micro_batches, virtual_stages);
  job.model = create_model(job.model_config, *job.backend, *job.groups.tp, stage, job.layout.micro_batch_size,
                           config.train().seq_len(), slots);
  job.model->init_parameters(config.train().seed());

  AdamWConfig adamw;
  adamw.beta1 = config.optimizer().beta1();
  adamw.beta2 = config.optimizer().beta2();
  adamw.eps = config.optimizer().eps();
  adamw.weight_decay = config.optimizer().weight_decay();
  const bool zero = zero_stage >= 1;
  const DpGradSync::Mode sync_mode = zero_stage == 2   ? DpGradSync::Mode::kShardedGradients
                                     : zero_stage == 1 ? DpGradSync::Mode::kReduceScatter
                                                       : DpGradSync::Mode::kAllReduce;
  job.grad_sync = std::make_unique<DpGradSync>(*job.model, *job.backend, *job.groups.dp,
                                               config.parallel().dp_bucket_mb(), sync_mode);
  // The gradient norm sums over the groups that hold disjoint parts of the model (under ZeRO, DP too).
  std::vector<ProcessGroup*> norm_groups = {job.groups.tp.get(), job.groups.pp.get()};
  if (zero) {
    job.optimizer = std::make_unique<ZeroAdamW>(*job.model, *job.backend, *job.grad_sync, adamw, norm_groups);
  } else {
    job.optimizer = std::make_unique<AdamW>(*job.model, *job.backend, adamw, norm_groups);
  }

  TrainerOptions options;
  options.global_batch = config.train().global_batch();
  options.micro_batches = job.layout.micro_batches;
  options.seq_len = config.train().seq_len();
  options.grad_clip = config.train().grad_clip();
  options.spike_zscore = config.train().spike_zscore();
  options.schedule = schedule;
  options.lr = lr_schedule_from(config);
  job.trainer =
      std::make_unique<Trainer>(*job.model, *job.optimizer, *job.grad_sync, *job.backend, job.groups, options);
  return job;
}

std::string activation_memory_line(const Job& job) {
  const ActivationMemory& m = job.model->activation_memory();
  const ModelConfig& c = job.model_config;
  std::string mode =
      str_cat(job.model->sequence_parallel() ? "sequence parallel; " : "", "recompute ", recompute_name(c.recompute));
  if (c.recompute == Recompute::kFull && c.recompute_every > 1) mode += str_cat(" every ", c.recompute_every);
  if (c.recompute != Recompute::kNone) {
    mode += str_cat("; NONE would be ", human_bytes(static_cast<double>(m.none_bytes)));
  }
  return str_cat("activation memory: ", human_bytes(static_cast<double>(m.total())), " on rank ", job.world_rank, " (",
                 human_bytes(static_cast<double>(m.slot_bytes)), " in ", job.model->slots(), " slot(s), ",
                 human_bytes(static_cast<double>(m.shared_bytes)), " shared; ", mode, ")");
}

std::string gradient_memory_line(const Job& job) {
  const Model& model = *job.model;
  int64_t all = 0;
  for (const LocalParam& p : model.params()) all += p.value.numel();
  const int64_t flat = all * static_cast<int64_t>(sizeof(float));
  std::string how = "flat, every parameter's";
  if (model.gradient_storage() == GradientStorage::kLayerRing) {
    how = str_cat("ZeRO-2: ", model.gradient_ring_slots(),
                  " one-layer ring slot(s) + resident embeddings/norm/head; flat would be ",
                  human_bytes(static_cast<double>(flat)));
  }
  return str_cat("gradient memory: ", human_bytes(static_cast<double>(model.gradient_bytes())), " on rank ",
                 job.world_rank, " (", how, ")");
}

}  // namespace tessera
