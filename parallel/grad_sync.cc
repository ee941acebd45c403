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

std::vector<GradBucket> plan_grad_buckets(const std::vector<int64_t>& numels, int64_t cap_elements, int dp_size) {
  TS_ASSERT(cap_elements >= 1 && dp_size >= 1, "bucket cap ", cap_elements, ", dp size ", dp_size);
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
    while (first_param > 0 && offsets[end_param] - offsets[first_param - 1] <= cap_elements) --first_param;
    GradBucket b;
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
  std::vector<int64_t> numels;
  int last_block = -1;
  int64_t offset = 0;
  for (const LocalParam& p : params) {
    TS_ASSERT(p.offset == offset, "parameter ", p.spec.name, " is not contiguous in the flat buffer");
    numels.push_back(p.grad.numel());
    offset += p.grad.numel();
    last_block = std::max(last_block, p.spec.layer);
  }
  TS_ASSERT(offset == model.flat_grads().numel(), "parameters do not cover the flat gradient buffer");
  const int D = dp.size();
  buckets_ = plan_grad_buckets(numels, bucket_cap_elements(bucket_mb), D);
  idle_ = mode == Mode::kAllReduce && D == 1;

  // The layer whose completion completes each parameter (Note [DP gradient buckets]); a bucket is complete
  // when its earliest-completing parameter is.
  for (const GradBucket& b : buckets_) {
    int ready = INT_MAX;
    for (int i = b.first_param; i < b.end_param; ++i) {
      const ParamSpec& spec = params[i].spec;
      const int layer = spec.place == ParamPlace::kBlock    ? spec.layer
                        : spec.place == ParamPlace::kOutput ? last_block
                                                            : -1;
      ready = std::min(ready, layer);
    }
    ready_layer_.push_back(ready);
  }

  staging_offset_.assign(buckets_.size(), -1);
  if (mode == Mode::kReduceScatter) {
    segments_ = plan_shard_segments(buckets_, numels, dp.rank(), D);
    const int64_t n = shard_numel(buckets_);
    shard_buffer_ = backend.allocate(static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float));
    shard_ = shard_buffer_.tensor(0, DType::kF32, {n});
    backend.fill(shard_, 0.0f);
    int64_t staging = 0;
    for (size_t k = 0; k < buckets_.size(); ++k) {
      if (buckets_[k].chunk * D == buckets_[k].size()) continue;
      staging_offset_[k] = staging;
      staging += buckets_[k].chunk * D;
    }
    if (staging > 0) {
      staging_buffer_ = backend.allocate(static_cast<size_t>(staging) * sizeof(float));
      backend.fill(staging_buffer_.tensor(0, DType::kF32, {staging}), 0.0f);
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
}

void DpGradSync::launch(int bucket) {
  const GradBucket& b = buckets_[bucket];
  launched_at_[bucket] = Clock::now();
  if (idle_) {
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
  const Tensor grads = range(model_.flat_grads(), b.begin, b.size());
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

void DpGradSync::trace_in_flight(int bucket) {
  if (launched_us_[bucket] < 0) return;
  // From the launch to the moment this rank saw it complete; buckets overlap, so as async events.
  trace::Event event;
  event.name = str_cat("bucket ", bucket, " in flight");
  event.category = "dp";
  event.track = trace::Track::kDataParallel;
  event.ts_us = launched_us_[bucket];
  event.dur_us = std::max<int64_t>(0, trace::now_us() - launched_us_[bucket]);
  event.step = trace::current_step();
  event.args = str_cat("\"bucket\": ", bucket);
  event.async_id = bucket;
  trace::record(std::move(event));
  launched_us_[bucket] = -1;
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
      trace_in_flight(k);
    }
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
    trace_in_flight(k);
  }
  const Clock::time_point end = Clock::now();
  step_open_ = false;

  // Union of the in-flight intervals; buckets launch in order, so a sweep over them merges overlaps.
  double comm = 0;
  Clock::time_point covered_until = Clock::time_point::min();
  for (int k = 0; k < n; ++k) {
    const Clock::time_point from = std::max(launched_at_[k], covered_until);
    if (completed_at_[k] > from) comm += std::chrono::duration<double>(completed_at_[k] - from).count();
    covered_until = std::max(covered_until, completed_at_[k]);
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
  TS_ASSERT(mode_ == Mode::kReduceScatter, "gather_params needs the ZeRO-1 (reduce-scatter) mode");
  TS_ASSERT(!step_open_, "gather_params during a step's gradient sync");
  const Tensor params = model_.flat_params();
  const int n = static_cast<int>(buckets_.size());
  std::vector<WorkHandle> gathers(buckets_.size());
  trace::Span span(trace::Track::kDataParallel, "dp", "all-gather parameters");
  for (int k = 0; k < n; ++k) {
    const GradBucket& b = buckets_[k];
    Tensor padded = staging(k);
    const Tensor out = padded.defined() ? padded : range(params, b.begin, b.size());
    gathers[k] = dp_.all_gather(out, range(shard_, b.shard_offset, b.chunk));
  }
  for (int k = 0; k < n; ++k) {
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
