// The training step.
#include "launcher/run/trainer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/check.h"
#include "core/trace.h"

namespace tessera {

Trainer::Trainer(Model& model, Optimizer& optimizer, DpGradSync& grad_sync, Backend& backend, ParallelGroups& groups,
                 TrainerOptions options)
    : model_(model),
      optimizer_(optimizer),
      grad_sync_(grad_sync),
      backend_(backend),
      groups_(groups),
      options_(options),
      micro_batch_size_(options.global_batch / (groups.dp->size() * options.micro_batches)),
      pipeline_(model, backend, *groups.pp, options.schedule, options.micro_batches),
      loss_spikes_(options.spike_zscore),
      norm_spikes_(options.spike_zscore) {
  const int dp = groups.dp->size();
  TS_ASSERT(options.global_batch % (dp * options.micro_batches) == 0, "batch does not divide");
  TS_ASSERT(micro_batch_size_ == model.micro_batch() && options.seq_len == model.seq_len(), "model plan mismatch");
  const size_t n = static_cast<size_t>(micro_batch_size_) * options.seq_len;
  host_inputs_.resize(n);
  host_targets_.resize(n);
  host_mask_.resize(static_cast<size_t>(options.seq_len));
  host_weights_.resize(n * static_cast<size_t>(options.micro_batches));
}

void Trainer::load_micro_batch(const Sampler& source, int64_t first_sample, int m, int slot) {
  trace::Span span(trace::Track::kData, "data", "load");
  if (span.on()) span.name(str_cat("load mb", m)).arg("micro_batch", m);
  const StageRange& stage = model_.stage();
  const int T = options_.seq_len;
  const int64_t per_dp = options_.global_batch / groups_.dp->size();
  const int64_t base = first_sample + groups_.dp->rank() * per_dp + static_cast<int64_t>(m) * micro_batch_size_;
  for (int b = 0; b < micro_batch_size_; ++b) {
    source.get(base + b, host_inputs_.data() + static_cast<size_t>(b) * T,
               host_targets_.data() + static_cast<size_t>(b) * T);
  }
  if (stage.has_embedding) backend_.copy_from_host(model_.tokens(slot), host_inputs_.data());
  if (stage.has_head) backend_.copy_from_host(model_.targets(slot), host_targets_.data());
  if (stage.has_head && source.has_loss_mask()) {
    float* weights = host_weights_.data() + static_cast<size_t>(m) * micro_batch_size_ * T;
    for (int b = 0; b < micro_batch_size_; ++b) {
      source.get_loss_mask(base + b, host_mask_.data());
      for (int i = 0; i < T; ++i) weights[static_cast<size_t>(b) * T + i] = host_mask_[static_cast<size_t>(i)];
    }
    backend_.copy_from_host(model_.loss_weights(slot), weights);
  }
}

int64_t Trainer::counted_targets(const Sampler& source, int64_t first_sample) {
  if (!source.has_loss_mask()) return static_cast<int64_t>(options_.global_batch) * options_.seq_len;
  int64_t counted = 0;
  for (int64_t g = first_sample; g < first_sample + options_.global_batch; ++g) {
    source.get_loss_mask(g, host_mask_.data());
    for (uint8_t value : host_mask_) counted += value;
  }
  return counted;
}

double Trainer::mean_loss(const Sampler& source, int64_t counted) {
  // The loss lives on the last stage: sum it over the pipeline (other stages add 0) and over DP, in double
  // and bit-identical on every rank (the same reduction as the gradient norm's). A batch with no counted
  // target has loss 0 (and no gradient).
  trace::Span span(trace::Track::kCollective, "loss", "loss sum");
  const double sum = pipeline_.loss_sum(source.has_loss_mask() ? host_weights_.data() : nullptr);
  return sum_over_groups(sum, {groups_.pp.get(), groups_.dp.get()}) /
         static_cast<double>(std::max<int64_t>(counted, 1));
}

StepResult Trainer::train_step(int step, const Sampler& source) {
  StepResult result;
  result.lr = options_.lr.at(step);
  model_.zero_grads();
  grad_sync_.start_step();
  const int64_t first_sample = static_cast<int64_t>(step) * options_.global_batch;
  // 1/(G*T), or 1/K over the K counted targets of a masked batch (Note [Masked loss]).
  const int64_t counted = counted_targets(source, first_sample);
  const float d_scale = static_cast<float>(1.0 / static_cast<double>(std::max<int64_t>(counted, 1)));
  model_.set_loss_weighting(source.has_loss_mask());
  PipelineExecutor::GradientEvents events;
  events.layer_done = [this](int layer) { grad_sync_.mark_layer_done(layer); };
  events.gradients_done = [this] { grad_sync_.mark_layer_done(-1); };
  if (grad_sync_.mode() == DpGradSync::Mode::kShardedGradients) {
    // ZeRO-2 reduces the blocks' gradients after every micro-batch (Note [ZeRO-2 gradient ring]).
    events.backward_begin = [this](int chunk) { grad_sync_.backward_begin(chunk); };
    events.block_done = [this](int layer) { grad_sync_.mark_block_done(layer); };
  }
  pipeline_.train_batch(
      d_scale, [&](int m, int slot) { load_micro_batch(source, first_sample, m, slot); }, events);
  result.loss = mean_loss(source, counted);
  // Every micro-batch's loss was scaled by 1/(G*T) (1/K): summing over DP ranks gives the gradient of the mean.
  grad_sync_.finish();
  {
    trace::Span span(trace::Track::kCompute, "optimizer", "gradient norm");
    result.grad_norm = optimizer_.grad_norm();
  }
  if (step >= spike_first_ && step < spike_first_ + spike_count_) result.loss *= 1000;
  if (!std::isfinite(result.loss) || !std::isfinite(result.grad_norm)) {
    result.skipped = true;
    return result;
  }
  if (options_.spike_zscore > 0) {
    if (loss_spikes_.is_spike(result.loss) || norm_spikes_.is_spike(result.grad_norm)) {
      result.skipped = result.spike = true;
      return result;
    }
    loss_spikes_.add(result.loss);
    norm_spikes_.add(result.grad_norm);
  }
  trace::Span span(trace::Track::kCompute, "optimizer", "optimizer");
  optimizer_.step(result.lr, clip_factor(result.grad_norm, options_.grad_clip));
  return result;
}

double Trainer::evaluate(const Sampler& source, int64_t first_sample, int batches,
                         const std::function<void(int)>& after_batch) {
  trace::Span span(trace::Track::kStep, "eval", "validation");
  double sum = 0;
  for (int b = 0; b < batches; ++b) {
    const int64_t first = first_sample + static_cast<int64_t>(b) * options_.global_batch;
    const int64_t counted = counted_targets(source, first);
    pipeline_.eval_batch([&](int m, int slot) { load_micro_batch(source, first, m, slot); });
    sum += mean_loss(source, counted);
    if (after_batch) after_batch(b + 1);
  }
  return sum / batches;
}

std::vector<float> Trainer::token_losses(const Sampler& source, int64_t first_sample) {
  pipeline_.eval_batch([&](int m, int slot) { load_micro_batch(source, first_sample, m, slot); });
  // The last stage of each DP replica holds its slice of the batch (micro-batches in order, as loaded); TP
  // rank 0 of it contributes the slice, every other rank zeros, and one sum over the world spreads it.
  const size_t per_dp = static_cast<size_t>(options_.global_batch / groups_.dp->size()) * options_.seq_len;
  std::vector<float> all(per_dp * groups_.dp->size(), 0.0f);
  const std::vector<float> mine = pipeline_.token_losses();
  if (!mine.empty() && groups_.tp->rank() == 0) {
    std::copy(mine.begin(), mine.end(), all.begin() + static_cast<std::ptrdiff_t>(groups_.dp->rank() * per_dp));
  }
  if (groups_.world->size() > 1) {
    groups_.world
        ->all_reduce(Tensor(all.data(), DType::kF32, Device::kCpu, {static_cast<int64_t>(all.size())}), ReduceOp::kSum)
        ->wait();
  }
  return all;
}

}  // namespace tessera
