// Running a pipeline schedule over a Model.
#include "parallel/pipeline_executor.h"

#include "core/check.h"
#include "core/trace.h"

namespace tessera {

namespace {
// A message is tagged by the sender's chunk and the micro-batch: between two ranks, activations and gradients of
// one (chunk, micro-batch) never share a tag within a batch (V = 1: 2 m and 2 m + 1).
int activation_tag(int chunk, int m, int micro_batches) { return 2 * (chunk * micro_batches + m); }
int gradient_tag(int chunk, int m, int micro_batches) { return 2 * (chunk * micro_batches + m) + 1; }
constexpr int kTiedTag = 1 << 20;
}  // namespace

PipelineExecutor::PipelineExecutor(Model& model, Backend& backend, ProcessGroup& pp, PipelineKind schedule,
                                   int micro_batches)
    : model_(model), backend_(backend), pp_(pp), micro_batches_(micro_batches) {
  stage_ = pp.rank();
  stages_ = pp.size();
  chunks_ = model.stage().chunk_count();
  train_schedule_ = pipeline_schedule(schedule, stages_, stage_, micro_batches, chunks_);
  TS_ASSERT(pipeline_in_flight(schedule, stages_, stage_, micro_batches, chunks_) <= model.slots(),
            "model has too few activation slots for the schedule");
  TS_ASSERT(activation_tag(chunks_, 0, micro_batches) < kTiedTag, "too many micro-batches for the message tags");
  // Evaluation runs the training table's forwards in their order (for V = 1: micro-batch 0, 1, ...), each in
  // the next slot round-robin: without backwards a slot is free again once its output is sent.
  for (const PipelineAction& a : train_schedule_) {
    if (!a.forward) continue;
    eval_schedule_.push_back(a);
    eval_schedule_.back().slot = static_cast<int>(eval_schedule_.size() - 1) % model.slots();
  }
  last_backward_ = -1;
  for (int i = 0; i < static_cast<int>(train_schedule_.size()); ++i)
    if (!train_schedule_[i].forward) last_backward_ = i;
  slot_sends_.resize(model.slots());
  const StageRange& range = model.stage();
  for (int c = 0; c < chunks_; ++c) {
    const auto [first, end] = range.chunk(c);
    layers_.push_back(end > first ? str_cat("[layers ", first, "-", end - 1, "]") : std::string("[no layers]"));
  }
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
  // Virtual stage v = chunk * p + s (Note [Interleaved 1F1B]): its input comes from rank s - 1, or for s = 0 from
  // rank p - 1's previous chunk; its output goes to rank s + 1, or for s = p - 1 to rank 0's next chunk.
  const int prev = (stage_ + stages_ - 1) % stages_, next = (stage_ + 1) % stages_;
  for (int i = 0; i < static_cast<int>(schedule.size()); ++i) {
    const PipelineAction& action = schedule[static_cast<size_t>(i)];
    const int m = action.micro_batch, chunk = action.chunk, slot = action.slot;
    const bool first = stage.has_embedding && chunk == 0;              // virtual stage 0
    const bool last = stage.has_head && chunk == chunks_ - 1;          // the last virtual stage
    const int prev_chunk = stage_ == 0 ? chunk - 1 : chunk;            // the sender's chunk of this chunk's input
    const int next_chunk = stage_ == stages_ - 1 ? chunk + 1 : chunk;  // the receiver's of its output
    const std::string& layers = layers_[static_cast<size_t>(chunk)];
    if (action.forward) {
      wait_slot_sends(slot);
      if (first || last) load(m, slot);
      if (!first) {
        trace::Span span(trace::Track::kPipeline, "pp", "recv activation");
        if (span.on()) span.name(str_cat("recv activation mb", m, " from stage ", prev)).arg("micro_batch", m);
        pp_.recv(model_.stage_input(chunk, slot), prev, activation_tag(prev_chunk, m, micro_batches_))->wait();
      }
      {
        trace::Span span(trace::Track::kCompute, train ? "forward" : "eval forward", "forward");
        if (span.on()) {
          span.name(str_cat(train ? "forward mb" : "eval forward mb", m, " ", layers))
              .arg("micro_batch", m)
              .arg("layers", layers);
        }
        model_.forward(chunk, slot, train, d_scale);
      }
      if (last) {
        const Tensor losses = model_.losses(slot);
        backend_.copy(Tensor(step_losses_.f32() + m * losses.numel(), DType::kF32, backend_.device(), {losses.numel()}),
                      losses);
      } else {
        trace::Span span(trace::Track::kPipeline, "pp", "send activation");
        if (span.on()) span.name(str_cat("send activation mb", m, " to stage ", next)).arg("micro_batch", m);
        slot_sends_[slot] = pp_.send(model_.stage_output(chunk, slot), next, activation_tag(chunk, m, micro_batches_));
      }
    } else {
      if (!last) {
        trace::Span span(trace::Track::kPipeline, "pp", "recv gradient");
        if (span.on()) span.name(str_cat("recv gradient mb", m, " from stage ", next)).arg("micro_batch", m);
        pp_.recv(d_output_, next, gradient_tag(next_chunk, m, micro_batches_))->wait();
      }
      if (grad_send_) {
        trace::Span span(trace::Track::kPipeline, "pp", "wait gradient send");
        grad_send_->wait();  // the previous send still reads the input-gradient buffer
      }
      grad_send_.reset();
      // The last micro-batch's backward of a chunk completes that chunk's block gradients: the DP sync starts
      // its buckets as blocks finish. Chunks finish in decreasing order (the backward steps run the chunks in
      // reverse, Note [Interleaved 1F1B]), so layers are reported in decreasing order as Note [DP gradient
      // buckets] needs. The rest (-1: embeddings, final norm) is reported only after the rank's last backward,
      // once this stage's input gradient is on its way and the tied parameter's copies on the first and last
      // stage are summed, so the DP reduction (or ZeRO's reduce-scatter) sees the complete gradient and the
      // exchange cannot wait on that send.
      // The sequence-parallel norms' gradients are partial sums over this TP rank's tokens until a chunk's last
      // micro-batch's backward has accumulated them: they are summed over TP then, block by block, before the DP
      // sync's bucket of the block reads them, and the input side's after the rank's last backward
      // (Model::reduce_sequence_parallel_grads; nothing without SP). Under ZeRO-2 a block's gradient leaves its
      // ring slot after every micro-batch, so its partial sums are completed over TP after every micro-batch.
      const bool chunk_done = m + 1 == micro_batches_;
      const bool all_done = i == last_backward_;
      const bool layers_done = chunk_done && events->layer_done;
      const bool per_block = static_cast<bool>(events->block_done);
      if (chunk_done || per_block) {
        model_.set_backward_hook([this, events, chunk_done, all_done, layers_done](int layer) {
          if (layer < 0) {
            if (all_done) model_.reduce_sequence_parallel_grads(-1);
            return;
          }
          if (chunk_done) {
            model_.reduce_sequence_parallel_grads(layer);
          } else if (events->block_done) {
            model_.reduce_sequence_parallel_grads(layer, /*blocks_only=*/true);
          }
          if (events->block_done) events->block_done(layer);
          if (layers_done) events->layer_done(layer);
        });
      }
      if (events->backward_begin) events->backward_begin(chunk);
      {
        trace::Span span(trace::Track::kCompute, "backward", "backward");
        if (span.on()) span.name(str_cat("backward mb", m, " ", layers)).arg("micro_batch", m).arg("layers", layers);
        model_.backward(chunk, slot, d_output_);
      }
      if (!first) {
        trace::Span span(trace::Track::kPipeline, "pp", "send gradient");
        if (span.on()) span.name(str_cat("send gradient mb", m, " to stage ", prev)).arg("micro_batch", m);
        grad_send_ = pp_.send(model_.stage_input_grad(), prev, gradient_tag(chunk, m, micro_batches_));
      }
      model_.set_backward_hook(nullptr);
      if (all_done) {
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
