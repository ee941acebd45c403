// The training step.
#include "launcher/trainer.h"

#include <cmath>
#include <cstring>

#include "core/check.h"

namespace tessera {

namespace {
// Message tags: activations and gradients of micro-batch m never share a tag within a step; MPI keeps
// messages of equal tag in order across steps.
int activation_tag(int m) { return 2 * m; }
int gradient_tag(int m) { return 2 * m + 1; }
}  // namespace

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
  stage_ = groups.pp->rank();
  stages_ = groups.pp->size();
  train_schedule_ = pipeline_schedule(options.schedule, stages_, stage_, options.micro_batches);
  TS_ASSERT(pipeline_in_flight(options.schedule, stages_, stage_, options.micro_batches) <= model.slots(),
            "model has too few activation slots for the schedule");
  for (int m = 0; m < options.micro_batches; ++m) eval_schedule_.push_back({true, m});
  const size_t n = static_cast<size_t>(micro_batch_size_) * options.seq_len;
  host_inputs_.resize(n);
  host_targets_.resize(n);
  slot_sends_.resize(model.slots());

  if (model.stage().has_head) {
    const int64_t tokens = static_cast<int64_t>(micro_batch_size_) * options.seq_len;
    loss_buffer_ = backend.allocate(static_cast<size_t>(options.micro_batches * tokens) * sizeof(float));
    step_losses_ = loss_buffer_.tensor(0, DType::kF32, {options.micro_batches, tokens});
    host_step_losses_.resize(static_cast<size_t>(step_losses_.numel()));
  }
  const int64_t C = model.config().n_embd;
  const Tensor wte_grad = model.embedding_grad();
  const bool tied_across_stages = stages_ > 1 && wte_grad.defined();
  const int64_t activation_elems = static_cast<int64_t>(micro_batch_size_) * options.seq_len * C;
  const int64_t embedding_elems = tied_across_stages ? wte_grad.numel() : 0;
  // The gradient received from the next stage has the compute dtype; the tied embedding's gradient is f32.
  const DType compute = model.config().dtype;
  const size_t activation_bytes = (static_cast<size_t>(activation_elems) * dtype_size(compute) + 63) / 64 * 64;
  exchange_buffer_ = backend.allocate(activation_bytes + static_cast<size_t>(embedding_elems) * sizeof(float));
  d_output_ = exchange_buffer_.tensor(0, compute, {micro_batch_size_, options.seq_len, C});
  if (tied_across_stages) {
    peer_embedding_grad_ = exchange_buffer_.tensor(activation_bytes, DType::kF32, {embedding_elems});
  }
}

void Trainer::load_micro_batch(const Sampler& source, int64_t first_sample, int m, int slot) {
  const StageRange& stage = model_.stage();
  if (!stage.has_embedding && !stage.has_head) return;
  const int T = options_.seq_len;
  const int64_t per_dp = options_.global_batch / groups_.dp->size();
  const int64_t base = first_sample + groups_.dp->rank() * per_dp + static_cast<int64_t>(m) * micro_batch_size_;
  for (int b = 0; b < micro_batch_size_; ++b) {
    source.get(base + b, host_inputs_.data() + static_cast<size_t>(b) * T,
               host_targets_.data() + static_cast<size_t>(b) * T);
  }
  if (stage.has_embedding) backend_.copy_from_host(model_.tokens(slot), host_inputs_.data());
  if (stage.has_head) backend_.copy_from_host(model_.targets(slot), host_targets_.data());
}

void Trainer::wait_slot_sends(int slot) {
  if (slot_sends_[slot]) {
    slot_sends_[slot]->wait();
    slot_sends_[slot].reset();
  }
}

double Trainer::run_batch(const Sampler& source, int64_t first_sample, bool train) {
  const double tokens = static_cast<double>(options_.global_batch) * options_.seq_len;
  const float d_scale = static_cast<float>(1.0 / tokens);
  const StageRange& stage = model_.stage();
  ProcessGroup& pp = *groups_.pp;
  double loss_sum = 0;
  for (const PipelineAction& action : train ? train_schedule_ : eval_schedule_) {
    const int m = action.micro_batch;
    const int slot = m % model_.slots();
    if (action.forward) {
      wait_slot_sends(slot);
      load_micro_batch(source, first_sample, m, slot);
      if (!stage.has_embedding) pp.recv(model_.stage_input(slot), stage_ - 1, activation_tag(m))->wait();
      model_.forward(slot, train, d_scale);
      if (stage.has_head) {
        const Tensor losses = model_.losses(slot);
        backend_.copy(Tensor(step_losses_.f32() + m * losses.numel(), DType::kF32, backend_.device(), {losses.numel()}),
                      losses);
      } else {
        slot_sends_[slot] = pp.send(model_.stage_output(slot), stage_ + 1, activation_tag(m));
      }
    } else {
      if (!stage.has_head) pp.recv(d_output_, stage_ + 1, gradient_tag(m))->wait();
      if (grad_send_) grad_send_->wait();  // the previous send still reads the input-gradient buffer
      grad_send_.reset();
      // The last micro-batch's backward completes the gradients: the DP sync starts its buckets as blocks
      // finish. The rest (-1: embeddings, final norm) is marked only after this stage's input gradient is on
      // its way and the tied embedding's copies on the first and last stage are summed, so the DP reduction
      // (or ZeRO's reduce-scatter) sees the complete gradient and the exchange cannot wait on that send.
      const bool last = m + 1 == options_.micro_batches;
      if (last) {
        model_.set_backward_hook([this](int layer) {
          if (layer >= 0) grad_sync_.mark_layer_done(layer);
        });
      }
      model_.backward(slot, d_output_);
      if (!stage.has_embedding) grad_send_ = pp.send(model_.stage_input_grad(), stage_ - 1, gradient_tag(m));
      if (last) {
        model_.set_backward_hook(nullptr);
        sum_tied_embedding_grads();
        grad_sync_.mark_layer_done(-1);
      }
    }
  }
  for (int s = 0; s < model_.slots(); ++s) wait_slot_sends(s);
  if (grad_send_) grad_send_->wait();
  grad_send_.reset();
  if (stage.has_head) {
    // Each micro-batch's losses summed in order, then the micro-batches in order (one host read per batch).
    backend_.copy_to_host(host_step_losses_.data(), step_losses_);
    const int64_t per_micro_batch = step_losses_.dim(1);
    for (int m = 0; m < options_.micro_batches; ++m) {
      double sum = 0;
      for (int64_t i = 0; i < per_micro_batch; ++i)
        sum += host_step_losses_[static_cast<size_t>(m * per_micro_batch + i)];
      loss_sum += sum;
    }
  }

  // The loss lives on the last stage: sum it over the pipeline (other stages add 0) and over DP, in double
  // and bit-identical on every rank (the same reduction as the gradient norm's).
  loss_sum = sum_over_groups(loss_sum, {&pp, groups_.dp.get()});
  return loss_sum / tokens;
}

void Trainer::sum_tied_embedding_grads() {
  if (!peer_embedding_grad_.defined()) return;
  // The first and the last stage each hold d(wte) from their own use of it (embedding, head); both need the
  // sum. Each sends its own and adds the other's: a + b == b + a, so both copies stay bit-identical.
  Tensor mine = model_.embedding_grad().view({peer_embedding_grad_.numel()});
  const int peer = stage_ == 0 ? stages_ - 1 : 0;
  constexpr int kTiedTag = 1 << 20;
  WorkHandle recv = groups_.pp->recv(peer_embedding_grad_, peer, kTiedTag);
  WorkHandle send = groups_.pp->send(mine, peer, kTiedTag);
  recv->wait();
  send->wait();
  backend_.add(mine, mine, peer_embedding_grad_);
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
