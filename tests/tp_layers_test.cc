// Tensor-parallel layers against the unsharded model, on 2 ranks: one transformer block plus the
// vocab-parallel embedding and cross-entropy, with a vocabulary that TP does not divide (padding). For one
// micro-batch, each rank runs its TP shard and, in the same process, the unsharded model (a size-1 group);
// the per-token losses, the block's output and every parameter's gradient (each rank's slice of the
// unsharded gradient, padding rows zero) must agree to fp32 rounding. This checks each layer's forward and
// backward split, not only the end result of training. With sequence parallelism (Note [Sequence parallelism] in
// parallel/tensor_parallel.h) the block's output and its gradient are each rank's chunk of the tokens, the
// norms' gradients are partial sums until Model::reduce_sequence_parallel_grads, and everything else is the same.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "core/model_config.h"
#include "core/param_spec.h"
#include "kernels/cpu/cpu_backend.h"
#include "models/gpt2/gpt2_model.h"
#include "parallel/local_process_group.h"
#include "parallel/parallel_groups.h"
#include "parallel/rank_grid.h"

namespace tessera {
namespace {

std::vector<float> to_host(Backend& backend, Tensor t) {
  std::vector<float> host(t.numel());
  backend.copy_to_host(host.data(), t);
  return host;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::fabs(static_cast<double>(x)));
  return m;
}

TEST(TensorParallel, LayersMatchTheUnshardedModel) {
  int world_rank = 0, world_size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  if (world_size != 2) GTEST_SKIP() << "needs 2 ranks";
  ParallelGroups groups = make_mpi_groups(RankGrid(2, 1, 1), world_rank, 30.0);
  ASSERT_EQ(groups.tp->size(), 2);

  ModelConfig config;
  config.vocab_size = 51;  // padded to 52 over tp=2: rank 1 holds one padding row
  config.n_layer = 1;
  config.n_head = 4;
  config.n_embd = 16;
  config.max_seq_len = 8;
  const int B = 2, T = 8;
  CpuBackend backend(1);
  LocalProcessGroup single("tp");
  // Two stages' worth of checks in one: a stage with the block but no head exposes the block's output.
  // Each with tensor parallelism alone and with sequence parallelism.
  for (auto [sequence_parallel, with_head] :
       {std::pair{false, true}, std::pair{false, false}, std::pair{true, true}, std::pair{true, false}}) {
    SCOPED_TRACE(with_head ? "embedding + block + head" : "embedding + block");
    SCOPED_TRACE(sequence_parallel ? "sequence-parallel" : "tensor-parallel");
    config.sequence_parallel = sequence_parallel;
    StageRange stage{0, 1, true, with_head};
    Gpt2Model sharded(config, backend, *groups.tp, stage, B, T, 1);
    ASSERT_EQ(sharded.sequence_parallel(), sequence_parallel);
    // The rows of the block's output (and of its gradient) this rank holds.
    const int64_t rows = sharded.stage_rows(), first_row = sequence_parallel ? groups.tp->rank() * rows : 0;
    Gpt2Model full(config, backend, single, stage, B, T, 1);
    sharded.init_parameters(99);
    full.init_parameters(99);

    std::vector<int32_t> tokens(B * T), targets(B * T);
    for (int i = 0; i < B * T; ++i) {
      tokens[i] = (i * 7 + 3) % config.vocab_size;
      targets[i] = (i * 11 + 50) % config.vocab_size;  // includes 50, the last real row (on rank 1)
    }
    for (Gpt2Model* m : {&sharded, &full}) {
      backend.copy_from_host(m->tokens(0), tokens.data());
      backend.copy_from_host(m->targets(0), targets.data());
      m->zero_grads();
      m->forward(0, 0, true, 1.0f / (B * T));
    }
    // A fixed output gradient for the stage without the head.
    std::vector<float> d_out(static_cast<size_t>(B) * T * config.n_embd);
    for (size_t i = 0; i < d_out.size(); ++i) d_out[i] = 0.01f * static_cast<float>((i * 37) % 19) - 0.09f;
    Buffer d_buffer = backend.allocate(d_out.size() * sizeof(float));
    Tensor d_tensor = d_buffer.tensor(0, DType::kF32, {B, T, config.n_embd});
    backend.copy_from_host(d_tensor, d_out.data());
    const Tensor d_chunk = d_tensor.slice_from(first_row * config.n_embd, {rows, config.n_embd});

    if (with_head) {
      // Per-token losses: the vocab-parallel cross-entropy gives every token the unsharded model's loss.
      std::vector<float> got = to_host(backend, sharded.losses(0));
      std::vector<float> want = to_host(backend, full.losses(0));
      for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-5 * std::fabs(want[i])) << "loss " << i;
    } else {
      std::vector<float> got = to_host(backend, sharded.stage_output(0, 0));
      std::vector<float> want = to_host(backend, full.stage_output(0, 0));
      ASSERT_EQ(static_cast<int64_t>(got.size()), rows * config.n_embd);
      for (size_t i = 0; i < got.size(); ++i) {
        ASSERT_NEAR(got[i], want[first_row * config.n_embd + i], 1e-5) << "block output " << i;
      }
    }
    sharded.backward(0, 0, d_chunk);
    full.backward(0, 0, d_tensor);
    if (sequence_parallel) {
      // Before the sum over TP, a norm's gradient is this rank's tokens' share only.
      const LocalParam* ln = sharded.find_param("h.0.ln2.weight");
      std::vector<float> partial = to_host(backend, ln->grad),
                         whole = to_host(backend, full.find_param(ln->spec.name)->grad);
      double off = 0;
      for (size_t i = 0; i < partial.size(); ++i)
        off = std::max(off, std::fabs(static_cast<double>(partial[i]) - whole[i]));
      EXPECT_GT(off, 1e-3 * max_abs(whole)) << "the partial gradient already equals the whole";
      // What the pipeline executor does after the step's last backward: block 0 (with the output side, on the
      // stage with the head), then the input side.
      sharded.reduce_sequence_parallel_grads(0);
      sharded.reduce_sequence_parallel_grads(-1);
    }

    for (LocalParam& p : sharded.params()) {
      const LocalParam* reference = full.find_param(p.spec.name);
      ASSERT_NE(reference, nullptr) << p.spec.name;
      std::vector<float> global_grad = to_host(backend, reference->grad);
      std::vector<float> want(p.grad.numel());
      slice_global_to_local(p.spec, p.layout, global_grad.data(), want.data());
      std::vector<float> got = to_host(backend, p.grad);
      const double scale = std::max(max_abs(want), 1e-3);
      double worst = 0;
      for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - want[i]));
      EXPECT_LE(worst, 2e-5 * scale) << p.spec.name << " (rank " << world_rank << ", shard " << p.value.shape_string()
                                     << ")";
      EXPECT_GT(max_abs(got), 0.0) << p.spec.name << ": gradient is all zero";
    }
  }
}

}  // namespace
}  // namespace tessera
