// Inference through the pipeline: stage-by-stage decode and the gather of the last stage's logits.
#include "parallel/pipeline_decoder.h"

#include "core/check.h"

namespace tessera {

namespace {

// Activation messages of inference; no training batch runs on the same groups at the same time.
constexpr int kDecodeTag = 7;

}  // namespace

PipelineDecoder::PipelineDecoder(Model& model, Backend& backend, ProcessGroup& tp, ProcessGroup& pp)
    : model_(model), backend_(backend), tp_(tp), pp_(pp), stage_(pp.rank()), stages_(pp.size()) {
  TS_ASSERT(model.use() == ModelUse::kInference, "PipelineDecoder needs a model built for inference");
  const int64_t B = model.micro_batch();
  const int64_t V_local = model.stage().has_head ? model.config().padded_vocab(tp.size()) / tp.size() : 0;
  const int64_t floats = B * V_local * (1 + tp.size());
  exchange_buffer_ = backend.allocate(static_cast<size_t>(floats) * sizeof(float) + static_cast<size_t>(B) * 4);
  local_rows_ = exchange_buffer_.tensor(0, DType::kF32, {B * V_local});
  gathered_rows_ =
      exchange_buffer_.tensor(static_cast<size_t>(B * V_local) * sizeof(float), DType::kF32, {tp.size() * B * V_local});
  shared_tokens_ = exchange_buffer_.tensor(static_cast<size_t>(floats) * sizeof(float), DType::kI32, {B});
}

std::vector<float> PipelineDecoder::gather_rows(const Tensor& logits, int64_t rows_per_sequence, int64_t row) {
  const int64_t B = model_.micro_batch(), V_local = logits.dim(1);
  for (int64_t b = 0; b < B; ++b) {
    backend_.copy(local_rows_.slice_from(b * V_local, {V_local}),
                  logits.slice_from((b * rows_per_sequence + row) * V_local, {V_local}));
  }
  if (tp_.size() > 1) {
    tp_.all_gather(gathered_rows_, local_rows_)->wait();
  } else {
    backend_.copy(gathered_rows_, local_rows_);
  }
  std::vector<float> host(static_cast<size_t>(gathered_rows_.numel()));
  backend_.copy_to_host(host.data(), gathered_rows_);
  // [tp rank][b][V_local] -> [b][vocab]: TP rank r holds entries [r V_local, (r+1) V_local); the padding at the
  // end of the padded vocabulary is dropped.
  const int64_t V = model_.config().vocab_size;
  std::vector<float> rows(static_cast<size_t>(B * V));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t v = 0; v < V; ++v) {
      const int64_t r = v / V_local, c = v % V_local;
      rows[b * V + v] = host[(r * B + b) * V_local + c];
    }
  }
  return rows;
}

std::vector<float> PipelineDecoder::decode(const std::vector<int32_t>& tokens, int position, int n_new) {
  const int64_t B = model_.micro_batch();
  TS_ASSERT(static_cast<int64_t>(tokens.size()) == B * n_new, "decode of ", tokens.size(), " tokens, not ", B, " x ",
            n_new);
  if (stage_ == 0) {
    backend_.copy_from_host(model_.decode_tokens(n_new), tokens.data());
  } else {
    pp_.recv(model_.decode_input(n_new), stage_ - 1, kDecodeTag)->wait();
  }
  const Tensor out = model_.decode(position, n_new);
  if (stage_ + 1 < stages_) {
    pp_.send(out, stage_ + 1, kDecodeTag)->wait();
    return {};
  }
  return gather_rows(out, n_new, n_new - 1);
}

std::vector<float> PipelineDecoder::full_forward(const std::vector<int32_t>& tokens, int last) {
  const int64_t B = model_.micro_batch(), T = model_.seq_len();
  TS_ASSERT(static_cast<int64_t>(tokens.size()) == B * T && last >= 0 && last < T, "full forward of ", tokens.size(),
            " tokens, not ", B, " x ", T);
  if (stage_ == 0) {
    backend_.copy_from_host(model_.tokens(0), tokens.data());
  } else {
    pp_.recv(model_.stage_input(0, 0), stage_ - 1, kDecodeTag)->wait();
  }
  const Tensor logits = model_.forward_logits(0);
  if (stage_ + 1 < stages_) {
    pp_.send(model_.stage_output(0, 0), stage_ + 1, kDecodeTag)->wait();
    return {};
  }
  return gather_rows(logits, T, last);
}

void PipelineDecoder::share_from_last_stage(std::vector<int32_t>& tokens) {
  TS_ASSERT(static_cast<int64_t>(tokens.size()) == shared_tokens_.numel(), "sharing ", tokens.size(), " tokens");
  if (stages_ == 1) return;
  if (stage_ == stages_ - 1) backend_.copy_from_host(shared_tokens_, tokens.data());
  pp_.broadcast(shared_tokens_, stages_ - 1)->wait();
  backend_.copy_to_host(tokens.data(), shared_tokens_);
}

}  // namespace tessera
