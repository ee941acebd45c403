// The Model base: this stage's parameters in flat buffers, initialization, compute copies.
#include "parallel/model.h"

#include <algorithm>

#include "core/check.h"
#include "core/init.h"

namespace tessera {

namespace {

int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Tensor make_view(void* data, DType dtype, Device device, const std::vector<int64_t>& shape) {
  if (shape.size() == 1) return Tensor(data, dtype, device, {shape[0]});
  return Tensor(data, dtype, device, {shape[0], shape[1]});
}

// Elements [begin, begin + n) of a flat tensor, any dtype.
Tensor elements(const Tensor& flat, int64_t begin, const std::vector<int64_t>& shape) {
  return make_view(static_cast<char*>(flat.data()) + begin * static_cast<int64_t>(dtype_size(flat.dtype())),
                   flat.dtype(), flat.device(), shape);
}

}  // namespace

bool stage_holds(const StageRange& stage, const ParamSpec& spec) {
  switch (spec.place) {
    case ParamPlace::kBlock:
      return stage.holds_layer(spec.layer);
    case ParamPlace::kInput:
      return stage.has_embedding || (spec.tied_across_stages && stage.has_head);
    case ParamPlace::kOutput:
      return stage.has_head;
  }
  return false;
}

Model::Model(const ModelConfig& config, Backend& backend, int tp_rank, int tp_size, StageRange stage, int micro_batch,
             int seq_len, int slots, const std::vector<ParamSpec>& specs, ModelUse use)
    : config_(config),
      backend_(backend),
      stage_(stage),
      micro_batch_(micro_batch),
      seq_len_(seq_len),
      slots_(slots),
      use_(use) {
  TS_ASSERT(seq_len >= 1 && seq_len <= config.max_seq_len && micro_batch >= 1 && slots >= 1, "bad plan");
  TS_ASSERT(use == ModelUse::kTrain || slots == 1, "an inference model has one slot");
  const bool train = use == ModelUse::kTrain;
  TS_ASSERT(config.dtype == DType::kF32 || config.dtype == DType::kBF16, "compute dtype ", dtype_name(config.dtype));
  for (int c = 0; c < stage.chunk_count(); ++c) {
    const auto [first, end] = stage.chunk(c);
    TS_ASSERT(first >= 0 && end <= config.n_layer && first <= end && (c == 0 || stage.chunk(c - 1).second <= first),
              "bad stage");
  }
  TS_ASSERT(use == ModelUse::kTrain || stage.chunk_count() == 1, "an inference model runs one chunk");
  vocab_rows_ = config.padded_vocab(tp_size) / tp_size;
  vocab_start_ = static_cast<int64_t>(tp_rank) * vocab_rows_;
  valid_vocab_ = std::max<int64_t>(0, std::min<int64_t>(vocab_rows_, config.vocab_size - vocab_start_));

  int64_t total = 0;
  for (const ParamSpec& spec : specs) {
    if (!stage_holds(stage, spec)) continue;
    LocalParam p;
    p.spec = spec;
    p.layout = shard_layout(spec, config, tp_rank, tp_size);
    p.offset = total;
    p.counted = (spec.tp_split_dim >= 0 || tp_rank == 0) && !(spec.tied_across_stages && !stage.has_embedding);
    if (spec.tied_across_stages) tied_ = static_cast<int>(params_.size());
    total += product(p.layout.local_shape);
    params_.push_back(std::move(p));
  }
  param_buffer_ = backend.allocate(static_cast<size_t>(total) * sizeof(float));
  flat_params_ = param_buffer_.tensor(0, DType::kF32, {total});
  if (train) {
    grad_buffer_ = backend.allocate(static_cast<size_t>(total) * sizeof(float));
    flat_grads_ = grad_buffer_.tensor(0, DType::kF32, {total});
  }
  flat_compute_ = flat_params_;
  if (config.dtype != DType::kF32) {
    compute_buffer_ = backend.allocate(static_cast<size_t>(total) * dtype_size(config.dtype));
    flat_compute_ = compute_buffer_.tensor(0, config.dtype, {total});
  }
  for (LocalParam& p : params_) {
    p.value = elements(flat_params_, p.offset, p.layout.local_shape);
    p.compute = elements(flat_compute_, p.offset, p.layout.local_shape);
    if (train) p.grad = elements(flat_grads_, p.offset, p.layout.local_shape);
  }
  backend.fill(flat_params_, 0.0f);
  refresh_compute_params();
  if (train) backend.fill(flat_grads_, 0.0f);
}

Tensor Model::decode_tokens(int n_new) const {
  TS_ASSERT(n_new >= 1 && n_new <= seq_len_, "decode of ", n_new, " tokens with seq_len ", seq_len_);
  return Tensor(tokens(0).data(), DType::kI32, backend_.device(), {static_cast<int64_t>(micro_batch_) * n_new});
}

Tensor Model::decode_input(int n_new) const {
  TS_ASSERT(n_new >= 1 && n_new <= seq_len_, "decode of ", n_new, " tokens with seq_len ", seq_len_);
  const Tensor input = stage_input(0, 0);
  return Tensor(input.data(), input.dtype(), input.device(), {micro_batch_, n_new, input.dim(input.ndim() - 1)});
}

int Model::chunk_begin(int chunk) const {
  int begin = 0;
  for (int c = 0; c < chunk; ++c) begin += chunk_layers(c);
  return begin;
}

int Model::local_layer(int layer) const {
  for (int c = 0; c < stage_.chunk_count(); ++c) {
    const auto [first, end] = stage_.chunk(c);
    if (layer >= first && layer < end) return chunk_begin(c) + layer - first;
  }
  TS_ASSERT(false, "this stage holds no block ", layer);
  return -1;
}

bool Model::slot_layer_recomputed(int j) const {
  for (int c = 0; c < stage_.chunk_count(); ++c)
    if (j < chunk_layers(c) && !config_.recomputes(stage_.chunk(c).first + j)) return false;
  return true;
}

const LocalParam* Model::find_param(const std::string& name) const {
  for (const LocalParam& p : params_)
    if (p.spec.name == name) return &p;
  return nullptr;
}

int Model::param_index(const std::string& name) const {
  for (int i = 0; i < static_cast<int>(params_.size()); ++i)
    if (params_[i].spec.name == name) return i;
  TS_ASSERT(false, "this stage holds no parameter ", name);
  return -1;
}

Tensor Model::fused(const Tensor& flat, int first, int count) const {
  const LocalParam& head = params_[first];
  TS_ASSERT(head.layout.local_shape.size() == 2, head.spec.name, " is not a matrix");
  int64_t rows = 0;
  for (int i = first; i < first + count; ++i) {
    const LocalParam& p = params_[i];
    TS_ASSERT(p.layout.local_shape.size() == 2 && p.layout.local_shape[1] == head.layout.local_shape[1] &&
                  p.offset == head.offset + rows * head.layout.local_shape[1],
              p.spec.name, " does not follow ", head.spec.name, " in the flat buffer");
    rows += p.layout.local_shape[0];
  }
  return elements(flat, head.offset, {rows, head.layout.local_shape[1]});
}

Tensor Model::fused_value(int first, int count) const { return fused(flat_compute_, first, count); }
Tensor Model::fused_grad(int first, int count) const { return fused(flat_grads_, first, count); }

void Model::init_parameters(uint64_t seed) {
  std::vector<float> host;
  for (LocalParam& p : params_) {
    const std::vector<int64_t>& local = p.layout.local_shape;
    const std::vector<int64_t>& global = p.spec.shape;
    const int64_t n = product(local);
    host.assign(n, 0.0f);
    const int64_t cols = local.size() == 2 ? local[1] : 1;
    const int64_t global_cols = global.size() == 2 ? global[1] : 1;
    const uint64_t stream = hash_name(p.spec.name);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      int64_t r = i / cols, c = i % cols;
      // Map the local (row, col) to the global one through the TP split.
      if (p.layout.split_dim == 0) r = p.layout.global_index_of_local[r];
      if (p.layout.split_dim == 1) c = p.layout.global_index_of_local[c];
      if (r < 0) continue;  // vocabulary padding stays zero
      switch (p.spec.init) {
        case InitKind::kZeros:
          host[i] = 0.0f;
          break;
        case InitKind::kOnes:
          host[i] = 1.0f;
          break;
        case InitKind::kNormal:
          host[i] = p.spec.init_std * normal_at(seed, stream, static_cast<uint64_t>(r * global_cols + c));
          break;
      }
    }
    backend_.copy_from_host(p.value, host.data());
  }
  refresh_compute_params();
}

void Model::refresh_compute_params() {
  if (has_compute_copy()) backend_.copy(flat_compute_, flat_params_);
}

void Model::zero_grads() {
  if (flat_grads_.defined()) backend_.fill(flat_grads_, 0.0f);
}

}  // namespace tessera
