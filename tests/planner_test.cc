// The layout planner (launcher/run/planner.h): its activation memory equals what real models plan in their
// arenas (with and without train.recompute) and its parameter counts what they allocate, over many layouts of
// two sizes of both architectures; the CPU runtime terms add up; what it enumerates is exactly what
// resolve_layout accepts; parallel.layout=auto's choice and constraints (launcher/run/auto_layout.h); memory
// refusals, calibration and the rank correlation behave.
#include "launcher/run/planner.h"

#include <gtest/gtest.h>

#include <stdexcept>

#include "core/check.h"
#include "kernels/cpu/cpu_backend.h"
#include "launcher/common/config.h"
#include "launcher/run/auto_layout.h"
#include "models/registry.h"
#include "parallel/pipeline_schedule.h"

namespace tessera {
namespace {

// Rank `rank` of a tensor-parallel group of `size`, for building one rank's shard in one process: building a
// model does not communicate, so every operation is an error.
class ShapeOnlyGroup final : public ProcessGroup {
 public:
  ShapeOnlyGroup(int rank, int size) : rank_(rank), size_(size), world_ranks_(size) {
    for (int i = 0; i < size; ++i) world_ranks_[i] = i;
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return world_ranks_; }
  WorkHandle all_reduce(Tensor, ReduceOp) override { throw std::logic_error("no communication"); }
  WorkHandle reduce_scatter(Tensor, Tensor, ReduceOp) override { throw std::logic_error("no communication"); }
  WorkHandle all_gather(Tensor, Tensor) override { throw std::logic_error("no communication"); }
  WorkHandle broadcast(Tensor, int) override { throw std::logic_error("no communication"); }
  WorkHandle send(Tensor, int, int) override { throw std::logic_error("no communication"); }
  WorkHandle recv(Tensor, int, int) override { throw std::logic_error("no communication"); }
  void barrier() override {}

 private:
  int rank_, size_;
  std::string name_ = "tp";
  std::vector<int> world_ranks_;
};

config::JobConfig job_of(config::Arch arch, bool big, bool bf16) {
  config::JobConfig job;
  job.set_name("planner-test");
  auto* m = job.mutable_model();
  m->set_arch(arch);
  m->set_vocab_size(big ? 5000 : 2048);
  m->set_n_layer(big ? 6 : 4);
  m->set_n_head(big ? 8 : 4);
  m->set_n_embd(big ? 256 : 128);
  m->set_max_seq_len(big ? 256 : 128);
  if (arch == config::LLAMA) {
    m->set_n_kv_head(big ? 4 : 2);
    m->set_ffn_hidden(big ? 688 : 352);
  }
  if (bf16) m->set_dtype(config::BF16);
  job.mutable_train()->set_steps(1);
  job.mutable_train()->set_global_batch(big ? 8 : 16);
  job.mutable_train()->set_seq_len(big ? 256 : 64);
  job.mutable_data()->set_mock(true);
  return job;
}

struct Case {
  config::Arch arch;
  bool big, bf16;
  int tp, pp, micro_batches;
};

// Every stage of every layout: the planner's arena bytes and parameter elements equal the real model's.
TEST(PlannerMemory, ArenaAndParametersEqualRealModels) {
  const Case cases[] = {
      {config::GPT2, false, false, 1, 1, 1}, {config::GPT2, false, false, 2, 1, 2},
      {config::GPT2, false, true, 1, 2, 4},  {config::GPT2, false, false, 4, 2, 2},
      {config::GPT2, false, false, 1, 4, 8}, {config::GPT2, false, false, 2, 6, 4},
      {config::GPT2, true, false, 2, 3, 4},  {config::GPT2, true, true, 8, 2, 2},
      {config::GPT2, true, false, 4, 1, 1},  {config::LLAMA, false, false, 1, 1, 1},
      {config::LLAMA, false, true, 2, 2, 4}, {config::LLAMA, false, false, 2, 4, 2},
      {config::LLAMA, true, false, 4, 2, 8}, {config::LLAMA, true, true, 2, 3, 2},
      {config::LLAMA, true, false, 1, 6, 8},
  };
  CpuBackend backend(1);
  int checked = 0;
  for (const Case& c : cases) {
    config::JobConfig job = job_of(c.arch, c.big, c.bf16);
    const int dp = 1;
    job.mutable_parallel()->set_tp(c.tp);
    job.mutable_parallel()->set_pp(c.pp);
    job.mutable_parallel()->set_micro_batches(c.micro_batches);
    const Layout layout = resolve_layout(job, c.tp * c.pp * dp);
    const ModelConfig m = model_config_from(job.model());
    const auto split = split_layers(m.n_layer, c.pp);
    double max_arena = 0;
    for (int s = 0; s < c.pp; ++s) {
      const StageRange stage{split[s].first, split[s].second, s == 0, s == c.pp - 1};
      const int slots = pipeline_in_flight(PipelineKind::kOneFOneB, c.pp, s, c.micro_batches);
      ShapeOnlyGroup tp(c.tp - 1, c.tp);  // the last TP rank: its vocabulary shard holds the padding
      auto model = create_model(m, backend, tp, stage, layout.micro_batch_size, job.train().seq_len(), slots);
      const ArenaPlanShape shape{c.tp, stage, layout.micro_batch_size, job.train().seq_len(), slots};
      const std::string where = std::string(m.arch) + (c.big ? " big" : " small") + " tp " + std::to_string(c.tp) +
                                " pp " + std::to_string(c.pp) + " stage " + std::to_string(s);
      EXPECT_EQ(model_architecture(m.arch).train_arena_bytes(m, shape), model->arena_bytes()) << where;
      max_arena = std::max(max_arena, static_cast<double>(model->arena_bytes()));
      ++checked;
    }
    PlanLayout plan{c.tp, c.pp, dp, c.micro_batches, layout.micro_batch_size, 0, Recompute::kNone, 1};
    const MemoryPrediction predicted = predict_memory(job, plan, cpu_device(10, 100, c.tp * c.pp));
    // The fullest stage's shard, as the real model on that stage holds it.
    const StageRange fullest{split[predicted.stage].first, split[predicted.stage].second, predicted.stage == 0,
                             predicted.stage == c.pp - 1};
    ShapeOnlyGroup tp(0, c.tp);
    auto model = create_model(m, backend, tp, fullest, layout.micro_batch_size, job.train().seq_len(),
                              pipeline_in_flight(PipelineKind::kOneFOneB, c.pp, predicted.stage, c.micro_batches));
    EXPECT_EQ(predicted.params, model->flat_params().numel());
    EXPECT_EQ(predicted.activations, static_cast<double>(model->arena_bytes()));
    EXPECT_LE(predicted.activations, max_arena);
  }
  EXPECT_GE(checked, 30);
}

// With train.recompute SELECTIVE, FULL and FULL every 2nd block, every stage's planned arena equals the real
// model's, for both architectures, tp 1 and 2, with and without a pipeline (pp 3 of 4 or 6 layers leaves stages
// whose first block is not a multiple of recompute_every).
TEST(PlannerMemory, RecomputedArenasEqualRealModels) {
  struct Mode {
    Recompute recompute;
    int every;
  };
  const Mode modes[] = {{Recompute::kSelective, 1}, {Recompute::kFull, 1}, {Recompute::kFull, 2}};
  CpuBackend backend(1);
  int checked = 0;
  for (config::Arch arch : {config::GPT2, config::LLAMA}) {
    for (bool big : {false, true}) {
      for (int tp : {1, 2}) {
        for (int pp : {1, 2, 3}) {
          for (const Mode& mode : modes) {
            config::JobConfig job = job_of(arch, big, /*bf16=*/big);
            job.mutable_parallel()->set_tp(tp);
            job.mutable_parallel()->set_pp(pp);
            job.mutable_parallel()->set_micro_batches(pp > 1 ? 4 : 2);
            job.mutable_train()->set_recompute(mode.recompute == Recompute::kFull ? config::FULL : config::SELECTIVE);
            if (mode.every != 1) job.mutable_train()->set_recompute_every(mode.every);
            const Layout layout = resolve_layout(job, tp * pp);
            const ModelConfig m = training_model_config(job);
            ASSERT_EQ(m.recompute, mode.recompute);
            ASSERT_EQ(m.recompute_every, mode.every);
            const auto split = split_layers(m.n_layer, pp);
            std::vector<double> arenas;
            for (int s = 0; s < pp; ++s) {
              const StageRange stage{split[s].first, split[s].second, s == 0, s == pp - 1};
              const int slots = pipeline_in_flight(PipelineKind::kOneFOneB, pp, s, layout.micro_batches);
              ShapeOnlyGroup group(tp - 1, tp);
              auto model =
                  create_model(m, backend, group, stage, layout.micro_batch_size, job.train().seq_len(), slots);
              const ArenaPlanShape shape{tp, stage, layout.micro_batch_size, job.train().seq_len(), slots};
              EXPECT_EQ(model_architecture(m.arch).train_arena_bytes(m, shape), model->arena_bytes())
                  << m.arch << (big ? " big" : " small") << " tp " << tp << " pp " << pp << " stage " << s << " "
                  << recompute_name(mode.recompute) << " every " << mode.every;
              arenas.push_back(static_cast<double>(model->arena_bytes()));
              ++checked;
            }
            // The planner, given the job's layout, predicts the real arena of the stage it finds fullest.
            const MemoryPrediction predicted =
                predict_memory(job, plan_layout_of(job, layout), cpu_device(10, 100, tp * pp));
            EXPECT_EQ(predicted.activations, arenas.at(predicted.stage)) << m.arch << " tp " << tp << " pp " << pp;
          }
        }
      }
    }
  }
  EXPECT_EQ(checked, 2 * 2 * 2 * (1 + 2 + 3) * 3);
}

// Sequence parallelism: the arena formulas equal the real sequence-parallel arenas (every stage, both
// architectures, f32 and bf16, with recomputation too), and the activations take less memory than without it.
TEST(PlannerMemory, SequenceParallelArenaEqualsRealModelsAndShrinks) {
  const Case cases[] = {
      {config::GPT2, false, false, 2, 1, 2},
      {config::GPT2, true, true, 4, 2, 2},
      {config::LLAMA, false, false, 2, 2, 4},
      {config::LLAMA, true, true, 2, 3, 2},
  };
  CpuBackend backend(1);
  for (const Case& c : cases) {
    for (Recompute recompute : {Recompute::kNone, Recompute::kFull}) {
      config::JobConfig job = job_of(c.arch, c.big, c.bf16);
      job.mutable_parallel()->set_tp(c.tp);
      job.mutable_parallel()->set_pp(c.pp);
      job.mutable_parallel()->set_micro_batches(c.micro_batches);
      job.mutable_parallel()->set_sequence_parallel(true);
      const Layout layout = resolve_layout(job, c.tp * c.pp);
      ModelConfig m = model_config_from(job.model());
      m.recompute = recompute;
      const auto split = split_layers(m.n_layer, c.pp);
      for (int s = 0; s < c.pp; ++s) {
        const StageRange stage{split[s].first, split[s].second, s == 0, s == c.pp - 1};
        const int slots = pipeline_in_flight(PipelineKind::kOneFOneB, c.pp, s, c.micro_batches);
        ShapeOnlyGroup tp(c.tp - 1, c.tp);
        const std::string where = std::string(m.arch) + (c.big ? " big" : " small") + " tp " + std::to_string(c.tp) +
                                  " pp " + std::to_string(c.pp) + " stage " + std::to_string(s) + " recompute " +
                                  recompute_name(recompute);
        m.sequence_parallel = false;
        auto plain = create_model(m, backend, tp, stage, layout.micro_batch_size, job.train().seq_len(), slots);
        m.sequence_parallel = true;
        auto split_model = create_model(m, backend, tp, stage, layout.micro_batch_size, job.train().seq_len(), slots);
        EXPECT_TRUE(split_model->sequence_parallel()) << where;
        EXPECT_EQ(split_model->stage_rows() * c.tp, plain->stage_rows()) << where;
        EXPECT_LT(split_model->arena_bytes(), plain->arena_bytes()) << where;
        ArenaPlanShape shape{c.tp, stage, layout.micro_batch_size, job.train().seq_len(), slots};
        shape.sequence_parallel = true;
        EXPECT_EQ(model_architecture(m.arch).train_arena_bytes(m, shape), split_model->arena_bytes()) << where;
      }
    }
  }
}

// Interleaved 1F1B (parallel.virtual_stages): a rank's chunks share one pool of slots, each planned for the
// largest chunk; the arena formulas see the chunks through ArenaPlanShape::stage and equal the real arenas.
TEST(PlannerMemory, ArenaEqualsRealModelsWithVirtualStages) {
  struct VirtualCase {
    config::Arch arch;
    bool big, bf16;
    int tp, pp, virtual_stages, micro_batches;
  };
  const VirtualCase cases[] = {
      {config::GPT2, false, false, 1, 2, 2, 2}, {config::GPT2, false, true, 2, 2, 2, 4},
      {config::GPT2, true, false, 1, 2, 3, 4},  {config::LLAMA, false, false, 1, 2, 2, 2},
      {config::LLAMA, true, true, 2, 2, 2, 4},  {config::LLAMA, true, false, 1, 3, 2, 3},
  };
  CpuBackend backend(1);
  int checked = 0;
  for (const VirtualCase& c : cases) {
    config::JobConfig job = job_of(c.arch, c.big, c.bf16);
    job.mutable_parallel()->set_tp(c.tp);
    job.mutable_parallel()->set_pp(c.pp);
    job.mutable_parallel()->set_virtual_stages(c.virtual_stages);
    job.mutable_parallel()->set_micro_batches(c.micro_batches);
    job.mutable_train()->set_global_batch(2 * c.micro_batches);
    const Layout layout = resolve_layout(job, c.tp * c.pp);
    const ModelConfig m = model_config_from(job.model());
    for (int s = 0; s < c.pp; ++s) {
      StageRange stage;
      stage.chunks = rank_chunks(m.n_layer, c.pp, s, c.virtual_stages);
      stage.first_layer = stage.chunks.front().first;
      stage.end_layer = stage.chunks.back().second;
      stage.has_embedding = s == 0;
      stage.has_head = s == c.pp - 1;
      const int slots = pipeline_in_flight(PipelineKind::kOneFOneB, c.pp, s, c.micro_batches, c.virtual_stages);
      ShapeOnlyGroup tp(c.tp - 1, c.tp);
      auto model = create_model(m, backend, tp, stage, layout.micro_batch_size, job.train().seq_len(), slots);
      const ArenaPlanShape shape{c.tp, stage, layout.micro_batch_size, job.train().seq_len(), slots};
      EXPECT_EQ(model_architecture(m.arch).train_arena_bytes(m, shape), model->arena_bytes())
          << m.arch << " tp " << c.tp << " pp " << c.pp << " V " << c.virtual_stages << " stage " << s;
      EXPECT_EQ(model->activation_memory().total(), static_cast<int64_t>(model->arena_bytes()));
      ++checked;
    }
  }
  EXPECT_EQ(checked, 13);
}

// Recomputation keeps less, FULL least, FULL of every other block in between, and never changes the parameters.
TEST(PlannerMemory, RecomputationShrinksActivations) {
  const config::JobConfig job = job_of(config::LLAMA, true, true);
  ModelConfig m = model_config_from(job.model());
  const ArenaPlanShape shape{2, StageRange{0, m.n_layer, true, true}, 4, 256, 4};
  const auto arena = model_architecture("llama").train_arena_bytes;
  const size_t none = arena(m, shape);
  m.recompute = Recompute::kSelective;
  const size_t selective = arena(m, shape);
  m.recompute = Recompute::kFull;
  const size_t full = arena(m, shape);
  m.recompute_every = 2;
  const size_t half = arena(m, shape);
  EXPECT_LT(selective, none);
  EXPECT_LT(full, selective);
  EXPECT_LT(full, half);
  EXPECT_LT(half, none);
}

// What the planner offers is what train accepts, and nothing train accepts is missing.
TEST(PlannerLayouts, EnumeratesExactlyTheLegalLayouts) {
  const config::JobConfig job = job_of(config::LLAMA, false, false);  // 4 heads, 2 kv heads, 4 layers, batch 16
  const int devices = 8;
  const PlanResult result = plan_layouts(job, devices, cpu_device(10, 1000, devices), PlanConstants());
  ASSERT_FALSE(result.fits.empty());
  EXPECT_EQ(result.refused_memory, 0);
  int legal = 0;
  for (int tp = 1; tp <= devices; ++tp)
    for (int pp = 1; tp * pp <= devices; ++pp)
      for (int mb = 1; mb <= 16; ++mb) {
        if (devices % (tp * pp) != 0) continue;
        // Virtual stages 1..4 (pp > 1 only), sequence parallelism on and off (tp > 1 only): each as train accepts.
        for (int v = 1; v <= (pp > 1 ? 4 : 1); ++v)
          for (int sp = 0; sp <= (tp > 1 ? 1 : 0); ++sp) {
            config::JobConfig c = job;
            c.mutable_parallel()->set_tp(tp);
            c.mutable_parallel()->set_pp(pp);
            c.mutable_parallel()->set_micro_batches(mb);
            c.mutable_parallel()->set_virtual_stages(v);
            c.mutable_parallel()->set_sequence_parallel(sp == 1);
            try {
              const Layout l = resolve_layout(c, devices);
              legal += l.dp > 1 ? 3 : 1;  // ZeRO 0, 1 and 2
            } catch (const ConfigError&) {
            }
          }
      }
  EXPECT_EQ(static_cast<int>(result.fits.size()), legal * static_cast<int>(recompute_options().size()));
  bool saw_sp = false, saw_virtual = false, saw_zero2 = false;
  for (const PlanEntry& e : result.fits) {
    saw_sp |= e.layout.sequence_parallel;
    saw_virtual |= e.layout.virtual_stages > 1;
    saw_zero2 |= e.layout.zero_stage == 2;
    EXPECT_EQ(job.model().n_kv_head() % e.layout.tp, 0);
    EXPECT_GT(e.time.total(), 0);
  }
  EXPECT_TRUE(saw_sp && saw_virtual && saw_zero2);
  for (size_t i = 1; i < result.fits.size(); ++i)
    EXPECT_GE(result.fits[i - 1].tokens_per_s, result.fits[i].tokens_per_s);
}

// The levers' predicted effects: sequence parallelism shrinks the activations, ZeRO-2 the gradients, and
// interleaving the bubble (by the number of chunks) for more pipeline messages.
TEST(PlannerModel, LeversChangeWhatTheyShould) {
  const config::JobConfig job = job_of(config::GPT2, true, false);
  const DeviceSpec device = cpu_device(10, 1000, 8);
  const PlanConstants k;
  PlanLayout base{2, 2, 2, 4, 1, 1, Recompute::kNone, 1};
  PlanLayout sp = base, zero2 = base, interleaved = base;
  sp.sequence_parallel = true;
  zero2.zero_stage = 2;
  interleaved.virtual_stages = 2;
  EXPECT_LT(predict_memory(job, sp, device).activations, predict_memory(job, base, device).activations);
  EXPECT_LT(predict_memory(job, zero2, device).grads, predict_memory(job, base, device).grads);
  const TimePrediction t = predict_time(job, base, device, k), ti = predict_time(job, interleaved, device, k);
  EXPECT_LT(ti.bubble, t.bubble);
  EXPECT_GT(ti.pp_comm, t.pp_comm);
}

TEST(PlannerLayouts, RefusesWhatDoesNotFit) {
  const config::JobConfig job = job_of(config::GPT2, true, false);
  const PlanResult roomy = plan_layouts(job, 4, cpu_device(10, 1000, 4), PlanConstants());
  ASSERT_FALSE(roomy.fits.empty());
  // The 4 ranks share the node's memory: each has a quarter of it.
  EXPECT_DOUBLE_EQ(cpu_device(10, 1000, 4).memory_gb, 250);
  // A node just below 4 times the smallest layout's need: everything is refused; just above, that one fits.
  double least = 1e300;
  for (const PlanEntry& e : roomy.fits) least = std::min(least, e.memory.total());
  const PlanResult tight = plan_layouts(job, 4, cpu_device(10, 4 * least * 0.999 / 1e9, 4), PlanConstants());
  EXPECT_TRUE(tight.fits.empty());
  EXPECT_EQ(tight.refused_memory, static_cast<int>(roomy.fits.size()));
  EXPECT_FALSE(plan_layouts(job, 4, cpu_device(10, 4 * least * 1.001 / 1e9, 4), PlanConstants()).fits.empty());
}

// The CPU runtime terms: the process baseline as given, MPI growing with the ranks on the node, the threads'
// buffers with train.threads; total is what is allocated plus them.
TEST(PlannerMemory, CpuRuntimeTerms) {
  config::JobConfig job = job_of(config::GPT2, false, false);
  const PlanLayout one{1, 1, 1, 1, 16, 0, Recompute::kNone, 1, 1};
  const MemoryPrediction a = predict_memory(job, one, cpu_device(10, 100, 1, 150e6));
  EXPECT_EQ(a.process, 150e6);
  EXPECT_GT(a.mpi, 0);
  EXPECT_GT(a.threads, 0);
  EXPECT_GT(a.rank, 0);
  EXPECT_DOUBLE_EQ(a.total(), a.allocated() + a.process + a.mpi + a.threads + a.rank);
  PlanLayout four = one;
  four.dp = 4;
  four.micro_batch_size = 4;
  four.threads = 2;
  const MemoryPrediction b = predict_memory(job, four, cpu_device(10, 100, 4, 150e6));
  EXPECT_DOUBLE_EQ(b.mpi - a.mpi, 3 * cpu_device(10, 100, 4).mpi_peer_bytes);
  EXPECT_DOUBLE_EQ(b.threads, 2 * a.threads);
  // No runtime on the GPUs' side of the table but their workspace.
  const MemoryPrediction g = predict_memory(job, one, planner_device("H100-SXM"));
  EXPECT_EQ(g.process + g.mpi + g.threads + g.rank, 0);
  EXPECT_EQ(g.runtime(), g.workspace);
}

// parallel.layout=auto: the plan's best entry, set fields kept, nothing left when they cannot be met; the GPU
// table matched by the driver's names.
TEST(PlannerAutoLayout, ChoosesTheBestAndKeepsWhatIsSet) {
  config::JobConfig job = job_of(config::LLAMA, false, false);
  job.mutable_parallel()->set_layout("auto");
  const DeviceSpec device = cpu_device(kAutoLayoutCpuGflops, 100, 4);
  const AutoLayout chosen = choose_auto_layout(job, 4, device);
  const PlanResult plan = plan_layouts(job, 4, device, PlanConstants());
  EXPECT_EQ(chosen.chosen.layout.tp, plan.fits.front().layout.tp);
  EXPECT_EQ(chosen.chosen.layout.micro_batches, plan.fits.front().layout.micro_batches);
  EXPECT_FALSE(chosen.job.parallel().has_layout());
  EXPECT_EQ(resolve_layout(chosen.job, 4).tp, chosen.chosen.layout.tp);
  // Set fields are constraints.
  config::JobConfig tp2 = job;
  tp2.mutable_parallel()->set_tp(2);
  tp2.mutable_train()->set_recompute(config::FULL);
  const AutoLayout kept = choose_auto_layout(tp2, 4, device);
  EXPECT_EQ(kept.chosen.layout.tp, 2);
  EXPECT_EQ(kept.chosen.layout.recompute, Recompute::kFull);
  for (const PlanEntry& e : plan_layouts(tp2, 4, device, PlanConstants()).fits) EXPECT_EQ(e.layout.tp, 2);
  // Without layout=auto the same fields constrain nothing.
  config::JobConfig free = tp2;
  free.mutable_parallel()->clear_layout();
  bool other_tp = false;
  for (const PlanEntry& e : plan_layouts(free, 4, device, PlanConstants()).fits) other_tp |= e.layout.tp != 2;
  EXPECT_TRUE(other_tp);
  config::JobConfig impossible = job;
  impossible.mutable_parallel()->set_tp(3);
  EXPECT_THROW(choose_auto_layout(impossible, 4, device), ConfigError);
  impossible.mutable_parallel()->set_layout("best");
  EXPECT_THROW(validate_job_config(impossible), ConfigError);

  config::JobConfig gpu = job;
  gpu.mutable_train()->set_device(config::CUDA);
  std::string notice;
  EXPECT_EQ(auto_layout_device(gpu, 8, 100, 0, "NVIDIA H100 80GB HBM3", &notice).name, "H100-SXM");
  EXPECT_TRUE(notice.empty());
  EXPECT_EQ(auto_layout_device(gpu, 8, 100, 0, "NVIDIA A100-SXM4-80GB", &notice).name, "A100-80GB");
  EXPECT_EQ(auto_layout_device(gpu, 8, 100, 0, "NVIDIA H200", &notice).name, "H200");
  EXPECT_EQ(auto_layout_device(gpu, 8, 100, 0, "NVIDIA A100-SXM4-40GB", &notice).name, "H100-SXM");
  EXPECT_NE(notice.find("does not know the GPU"), std::string::npos);
  EXPECT_EQ(auto_layout_device(job, 4, 100, 0, "", &notice).name, "cpu");
}

TEST(PlannerModel, MoreStagesMeanMoreBubbleAndMoreMicroBatchesLess) {
  const config::JobConfig job = job_of(config::GPT2, true, false);
  const DeviceSpec device = planner_device("h100-sxm");
  const PlanConstants k;
  const TimePrediction pp2 = predict_time(job, PlanLayout{1, 2, 1, 1, 8, 0, Recompute::kNone, 1}, device, k);
  const TimePrediction pp2m8 = predict_time(job, PlanLayout{1, 2, 1, 8, 1, 0, Recompute::kNone, 1}, device, k);
  EXPECT_GT(pp2.bubble, 0);
  EXPECT_NEAR(pp2.bubble / (pp2.compute + pp2.tp_comm + pp2.pp_comm + pp2.bubble), 0.5, 1e-9);  // (p-1)/(m+p-1)
  EXPECT_NEAR(pp2m8.bubble / (pp2m8.compute + pp2m8.tp_comm + pp2m8.pp_comm + pp2m8.bubble), 1.0 / 9, 1e-9);
  const TimePrediction tp2 = predict_time(job, PlanLayout{2, 1, 1, 1, 8, 0, Recompute::kNone, 1}, device, k);
  EXPECT_GT(tp2.tp_comm, 0);
  EXPECT_EQ(pp2.tp_comm, 0);
  EXPECT_THROW(planner_device("Z80"), ConfigError);
}

TEST(PlannerCalibration, RecoversTheEfficiencyItWasMeasuredWith) {
  const DeviceSpec device = cpu_device(20, 100, 2);
  PlanConstants truth;
  truth.compute_efficiency = 0.37;
  truth.comm_efficiency = 0.21;
  std::vector<MeasuredRun> runs;
  for (auto [tp, mb] : {std::pair{1, 1}, std::pair{2, 16}}) {
    const int dp = 1;
    config::JobConfig job = job_of(config::GPT2, false, false);
    job.mutable_parallel()->set_tp(tp);
    job.mutable_parallel()->set_dp(dp);
    job.mutable_parallel()->set_micro_batches(mb);
    const Layout l = resolve_layout(job, tp * dp);
    PlanLayout layout{tp, 1, dp, mb, l.micro_batch_size, 0, Recompute::kNone, 1};
    runs.push_back(MeasuredRun{job, predict_time(job, layout, device, truth).total(), "synthetic"});
  }
  double rms = 1;
  const PlanConstants fitted = calibrate(runs, device, PlanConstants(), &rms);
  EXPECT_NEAR(fitted.compute_efficiency, 0.37, 0.37 * 0.03);
  EXPECT_NEAR(fitted.comm_efficiency, 0.21, 0.21 * 0.03);
  EXPECT_LT(rms, 0.02);
}

TEST(PlannerStatistics, SpearmanRankCorrelation) {
  EXPECT_DOUBLE_EQ(spearman({1, 2, 3, 4}, {10, 20, 30, 40}), 1.0);
  EXPECT_DOUBLE_EQ(spearman({1, 2, 3, 4}, {4, 3, 2, 1}), -1.0);
  EXPECT_NEAR(spearman({1, 2, 3, 4, 5}, {2, 1, 4, 3, 5}), 0.8, 1e-12);
}

}  // namespace
}  // namespace tessera
