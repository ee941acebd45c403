// The Model base: this stage's parameters in flat buffers, initialization, compute copies.
#include "parallel/model.h"

#include <algorithm>

#include "core/check.h"
#include "core/init.h"
#include "parallel/tensor_parallel.h"

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

Model::Model(const ModelConfig& config, Backend& backend, ProcessGroup& tp, StageRange stage, int micro_batch,
             int seq_len, int slots, const std::vector<ParamSpec>& specs, ModelUse use)
    : config_(config),
      backend_(backend),
      stage_(stage),
      micro_batch_(micro_batch),
      seq_len_(seq_len),
      slots_(slots),
      use_(use),
      tp_group_(tp) {
  const int tp_rank = tp.rank(), tp_size = tp.size();
  TS_ASSERT(seq_len >= 1 && seq_len <= config.max_seq_len && micro_batch >= 1 && slots >= 1, "bad plan");
  TS_ASSERT(use == ModelUse::kTrain || slots == 1, "an inference model has one slot");
  const bool train = use == ModelUse::kTrain;
  TS_ASSERT(config.dtype == DType::kF32 || config.dtype == DType::kBF16, "compute dtype ", dtype_name(config.dtype));
  TS_ASSERT(stage.first_layer >= 0 && stage.end_layer <= config.n_layer && stage.first_layer <= stage.end_layer,
            "bad stage");
  // Inference ignores sequence parallelism: decode works on a few new tokens, which do not split over tp.
  sequence_parallel_ = config.sequence_parallel && train && tp_size > 1;
  TS_CHECK(!sequence_parallel_ || static_cast<int64_t>(micro_batch) * seq_len % tp_size == 0, ConfigError,
           "parallel.sequence_parallel splits the micro-batch's ", micro_batch, " * ", seq_len,
           " tokens (micro-batch size * sequence length) into equal chunks over tp = ", tp_size,
           ", which does not divide them: choose a batch and sequence length whose product is a multiple of ", tp_size,
           ", or turn parallel.sequence_parallel off");
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
  flat_compute_ = flat_params_;
  if (config.dtype != DType::kF32) {
    compute_buffer_ = backend.allocate(static_cast<size_t>(total) * dtype_size(config.dtype));
    flat_compute_ = compute_buffer_.tensor(0, config.dtype, {total});
  }
  for (LocalParam& p : params_) {
    p.value = elements(flat_params_, p.offset, p.layout.local_shape);
    p.compute = elements(flat_compute_, p.offset, p.layout.local_shape);
  }
  if (train) plan_gradients(total);
  backend.fill(flat_params_, 0.0f);
  refresh_compute_params();
  if (train) backend.fill(flat_grads_, 0.0f);
}

void Model::plan_gradients(int64_t total) {
  const int local_blocks = stage_.layer_count();
  if (config_.gradient_storage == GradientStorage::kFlat || local_blocks == 0) {
    // A stage without blocks has nothing to put in a ring: its gradients are all resident, which is kFlat.
    grad_buffer_ = backend_.allocate(static_cast<size_t>(total) * sizeof(float));
    flat_grads_ = grad_buffer_.tensor(0, DType::kF32, {total});
    for (LocalParam& p : params_) p.grad = elements(flat_grads_, p.offset, p.layout.local_shape);
    backend_.fill(flat_grads_, 0.0f);
    return;
  }
  // Note [Gradient storage]: the resident gradients in params() order, then the ring.
  TS_ASSERT(config_.gradient_ring >= 1 && config_.gradient_ring_align >= 1, "gradient ring of ", config_.gradient_ring,
            " slots aligned to ", config_.gradient_ring_align);
  gradient_storage_ = GradientStorage::kLayerRing;
  // Held block i is the i-th block this stage holds in increasing layer order, over all its chunks.
  ring_index_.assign(static_cast<size_t>(stage_.end_layer - stage_.first_layer), -1);
  for (int c = 0, i = 0; c < stage_.chunk_count(); ++c)
    for (int l = stage_.chunk(c).first; l < stage_.chunk(c).second; ++l) ring_index_[l - stage_.first_layer] = i++;
  int64_t resident = 0;
  std::vector<int64_t> block_begin(local_blocks, -1), block_numel(local_blocks, 0);
  for (const LocalParam& p : params_) {
    const int64_t n = product(p.layout.local_shape);
    if (p.spec.place != ParamPlace::kBlock) {
      resident += n;
      continue;
    }
    const int i = ring_index_[p.spec.layer - stage_.first_layer];
    if (block_begin[i] < 0) block_begin[i] = p.offset;
    TS_ASSERT(p.offset == block_begin[i] + block_numel[i], "block ", p.spec.layer,
              "'s parameters are not back to back in params() order at ", p.spec.name);
    block_numel[i] += n;
  }
  const int64_t layer_numel = block_numel[0];
  for (int i = 0; i < local_blocks; ++i) {
    TS_ASSERT(block_numel[i] == layer_numel, "held block ", i, " has ", block_numel[i],
              " gradient elements and held block 0 has ", layer_numel,
              ": a gradient ring needs every block to have the same parameter shapes");
  }
  const int64_t align = config_.gradient_ring_align;
  const int64_t slot_numel = (layer_numel + align - 1) / align * align;
  const int slots = std::min(config_.gradient_ring, local_blocks);
  const int64_t storage = resident + slots * slot_numel;
  grad_buffer_ = backend_.allocate(static_cast<size_t>(std::max<int64_t>(storage, 1)) * sizeof(float));
  flat_grads_ = grad_buffer_.tensor(0, DType::kF32, {storage});
  for (int s = 0; s < slots; ++s) ring_slots_.push_back(elements(flat_grads_, resident + s * slot_numel, {slot_numel}));
  int64_t resident_at = 0;
  for (LocalParam& p : params_) {
    if (p.spec.place != ParamPlace::kBlock) {
      p.grad = elements(flat_grads_, resident_at, p.layout.local_shape);
      resident_at += product(p.layout.local_shape);
      continue;
    }
    const int i = ring_index_[p.spec.layer - stage_.first_layer];
    p.grad = elements(ring_slots_[i % slots], p.offset - block_begin[i], p.layout.local_shape);
  }
  backend_.fill(flat_grads_, 0.0f);
}

int64_t Model::gradient_bytes() const {
  return flat_grads_.defined() ? flat_grads_.numel() * static_cast<int64_t>(sizeof(float)) : 0;
}

int Model::gradient_ring_slot_of(int layer) const {
  if (gradient_storage_ != GradientStorage::kLayerRing) return -1;
  TS_ASSERT(stage_.holds_layer(layer), "block ", layer, " is not on this stage");
  return ring_index_[layer - stage_.first_layer] % gradient_ring_slots();
}

Tensor Model::grad_range(int first, int end) const {
  TS_ASSERT(flat_grads_.defined() && first >= 0 && first <= end && end <= static_cast<int>(params_.size()),
            "gradient range [", first, ", ", end, ")");
  if (first == end) return Tensor();
  float* at = params_[first].grad.f32();
  int64_t n = 0;
  for (int i = first; i < end; ++i) {
    TS_ASSERT(params_[i].grad.f32() == at + n, params_[i].spec.name, "'s gradient does not follow ",
              params_[first].spec.name, "'s in storage");
    n += params_[i].grad.numel();
  }
  return Tensor(at, DType::kF32, flat_grads_.device(), {n});
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

bool slot_layer_recomputed(const ModelConfig& config, const StageRange& stage, int j) {
  for (int c = 0; c < stage.chunk_count(); ++c) {
    const auto [first, end] = stage.chunk(c);
    if (j < end - first && !config.recomputes(first + j)) return false;
  }
  return true;
}

bool Model::slot_layer_recomputed(int j) const { return tessera::slot_layer_recomputed(config_, stage_, j); }

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

Tensor Model::fused(Tensor LocalParam::*of, int first, int count) const {
  const LocalParam& head = params_[first];
  TS_ASSERT(head.layout.local_shape.size() == 2, head.spec.name, " is not a matrix");
  const Tensor& base = head.*of;
  const int64_t element = static_cast<int64_t>(dtype_size(base.dtype()));
  int64_t rows = 0;
  for (int i = first; i < first + count; ++i) {
    const LocalParam& p = params_[i];
    TS_ASSERT(p.layout.local_shape.size() == 2 && p.layout.local_shape[1] == head.layout.local_shape[1] &&
                  static_cast<const char*>((p.*of).data()) ==
                      static_cast<const char*>(base.data()) + rows * head.layout.local_shape[1] * element,
              p.spec.name, " does not follow ", head.spec.name, " in storage");
    rows += p.layout.local_shape[0];
  }
  return make_view(base.data(), base.dtype(), base.device(), {rows, head.layout.local_shape[1]});
}

Tensor Model::fused_value(int first, int count) const { return fused(&LocalParam::compute, first, count); }
Tensor Model::fused_grad(int first, int count) const { return fused(&LocalParam::grad, first, count); }

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

int64_t Model::stage_rows() const {
  const int64_t tokens = static_cast<int64_t>(micro_batch_) * seq_len_;
  return sequence_parallel_ ? tokens / tp_group_.size() : tokens;
}

void Model::reduce_sequence_parallel_grads(int layer, bool blocks_only) {
  if (!sequence_parallel_) return;
  // The highest block this stage holds (-1: none). With virtual stages the last chunk may hold only the head, so
  // this is not end_layer - 1.
  int top_block = -1;
  for (int c = 0; c < stage_.chunk_count(); ++c) {
    const auto [first, end] = stage_.chunk(c);
    if (end > first) top_block = std::max(top_block, end - 1);
  }
  auto completes = [&](const ParamSpec& spec) {
    if (blocks_only) return spec.place == ParamPlace::kBlock && spec.layer == layer;
    switch (spec.place) {
      case ParamPlace::kBlock:
        return spec.layer == layer;
      case ParamPlace::kOutput:  // complete before any block's backward; the DP sync takes it with the top block
        return layer == top_block;
      case ParamPlace::kInput:
        return layer == -1;
    }
    return false;
  };
  // One all-reduce per run of such parameters whose gradients lie back to back in storage (a norm's weight and
  // bias; in the flat buffer or in a ring slot, Note [Gradient storage]).
  float* run_at = nullptr;
  int64_t run_n = 0;
  auto flush = [&] {
    if (run_n > 0) all_reduce_tp(tp_group_, Tensor(run_at, DType::kF32, flat_grads_.device(), {run_n}));
    run_at = nullptr;
    run_n = 0;
  };
  for (const LocalParam& p : params_) {
    if (!(p.spec.sequence_parallel_grad && completes(p.spec))) continue;
    TS_ASSERT(p.spec.tp_split_dim < 0 && !p.spec.vocab_parallel, p.spec.name,
              ": a sequence-parallel gradient must belong to a replicated parameter");
    if (run_at != nullptr && p.grad.f32() != run_at + run_n) flush();
    if (run_at == nullptr) run_at = p.grad.f32();
    run_n += p.grad.numel();
  }
  flush();
}

}  // namespace tessera
