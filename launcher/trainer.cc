// The training step.
#include "launcher/trainer.h"

#include <cmath>
#include <cstring>

#include "core/check.h"

namespace tessera {

Trainer::Trainer(Gpt2Model& model, Optimizer& optimizer, DpGradSync& grad_sync, Backend& backend,
                 ParallelGroups& groups, TrainerOptions options)
    : model_(model),
      optimizer_(optimizer),
      grad_sync_(grad_sync),
      backend_(backend),
      groups_(groups),
      options_(options) {
  const int dp = groups.dp->size();
  TS_ASSERT(options.global_batch % (dp * options.micro_batches) == 0, "batch does not divide");
  micro_batch_size_ = options.global_batch / (dp * options.micro_batches);
  TS_ASSERT(micro_batch_size_ == model.micro_batch() && options.seq_len == model.seq_len(), "model plan mismatch");
  const size_t n = static_cast<size_t>(micro_batch_size_) * options.seq_len;
  host_inputs_.resize(n);
  host_targets_.resize(n);
}

void Trainer::load_micro_batch(const Sampler& source, int64_t first_sample, int m) {
  const int T = options_.seq_len;
  const int64_t per_dp = options_.global_batch / groups_.dp->size();
  const int64_t base = first_sample + groups_.dp->rank() * per_dp + static_cast<int64_t>(m) * micro_batch_size_;
  for (int b = 0; b < micro_batch_size_; ++b) {
    source.get(base + b, host_inputs_.data() + static_cast<size_t>(b) * T,
               host_targets_.data() + static_cast<size_t>(b) * T);
  }
  backend_.copy_from_host(model_.tokens(0), host_inputs_.data());
  backend_.copy_from_host(model_.targets(0), host_targets_.data());
}

double Trainer::run_batch(const Sampler& source, int64_t first_sample, bool train) {
  const double tokens = static_cast<double>(options_.global_batch) * options_.seq_len;
  const float d_scale = static_cast<float>(1.0 / tokens);
  double loss_sum = 0;
  for (int m = 0; m < options_.micro_batches; ++m) {
    load_micro_batch(source, first_sample, m);
    model_.forward(0, train, d_scale);
    loss_sum += model_.loss_sum(0);
    if (train) {
      // The last micro-batch's backward completes the gradients: the DP sync starts buckets as blocks finish.
      const bool last = m + 1 == options_.micro_batches;
      if (last) model_.set_backward_hook([this](int layer) { grad_sync_.mark_layer_done(layer); });
      model_.backward(0, Tensor());
      if (last) model_.set_backward_hook(nullptr);
    }
  }
  // Sum the loss over DP ranks (as a high and a low float, to keep double precision).
  float parts[2] = {static_cast<float>(loss_sum), 0.0f};
  parts[1] = static_cast<float>(loss_sum - static_cast<double>(parts[0]));
  if (groups_.dp->size() > 1) {
    Tensor t(parts, DType::kF32, Device::kCpu, {2});
    groups_.dp->all_reduce(t, ReduceOp::kSum)->wait();
    loss_sum = static_cast<double>(parts[0]) + parts[1];
  }
  return loss_sum / tokens;
}

StepResult Trainer::train_step(int step, const Sampler& source) {
  StepResult result;
  result.lr = options_.lr.at(step);
  model_.zero_grads();
  grad_sync_.start_step();
  result.loss = run_batch(source, static_cast<int64_t>(step) * options_.global_batch, true);
  // Every micro-batch's loss was scaled by 1/(G*T): summing over DP ranks gives the gradient of the mean.
  grad_sync_.finish();
  result.grad_norm = optimizer_.grad_norm();
  if (!std::isfinite(result.loss) || !std::isfinite(result.grad_norm)) {
    result.skipped = true;
    return result;
  }
  optimizer_.step(result.lr, clip_factor(result.grad_norm, options_.grad_clip));
  return result;
}

double Trainer::evaluate(const Sampler& source, int64_t first_sample, int batches) {
  double sum = 0;
  for (int b = 0; b < batches; ++b) {
    sum += run_batch(source, first_sample + static_cast<int64_t>(b) * options_.global_batch, false);
  }
  return sum / batches;
}

}  // namespace tessera
