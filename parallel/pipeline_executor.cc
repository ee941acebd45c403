// Running a pipeline schedule over a Model.
#include "parallel/pipeline_executor.h"

#include "core/check.h"
#include "core/trace.h"

namespace tessera {

namespace {
int activation_tag(int m) { return 2 * m; }
int gradient_tag(int m) { return 2 * m + 1; }
constexpr int kTiedTag = 1 << 20;
}  // namespace

PipelineExecutor::PipelineExecutor(Model& model, Backend& backend, ProcessGroup& pp, PipelineKind schedule,
                                   int micro_batches)
    : model_(model), backend_(backend), pp_(pp), micro_batches_(micro_batches) {
  stage_ = pp.rank();
  stages_ = pp.size();
  train_schedule_ = pipeline_schedule(schedule, stages_, stage_, micro_batches);
  TS_ASSERT(pipeline_in_flight(schedule, stages_, stage_, micro_batches) <= model.slots(),
            "model has too few activation slots for the schedule");
  for (int m = 0; m < micro_batches; ++m) eval_schedule_.push_back({true, m});
  slot_sends_.resize(model.slots());
  const StageRange& range = model.stage();
  layers_ = range.end_layer > range.first_layer ? str_cat("[layers ", range.first_layer, "-", range.end_layer - 1, "]")
                                                : std::string("[no layers]");
  const int64_t B = model.micro_batch(), T = model.seq_len(), C = model.config().n_embd;
  if (model.stage().has_head) {
    loss_buffer_ = backend.allocate(static_cast<size_t>(micro_batches * B * T) * sizeof(float));
    step_losses_ = loss_buffer_.tensor(0, DType::kF32, {micro_batches, B * T});
    host_step_losses_.resize(static_cast<size_t>(step_losses_.numel()));
  }
  const Tensor tied = model.tied_grad();
  const bool tied_across_stages = stages_ > 1 && tied.defined();
  const int64_t tied_elems = tied_across_stages ? tied.numel() : 0;
  // The gradient received from the next stage has the compute dtype; the tied parameter's gradient is f32.
  const DType compute = model.config().dtype;
  // The stage boundary carries stage_rows() tokens: B*T, or this TP rank's chunk under sequence parallelism.
  const int64_t rows = model.stage_rows();
  const size_t activation_bytes = (static_cast<size_t>(rows * C) * dtype_size(compute) + 63) / 64 * 64;
  exchange_buffer_ = backend.allocate(activation_bytes + static_cast<size_t>(tied_elems) * sizeof(float));
  d_output_ = exchange_buffer_.tensor(0, compute, {rows, C});
  if (tied_across_stages) peer_tied_grad_ = exchange_buffer_.tensor(activation_bytes, DType::kF32, {tied_elems});
}

void PipelineExecutor::wait_slot_sends(int slot) {
  if (slot_sends_[slot]) {
    trace::Span span(trace::Track::kPipeline, "pp", "wait activation send");
    slot_sends_[slot]->wait();
    slot_sends_[slot].reset();
  }
}

void PipelineExecutor::train_batch(float d_scale, const Load& load, const GradientEvents& events) {
  run(train_schedule_, true, d_scale, load, &events);
}

void PipelineExecutor::eval_batch(const Load& load) { run(eval_schedule_, false, 0.0f, load, nullptr); }

void PipelineExecutor::run(const std::vector<PipelineAction>& schedule, bool train, float d_scale, const Load& load,
                           const GradientEvents* events) {
  const StageRange& stage = model_.stage();
  for (const PipelineAction& action : schedule) {
    const int m = action.micro_batch;
    const int slot = m % model_.slots();
    if (action.forward) {
      wait_slot_sends(slot);
      if (stage.has_embedding || stage.has_head) load(m, slot);
      if (!stage.has_embedding) {
        trace::Span span(trace::Track::kPipeline, "pp", "recv activation");
        if (span.on()) span.name(str_cat("recv activation mb", m, " from stage ", stage_ - 1)).arg("micro_batch", m);
        pp_.recv(model_.stage_input(slot), stage_ - 1, activation_tag(m))->wait();
      }
      {
        trace::Span span(trace::Track::kCompute, train ? "forward" : "eval forward", "forward");
        if (span.on()) {
          span.name(str_cat(train ? "forward mb" : "eval forward mb", m, " ", layers_))
              .arg("micro_batch", m)
              .arg("layers", layers_);
        }
        model_.forward(slot, train, d_scale);
      }
      if (stage.has_head) {
        const Tensor losses = model_.losses(slot);
        backend_.copy(Tensor(step_losses_.f32() + m * losses.numel(), DType::kF32, backend_.device(), {losses.numel()}),
                      losses);
      } else {
        trace::Span span(trace::Track::kPipeline, "pp", "send activation");
        if (span.on()) span.name(str_cat("send activation mb", m, " to stage ", stage_ + 1)).arg("micro_batch", m);
        slot_sends_[slot] = pp_.send(model_.stage_output(slot), stage_ + 1, activation_tag(m));
      }
    } else {
      if (!stage.has_head) {
        trace::Span span(trace::Track::kPipeline, "pp", "recv gradient");
        if (span.on()) span.name(str_cat("recv gradient mb", m, " from stage ", stage_ + 1)).arg("micro_batch", m);
        pp_.recv(d_output_, stage_ + 1, gradient_tag(m))->wait();
      }
      if (grad_send_) {
        trace::Span span(trace::Track::kPipeline, "pp", "wait gradient send");
        grad_send_->wait();  // the previous send still reads the input-gradient buffer
      }
      grad_send_.reset();
      // The last micro-batch's backward completes the gradients: the DP sync starts its buckets as blocks
      // finish. The rest (-1: embeddings, final norm) is reported only after this stage's input gradient is on
      // its way and the tied parameter's copies on the first and last stage are summed, so the DP reduction
      // (or ZeRO's reduce-scatter) sees the complete gradient and the exchange cannot wait on that send.
      // The sequence-parallel norms' gradients are partial sums over this TP rank's tokens until the last
      // micro-batch's backward has accumulated them: they are summed over TP then, block by block, before the DP
      // sync's bucket of the block reads them (Model::reduce_sequence_parallel_grads; nothing without SP).
      const bool last = m + 1 == micro_batches_;
      const bool layers_done = last && events->layer_done;
      const bool per_block = static_cast<bool>(events->block_done);
      if (last || per_block) {
        model_.set_backward_hook([this, events, last, layers_done](int layer) {
          // Under ZeRO-2 a block's gradient leaves its ring slot after every micro-batch, so its sequence-parallel
          // partial sums are completed over TP after every micro-batch too; everything else once, after the last.
          if (last) {
            model_.reduce_sequence_parallel_grads(layer);
          } else if (layer >= 0 && events->block_done) {
            model_.reduce_sequence_parallel_grads(layer, /*blocks_only=*/true);
          }
          if (layer < 0) return;
          if (events->block_done) events->block_done(layer);
          if (layers_done) events->layer_done(layer);
        });
      }
      if (events->backward_begin) events->backward_begin();
      {
        trace::Span span(trace::Track::kCompute, "backward", "backward");
        if (span.on()) span.name(str_cat("backward mb", m, " ", layers_)).arg("micro_batch", m).arg("layers", layers_);
        model_.backward(slot, d_output_);
      }
      if (!stage.has_embedding) {
        trace::Span span(trace::Track::kPipeline, "pp", "send gradient");
        if (span.on()) span.name(str_cat("send gradient mb", m, " to stage ", stage_ - 1)).arg("micro_batch", m);
        grad_send_ = pp_.send(model_.stage_input_grad(), stage_ - 1, gradient_tag(m));
      }
      model_.set_backward_hook(nullptr);
      if (last) {
        sum_tied_grads();
        if (events->gradients_done) events->gradients_done();
      }
    }
  }
  trace::Span span(trace::Track::kPipeline, "pp", "wait sends");
  for (int s = 0; s < model_.slots(); ++s) wait_slot_sends(s);
  if (grad_send_) grad_send_->wait();
  grad_send_.reset();
}

double PipelineExecutor::loss_sum(const float* weights) {
  if (!model_.stage().has_head) return 0;
  backend_.copy_to_host(host_step_losses_.data(), step_losses_);
  const int64_t per_micro_batch = step_losses_.dim(1);
  double loss_sum = 0;
  for (int m = 0; m < micro_batches_; ++m) {
    double sum = 0;
    for (int64_t i = 0; i < per_micro_batch; ++i) {
      const size_t at = static_cast<size_t>(m * per_micro_batch + i);
      sum += weights != nullptr ? static_cast<double>(weights[at]) * host_step_losses_[at] : host_step_losses_[at];
    }
    loss_sum += sum;
  }
  return loss_sum;
}

std::vector<float> PipelineExecutor::token_losses() {
  if (!model_.stage().has_head) return {};
  backend_.copy_to_host(host_step_losses_.data(), step_losses_);
  return host_step_losses_;
}

void PipelineExecutor::sum_tied_grads() {
  if (!peer_tied_grad_.defined()) return;
  // The first and the last stage each hold the tied parameter's gradient from their own use of it (embedding,
  // head); both need the sum. Each sends its own and adds the other's: a + b == b + a, so both copies stay
  // bit-identical.
  Tensor mine = model_.tied_grad().view({peer_tied_grad_.numel()});
  const int peer = stage_ == 0 ? stages_ - 1 : 0;
  trace::Span span(trace::Track::kPipeline, "pp", "tied gradient exchange");
  WorkHandle recv = pp_.recv(peer_tied_grad_, peer, kTiedTag);
  WorkHandle send = pp_.send(mine, peer, kTiedTag);
  recv->wait();
  send->wait();
  backend_.add(mine, mine, peer_tied_grad_);
}

}  // namespace tessera
