// Bucketed data-parallel gradient sync (Note [DP gradient buckets] in the header).
#include "parallel/grad_sync.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <string>
#include <utility>

#include "core/check.h"
#include "core/trace.h"

namespace tessera {

std::vector<GradBucket> plan_grad_buckets(const std::vector<int64_t>& numels, int64_t cap_elements, int dp_size,
                                          const std::vector<int>& whole) {
  TS_ASSERT(cap_elements >= 1 && dp_size >= 1, "bucket cap ", cap_elements, ", dp size ", dp_size);
  TS_ASSERT(whole.empty() || whole.size() == numels.size(), "whole groups for ", whole.size(), " of ", numels.size(),
            " parameters");
  const auto group = [&](int i) { return whole.empty() ? -1 : whole[i]; };
  std::vector<int64_t> offsets(numels.size() + 1, 0);
  for (size_t i = 0; i < numels.size(); ++i) {
    TS_ASSERT(numels[i] >= 0, "negative parameter size");
    offsets[i + 1] = offsets[i] + numels[i];
  }
  std::vector<GradBucket> buckets;
  int end_param = static_cast<int>(numels.size());
  int64_t shard_offset = 0;
  while (end_param > 0) {
    // Grow downwards from p_{end_param-1} while the bucket stays within the cap; always take one parameter.
    int first_param = end_param - 1;
    const int g = group(first_param);
    if (g >= 0) {
      while (first_param > 0 && group(first_param - 1) == g) --first_param;
    } else {
      while (first_param > 0 && group(first_param - 1) == -1 &&
             offsets[end_param] - offsets[first_param - 1] <= cap_elements) {
        --first_param;
      }
    }
    GradBucket b;
    b.group = g;
    b.first_param = first_param;
    b.end_param = end_param;
    b.begin = offsets[first_param];
    b.end = offsets[end_param];
    b.chunk = (b.size() + dp_size - 1) / dp_size;
    b.shard_offset = shard_offset;
    shard_offset += b.chunk;
    buckets.push_back(b);
    end_param = first_param;
  }
  return buckets;
}

int64_t bucket_cap_elements(double bucket_mb) {
  TS_ASSERT(std::isfinite(bucket_mb) && bucket_mb > 0, "bucket size ", bucket_mb, " MiB");
  const double elements = std::floor(bucket_mb * 1024.0 * 1024.0 / sizeof(float));
  return elements < 1 ? 1 : elements > static_cast<double>(INT_MAX) ? INT_MAX : static_cast<int64_t>(elements);
}

std::vector<ShardSegment> plan_shard_segments(const std::vector<GradBucket>& buckets,
                                              const std::vector<int64_t>& numels, int dp_rank, int dp_size) {
  TS_ASSERT(dp_rank >= 0 && dp_rank < dp_size, "dp rank ", dp_rank, " of ", dp_size);
  std::vector<int64_t> offsets(numels.size() + 1, 0);
  for (size_t i = 0; i < numels.size(); ++i) offsets[i + 1] = offsets[i] + numels[i];
  std::vector<ShardSegment> segments;
  for (int k = 0; k < static_cast<int>(buckets.size()); ++k) {
    const GradBucket& b = buckets[k];
    // This rank's real elements of the bucket: [b.begin + r*c, b.begin + min((r+1)*c, n)).
    const int64_t own_begin = b.begin + std::min<int64_t>(dp_rank * b.chunk, b.size());
    const int64_t own_end = b.begin + std::min<int64_t>((dp_rank + 1) * b.chunk, b.size());
    for (int p = b.first_param; p < b.end_param; ++p) {
      const int64_t begin = std::max(own_begin, offsets[p]);
      const int64_t end = std::min(own_end, offsets[p + 1]);
      if (begin >= end) continue;
      segments.push_back(ShardSegment{.param = p,
                                      .bucket = k,
                                      .flat_begin = begin,
                                      .shard_begin = b.shard_offset + (begin - own_begin),
                                      .size = end - begin});
    }
  }
  return segments;
}

int64_t shard_numel(const std::vector<GradBucket>& buckets) {
  return buckets.empty() ? 0 : buckets.back().shard_offset + buckets.back().chunk;
}

DpGradSync::DpGradSync(Model& model, Backend& backend, ProcessGroup& dp, double bucket_mb, Mode mode)
    : model_(model), backend_(backend), dp_(dp), mode_(mode) {
  const std::vector<LocalParam>& params = model.params();
  const StageRange& stage = model.stage();
  const bool ring = mode == Mode::kShardedGradients && model.gradient_storage() == GradientStorage::kLayerRing;
  TS_ASSERT(ring || model.gradient_storage() == GradientStorage::kFlat,
            "a layer-ring gradient storage needs the ZeRO-2 gradient sync");
  std::vector<int64_t> numels;
  std::vector<int> whole;
  int last_block = -1;
  int64_t offset = 0;
  for (const LocalParam& p : params) {
    TS_ASSERT(p.offset == offset, "parameter ", p.spec.name, " is not contiguous in the flat buffer");
    numels.push_back(p.grad.numel());
    whole.push_back(ring && p.spec.place == ParamPlace::kBlock ? p.spec.layer : -1);
    offset += p.grad.numel();
    last_block = std::max(last_block, p.spec.layer);
  }
  TS_ASSERT(offset == model.flat_params().numel(), "parameters do not cover the flat parameter buffer");
  const int D = dp.size();
  buckets_ = plan_grad_buckets(numels, bucket_cap_elements(bucket_mb), D, whole);
  idle_ = mode == Mode::kAllReduce && D == 1;

  // The layer whose completion completes each parameter (Note [DP gradient buckets]); a bucket is complete
  // when its earliest-completing parameter is. A ZeRO-2 block bucket never waits for mark_layer_done: it is
  // reduced per micro-batch instead (INT_MAX: skipped there at once).
  for (const GradBucket& b : buckets_) {
    int ready = INT_MAX;
    for (int i = b.first_param; b.group < 0 && i < b.end_param; ++i) {
      const ParamSpec& spec = params[i].spec;
      const int layer = spec.place == ParamPlace::kBlock    ? spec.layer
                        : spec.place == ParamPlace::kOutput ? last_block
                                                            : -1;
      ready = std::min(ready, layer);
    }
    ready_layer_.push_back(ready);
  }

  staging_offset_.assign(buckets_.size(), -1);
  if (sharded_mode()) {
    segments_ = plan_shard_segments(buckets_, numels, dp.rank(), D);
    const int64_t n = shard_numel(buckets_);
    shard_buffer_ = backend.allocate(static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float));
    shard_ = shard_buffer_.tensor(0, DType::kF32, {n});
    backend.fill(shard_, 0.0f);
    int64_t staging = 0;
    for (size_t k = 0; k < buckets_.size(); ++k) {
      // Block buckets (ZeRO-2) read and gather through the ring slots, padded to chunk * D already.
      if (buckets_[k].chunk * D == buckets_[k].size() || buckets_[k].group >= 0) continue;
      staging_offset_[k] = staging;
      staging += buckets_[k].chunk * D;
    }
    if (staging > 0) {
      staging_buffer_ = backend.allocate(static_cast<size_t>(staging) * sizeof(float));
      backend.fill(staging_buffer_.tensor(0, DType::kF32, {staging}), 0.0f);
    }
  }
  if (ring) {
    bucket_of_block_.assign(stage.end_layer - stage.first_layer, -1);
    int64_t chunk = 0;
    for (int k = 0; k < static_cast<int>(buckets_.size()); ++k) {
      const GradBucket& b = buckets_[k];
      if (b.group < 0) continue;
      const Tensor slot = model.gradient_ring_slot(model.gradient_ring_slot_of(b.group));
      TS_ASSERT(slot.numel() == b.chunk * D, "ring slot of ", slot.numel(), " elements for a block bucket of ",
                b.size(), " over ", D, " DP ranks: the model's gradient_ring_align must be the DP size");
      TS_ASSERT(model.grad_range(b.first_param, b.end_param).f32() == slot.f32(), "block ", b.group,
                "'s gradients do not start its ring slot");
      bucket_of_block_[b.group - stage.first_layer] = k;
      chunk = b.chunk;
    }
    const int slots = model.gradient_ring_slots();
    ring_bucket_.assign(slots, -1);
    ring_work_.resize(slots);
    ring_launched_at_.resize(slots);
    ring_launched_us_.assign(slots, -1);
    ring_receive_buffer_ = backend.allocate(static_cast<size_t>(std::max<int64_t>(slots * chunk, 1)) * sizeof(float));
    for (int s = 0; s < slots; ++s) {
      ring_receive_.push_back(
          Tensor(static_cast<float*>(ring_receive_buffer_.data()) + s * chunk, DType::kF32, backend.device(), {chunk}));
    }
  }
  work_.resize(buckets_.size());
  launched_at_.resize(buckets_.size());
  launched_us_.assign(buckets_.size(), -1);
  completed_at_.resize(buckets_.size());
}

Tensor DpGradSync::range(Tensor flat, int64_t begin, int64_t n) const {
  return Tensor(flat.f32() + begin, DType::kF32, flat.device(), {n});
}

Tensor DpGradSync::staging(int bucket) const {
  if (staging_offset_[bucket] < 0) return Tensor();
  return Tensor(static_cast<float*>(staging_buffer_.data()) + staging_offset_[bucket], DType::kF32, backend_.device(),
                {buckets_[bucket].chunk * dp_.size()});
}

void DpGradSync::start_step() {
  TS_ASSERT(!step_open_, "DpGradSync::start_step before the previous step's finish()");
  step_open_ = true;
  next_bucket_ = 0;
  done_layer_ = INT_MAX;
  ring_done_layer_ = INT_MAX;
  in_flight_.clear();
  // The blocks' chunks accumulate over the micro-batches (Note [ZeRO-2 gradient ring]).
  if (mode_ == Mode::kShardedGradients) backend_.fill(shard_, 0.0f);
}

void DpGradSync::backward_begin(int chunk) {
  if (ring_work_.empty()) return;
  TS_ASSERT(step_open_, "DpGradSync::backward_begin outside a step");
  ring_done_layer_ = INT_MAX;
  const auto [first, end] = model_.stage().chunk(chunk);
  if (end > first) free_ring_slot(model_.gradient_ring_slot_of(end - 1));
}

void DpGradSync::mark_block_done(int layer) {
  if (ring_work_.empty()) return;
  TS_ASSERT(step_open_, "DpGradSync::mark_block_done outside a step");
  const StageRange& stage = model_.stage();
  TS_ASSERT(stage.holds_layer(layer) && layer < ring_done_layer_, "mark_block_done(", layer, ") after mark_block_done(",
            ring_done_layer_, "): blocks must complete in decreasing order");
  ring_done_layer_ = layer;
  const int slot = model_.gradient_ring_slot_of(layer);
  const int bucket = bucket_of_block_[layer - stage.first_layer];
  TS_ASSERT(!ring_work_[slot], "ring slot ", slot, " written while its collective was in flight");
  trace::Span span(trace::Track::kDataParallel, "dp", "launch");
  if (span.on()) {
    span.name(str_cat("reduce-scatter block ", layer, " launch"))
        .arg("bucket", bucket)
        .arg("bytes", buckets_[bucket].size() * static_cast<int64_t>(sizeof(float)));
  }
  ring_bucket_[slot] = bucket;
  ring_launched_at_[slot] = Clock::now();
  ring_launched_us_[slot] = trace::recording() ? trace::now_us() : -1;
  ring_work_[slot] = dp_.reduce_scatter(ring_receive_[slot], model_.gradient_ring_slot(slot), ReduceOp::kSum);
  // The next block down in this chunk writes its slot next (chunks of one rank are never adjacent: pp > 1).
  if (stage.holds_layer(layer - 1)) free_ring_slot(model_.gradient_ring_slot_of(layer - 1));
  progress();
}

void DpGradSync::complete_ring_slot(int slot) {
  in_flight_.emplace_back(ring_launched_at_[slot], Clock::now());
  trace_in_flight(ring_bucket_[slot], ring_launched_us_[slot]);
  const GradBucket& b = buckets_[ring_bucket_[slot]];
  const Tensor chunk = range(shard_, b.shard_offset, b.chunk);
  backend_.add(chunk, chunk, ring_receive_[slot]);
  backend_.fill(model_.gradient_ring_slot(slot), 0.0f);
  ring_work_[slot].reset();
  ring_bucket_[slot] = -1;
}

void DpGradSync::free_ring_slot(int slot) {
  if (!ring_work_[slot]) return;
  {
    trace::Span span(trace::Track::kDataParallel, "dp", "wait");
    if (span.on()) span.name(str_cat("wait ring slot ", slot)).arg("bucket", ring_bucket_[slot]);
    ring_work_[slot]->wait();
  }
  complete_ring_slot(slot);
}

void DpGradSync::launch(int bucket) {
  const GradBucket& b = buckets_[bucket];
  launched_at_[bucket] = Clock::now();
  // A ZeRO-2 block bucket was reduced per micro-batch (mark_block_done); nothing is left to launch.
  if (idle_ || b.group >= 0) {
    completed_at_[bucket] = launched_at_[bucket];
    return;
  }
  launched_us_[bucket] = trace::recording() ? trace::now_us() : -1;
  trace::Span span(trace::Track::kDataParallel, "dp", "launch");
  if (span.on()) {
    span.name(str_cat(mode_ == Mode::kAllReduce ? "all-reduce" : "reduce-scatter", " bucket ", bucket, " launch"))
        .arg("bucket", bucket)
        .arg("bytes", b.size() * static_cast<int64_t>(sizeof(float)));
  }
  const Tensor grads = model_.grad_range(b.first_param, b.end_param);
  if (mode_ == Mode::kAllReduce) {
    // The loss was scaled by 1/(global tokens): the sum over DP ranks is the gradient of the global mean.
    work_[bucket] = dp_.all_reduce(grads, ReduceOp::kSum);
    return;
  }
  Tensor in = grads;
  if (Tensor padded = staging(bucket); padded.defined()) {
    backend_.copy(range(padded, 0, b.size()), grads);
    backend_.fill(range(padded, b.size(), padded.numel() - b.size()), 0.0f);
    in = padded;
  }
  work_[bucket] = dp_.reduce_scatter(range(shard_, b.shard_offset, b.chunk), in, ReduceOp::kSum);
}

void DpGradSync::trace_in_flight(int bucket, int64_t& launched_us) {
  if (launched_us < 0) return;
  // From the launch to the moment this rank saw it complete; buckets overlap, so as async events.
  trace::Event event;
  event.name = str_cat("bucket ", bucket, " in flight");
  event.category = "dp";
  event.track = trace::Track::kDataParallel;
  event.ts_us = launched_us;
  event.dur_us = std::max<int64_t>(0, trace::now_us() - launched_us);
  event.step = trace::current_step();
  event.args = str_cat("\"bucket\": ", bucket);
  event.async_id = bucket;
  trace::record(std::move(event));
  launched_us = -1;
}

void DpGradSync::mark_layer_done(int layer) {
  TS_ASSERT(step_open_, "DpGradSync::mark_layer_done outside a step");
  TS_ASSERT(layer >= -1 && layer < done_layer_, "mark_layer_done(", layer, ") after mark_layer_done(", done_layer_,
            "): layers must complete in decreasing order");
  done_layer_ = layer;
  if (layer == -1) backward_done_at_ = Clock::now();
  if (!overlap_) return;
  const int n = static_cast<int>(buckets_.size());
  while (next_bucket_ < n && ready_layer_[next_bucket_] >= layer) launch(next_bucket_++);
  progress();
}

void DpGradSync::progress() {
  for (int k = 0; k < next_bucket_; ++k) {
    if (work_[k] && work_[k]->test()) {
      completed_at_[k] = Clock::now();
      work_[k].reset();
      trace_in_flight(k, launched_us_[k]);
    }
  }
  for (int s = 0; s < static_cast<int>(ring_work_.size()); ++s) {
    if (ring_work_[s] && ring_work_[s]->test()) complete_ring_slot(s);
  }
}

void DpGradSync::finish() {
  TS_ASSERT(step_open_, "DpGradSync::finish outside a step");
  const Clock::time_point start = Clock::now();
  const int n = static_cast<int>(buckets_.size());
  while (next_bucket_ < n) launch(next_bucket_++);
  for (int k = 0; k < n; ++k) {
    if (!work_[k]) continue;
    {
      // What backward did not hide: the time this rank waits for the bucket (Note [Tracing cost]).
      trace::Span span(trace::Track::kDataParallel, "dp", "wait");
      if (span.on()) span.name(str_cat("wait bucket ", k)).arg("bucket", k);
      work_[k]->wait();
    }
    completed_at_[k] = Clock::now();
    work_[k].reset();
    trace_in_flight(k, launched_us_[k]);
  }
  for (int s = 0; s < static_cast<int>(ring_work_.size()); ++s) free_ring_slot(s);
  const Clock::time_point end = Clock::now();
  step_open_ = false;

  // Union of the in-flight intervals: sorted by launch, a sweep merges overlaps.
  for (int k = 0; k < n; ++k) in_flight_.emplace_back(launched_at_[k], completed_at_[k]);
  std::sort(in_flight_.begin(), in_flight_.end());
  double comm = 0;
  Clock::time_point covered_until = Clock::time_point::min();
  for (const auto& [launched, completed] : in_flight_) {
    const Clock::time_point from = std::max(launched, covered_until);
    if (completed > from) comm += std::chrono::duration<double>(completed - from).count();
    covered_until = std::max(covered_until, completed);
  }
  ++stats_.steps;
  if (!idle_) {
    stats_.comm_seconds += comm;
    stats_.blocked_seconds += std::chrono::duration<double>(end - start).count();
    const Clock::time_point backward_end = done_layer_ == -1 ? backward_done_at_ : start;
    stats_.exposed_seconds += std::chrono::duration<double>(end - backward_end).count();
  }
}

void DpGradSync::gather_params() {
  TS_ASSERT(sharded_mode(), "gather_params needs a ZeRO (reduce-scatter) mode");
  TS_ASSERT(!step_open_, "gather_params during a step's gradient sync");
  const Tensor params = model_.flat_params();
  const int n = static_cast<int>(buckets_.size());
  std::vector<WorkHandle> gathers(buckets_.size());
  std::vector<int> through_ring;  // padded ZeRO-2 block buckets
  trace::Span span(trace::Track::kDataParallel, "dp", "all-gather parameters");
  for (int k = 0; k < n; ++k) {
    const GradBucket& b = buckets_[k];
    if (b.group >= 0 && b.chunk * dp_.size() != b.size()) {
      through_ring.push_back(k);
      continue;
    }
    Tensor padded = staging(k);
    const Tensor out = padded.defined() ? padded : range(params, b.begin, b.size());
    gathers[k] = dp_.all_gather(out, range(shard_, b.shard_offset, b.chunk));
  }
  // The ring slots are idle and zero between steps: each carries one padded block at a time, and is zeroed
  // again for the next step's backward (Note [ZeRO-2 gradient ring]).
  const int slots = model_.gradient_ring_slots();
  for (size_t i = 0; i < through_ring.size(); i += static_cast<size_t>(slots)) {
    const size_t end = std::min(through_ring.size(), i + static_cast<size_t>(slots));
    for (size_t j = i; j < end; ++j) {
      const GradBucket& b = buckets_[through_ring[j]];
      gathers[through_ring[j]] =
          dp_.all_gather(model_.gradient_ring_slot(static_cast<int>(j - i)), range(shard_, b.shard_offset, b.chunk));
    }
    for (size_t j = i; j < end; ++j) {
      const GradBucket& b = buckets_[through_ring[j]];
      const Tensor slot = model_.gradient_ring_slot(static_cast<int>(j - i));
      gathers[through_ring[j]]->wait();
      gathers[through_ring[j]].reset();
      backend_.copy(range(params, b.begin, b.size()), range(slot, 0, b.size()));
      backend_.fill(slot, 0.0f);
    }
  }
  for (int k = 0; k < n; ++k) {
    if (!gathers[k]) continue;
    gathers[k]->wait();
    if (Tensor padded = staging(k); padded.defined()) {
      backend_.copy(range(params, buckets_[k].begin, buckets_[k].size()), range(padded, 0, buckets_[k].size()));
    }
  }
}

double DpGradSync::hidden_fraction() const {
  if (stats_.comm_seconds <= 0) return 0;
  return std::clamp(1.0 - stats_.blocked_seconds / stats_.comm_seconds, 0.0, 1.0);
}

}  // namespace tessera
