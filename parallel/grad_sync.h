// DpGradSync: data-parallel gradient synchronization in buckets, started while backward is still running.
//
// Instead of one blocking all-reduce of the whole gradient after backward, the flat gradient buffer is cut
// into buckets of whole parameters, and each bucket's collective starts as soon as backward of the step's
// last micro-batch has completed every parameter in it, so it overlaps the backward of the layers below.
// Plain data parallelism all-reduces (sums) each bucket; ZeRO-1 reduce-scatters it instead, so that each DP
// rank ends up with the summed gradient of its own shard only, and all-gathers the updated parameters back
// after the optimizer step (gather_params()). ZeRO-2 (Note [ZeRO-2 gradient ring]) shards the gradients
// themselves: no rank holds the whole gradient at any time.
//
// Note [DP gradient buckets]
// The model's flat gradient buffer holds its parameters p_0 .. p_{P-1} back to back in params() order (the
// input embeddings, the blocks' in order, then the final norm and any output head; ParamSpec::place): p_i
// occupies elements [o_i, o_i + n_i), o_{i+1} = o_i + n_i. Backward
// completes them roughly from p_{P-1} down to p_0, so buckets are formed walking the parameters in reverse:
// bucket 0 starts with p_{P-1} and takes p_{P-2}, p_{P-3}, ... as long as its size stays <= cap elements; the
// parameter that would overflow it starts bucket 1, and so on. A parameter larger than the cap gets a bucket
// of its own. Bucket k therefore covers the contiguous range [o_first(k), o_first(k-1)) of whole parameters,
// just below bucket k-1, and bucket K-1 (holding the embedding) ends at element 0.
//
// When a bucket is complete: a block's parameters once that block's backward is done (mark_layer_done(l)
// for block l); the output side (final norm, head: ParamPlace::kOutput) once the stage's last block is done
// (their gradients are computed before any block's backward); the input side (embeddings) only at the very end
// (mark_layer_done(-1)): a tied embedding receives the head's gradient in forward and the lookup's in the
// embedding backward, which runs last. Blocks finish in
// decreasing order, so buckets become complete, and are launched, in the order 0, 1, 2, ...; every rank of
// the DP group launches the same collectives in the same order, as MPI requires.
//
// ZeRO-1 partition of bucket k (n = its size, D = DP size, r = DP rank):
//   chunk c = ceil(n / D); the bucket is padded with D*c - n (< D) zeros to D*c elements;
//   rank r owns bucket elements [r*c, (r+1)*c), of which [r*c, min((r+1)*c, n)) are real (possibly none);
//   rank r's shard is the concatenation of its chunks of buckets 0, 1, ..., K-1: bucket k's chunk starts at
//   shard offset s_k = c_0 + ... + c_{k-1}, and the shard holds s_K = sum_k c_k elements.
// When D divides n the collectives read and write the flat buffers in place; otherwise the bucket goes
// through a padded staging copy (allocated once, only for such buckets).
//
// Note [ZeRO-2 gradient ring]
// With ZeRO stage 2 the model stores its blocks' gradients in a ring of R one-block slots (Note [Gradient
// storage] in parallel/model.h); only the input- and output-side parameters' gradients stay resident. The
// buckets are then layer-granular: each block's parameters form exactly one bucket (whatever the cap), and the
// resident parameters are bucketed under the cap as above (plan_grad_buckets with `whole`), so the bucket order
// and the shard layout differ from ZeRO-1's (checkpoints do not care: they store optimizer state per parameter
// element, through OptimizerStateRange). Per step:
//   start_step() zeroes shard(), which accumulates the blocks' summed gradients over the micro-batches;
//   after block l's backward of EVERY micro-batch (mark_block_done(l)) its slot is reduce-scattered, in place
//     (a slot is padded to chunk * D elements), into a per-slot receive chunk, which is added into the bucket's
//     chunk of shard() once the collective is complete; then the slot is zeroed;
//   before a block's backward may write a slot, the collective still reading it is waited for: the slot of
//     block l - 1 when block l is done, the slot of the chunk's top block when a micro-batch's backward of a
//     chunk starts (backward_begin(chunk); with virtual stages a rank's chunks interleave their backwards and
//     the ring follows the held blocks' order, Note [Gradient storage]). With R = 2 the reduce-scatter of
//     block l overlaps the backward of block l - 1;
//   the resident buckets are reduce-scattered once, straight into shard(), when the last micro-batch completes
//     them (mark_layer_done, as for ZeRO-1).
// The blocks' gradients therefore cross the DP group once per micro-batch: M times the DP traffic of ZeRO-1 for
// them (DeepSpeed's stage 2 does the same under gradient accumulation). shard() sums per micro-batch, then over
// micro-batches, where ZeRO-1 sums over micro-batches first: equal within fp32 rounding, not bit-identical.
// gather_params() moves padded block buckets through the (then idle) ring slots, R at a time.
//
// Note [MPI progress for overlap]
// Open MPI makes no progress on a nonblocking collective unless the process calls into MPI. progress() tests
// every outstanding collective, and mark_layer_done() calls it, so transfers advance at each block boundary
// of backward (and during any other MPI call the model makes, e.g. its TP all-reduces).
//
// Thread-safety: one thread, like the ProcessGroup it uses.
#pragma once

#include <chrono>
#include <cstdint>
#include <utility>
#include <vector>

#include "core/backend.h"
#include "parallel/model.h"
#include "parallel/process_group.h"

namespace tessera {

// One bucket of Note [DP gradient buckets].
struct GradBucket {
  int first_param = 0;  // parameters [first_param, end_param), in params() order
  int end_param = 0;
  int64_t begin = 0;  // flat buffer elements [begin, end)
  int64_t end = 0;
  int64_t chunk = 0;         // ceil(size() / dp_size): the elements each DP rank owns under ZeRO-1
  int64_t shard_offset = 0;  // where this bucket's chunk starts in a rank's shard
  int group = -1;            // the `whole` group (ZeRO-2: the block) the bucket consists of; -1: capped
  int64_t size() const { return end - begin; }
};

// Buckets of parameters with element counts numels (in flat-buffer order, back to back from element 0),
// formed as in Note [DP gradient buckets]: bucket 0 holds the last parameters. cap_elements >= 1,
// dp_size >= 1. whole (empty, or one entry per parameter): a run of consecutive parameters with the same
// whole[i] >= 0 is exactly one bucket, whatever its size (Note [ZeRO-2 gradient ring]: one block each), and no
// bucket holds parameters of different whole[i]; parameters with whole[i] = -1 are bucketed under the cap. Pure.
std::vector<GradBucket> plan_grad_buckets(const std::vector<int64_t>& numels, int64_t cap_elements, int dp_size,
                                          const std::vector<int>& whole = {});

// Elements of one gradient bucket for a cap of bucket_mb MiB (2^20 bytes) of f32: at least 1.
int64_t bucket_cap_elements(double bucket_mb);

// A piece of one parameter inside one DP rank's ZeRO-1 shard.
struct ShardSegment {
  int param = 0;  // index in params()
  int bucket = 0;
  int64_t flat_begin = 0;   // flat buffer elements [flat_begin, flat_begin + size)
  int64_t shard_begin = 0;  // are shard elements [shard_begin, shard_begin + size)
  int64_t size = 0;
};

// The real (non-padding) elements of rank dp_rank's shard, split at parameter boundaries, in shard order.
// numels as for plan_grad_buckets, buckets from it with the same dp_size. Pure.
std::vector<ShardSegment> plan_shard_segments(const std::vector<GradBucket>& buckets,
                                              const std::vector<int64_t>& numels, int dp_rank, int dp_size);

// Elements of a rank's shard: sum of the buckets' chunks.
int64_t shard_numel(const std::vector<GradBucket>& buckets);

// Where the time of the gradient sync went, summed over the steps since the last reset_stats().
struct DpSyncStats {
  int64_t steps = 0;
  // Wall time during which at least one bucket collective was in flight: the union over buckets of
  // [launch, observed completion]. Completion is only observed when progress() or finish() tests it, so
  // this can overstate the collectives' true duration by up to one block's backward.
  double comm_seconds = 0;
  // Wall time the caller spent inside finish(): the part of the sync that backward did not hide.
  double blocked_seconds = 0;
  // Wall time from the end of backward (mark_layer_done(-1); the start of finish() if it never came) to the
  // end of finish(): blocked_seconds plus whatever the caller did in between. The trainer's loss all-reduce
  // runs there; it drives the outstanding buckets too, and absorbs any lag between the ranks, so this is the
  // number to compare between overlap on and off.
  double exposed_seconds = 0;
};

class DpGradSync {
 public:
  enum class Mode {
    kAllReduce,      // every rank gets the summed gradient of the whole model
    kReduceScatter,  // ZeRO-1: every rank gets the summed gradient of its shard, in shard()
    // ZeRO-2 (Note [ZeRO-2 gradient ring]): as kReduceScatter, from a model with GradientStorage::kLayerRing
    // whose ring slots are aligned to the DP size; blocks are reduce-scattered after every micro-batch.
    kShardedGradients,
  };

  // Plans the buckets over the model's parameters (LocalParam::offset) with a cap of bucket_mb MiB (> 0) and
  // allocates the ZeRO shard and padding staging from backend. The model's gradient storage must be kFlat,
  // except in kShardedGradients mode (kLayerRing, or kFlat for a stage without blocks). model, backend and dp
  // must outlive this object. Local.
  DpGradSync(Model& model, Backend& backend, ProcessGroup& dp, double bucket_mb, Mode mode);
  DpGradSync(const DpGradSync&) = delete;
  DpGradSync& operator=(const DpGradSync&) = delete;

  // Begins a step: forgets the previous step's progress (kShardedGradients: zeroes shard()). The previous step
  // must have finished.
  void start_step();
  // kShardedGradients (Note [ZeRO-2 gradient ring]); nothing in the other modes. backward_begin(chunk): a
  // micro-batch's backward of the stage's chunk `chunk` (0 without virtual stages) is about to run: waits for
  // the collective still reading the ring slot of the chunk's top block, if any. mark_block_done(layer): this
  // backward has completed block `layer` (global index; decreasing within one backward): launches the
  // reduce-scatter of its ring slot, then waits for the one still reading the slot of block layer - 1, if the
  // stage holds it, and progress(). A slot whose collective is
  // complete is added into shard() and zeroed. Throw CommError when a peer does not arrive within the
  // group's timeout.
  void backward_begin(int chunk = 0);
  void mark_block_done(int layer);
  // Backward of the step's last micro-batch has completed block `layer` (its global index), and every block
  // above it; layer = -1: all of backward is done. Calls must come in strictly decreasing layer order within
  // a step. Launches the collectives of the buckets that are now complete (unless overlap is off), then
  // progress(). Never blocks on communication.
  void mark_layer_done(int layer);
  // Tests every outstanding collective, which lets MPI advance them (Note [MPI progress for overlap]).
  // Never blocks.
  void progress();
  // Launches the buckets not yet launched and waits for all of them. Afterwards, in kAllReduce mode
  // model.flat_grads() holds the sum over the DP group; in kReduceScatter mode shard() holds the sum of
  // this rank's shard, and flat_grads() still holds this rank's own (unsummed) gradients; in
  // kShardedGradients mode shard() holds the sum of this rank's shard, the resident gradients this rank's
  // own, the ring slots zeros. Throws CommError when a peer does not arrive within the group's timeout.
  void finish();

  // ZeRO-1 and -2: the updated parameters of this rank's shard, put in shard() by the optimizer (padding
  // elements zero), are all-gathered into model.flat_params(), one collective per bucket, started together
  // (kShardedGradients: padded block buckets R at a time through the ring slots, zero again afterwards).
  // Blocks until done. Collective over the DP group.
  void gather_params();

  // Off: nothing is launched before finish(), which then does a blocking sync of all buckets after backward
  // (the reference that the overlap is measured against). On by default. kShardedGradients: only the resident
  // buckets wait; the blocks' ring slots must be reduced per micro-batch either way.
  void set_overlap(bool overlap) { overlap_ = overlap; }

  Mode mode() const { return mode_; }
  ProcessGroup& dp() const { return dp_; }
  const std::vector<GradBucket>& buckets() const { return buckets_; }
  // ZeRO-1 and -2: this rank's shard segments (plan_shard_segments) and its [shard_numel] buffer; see
  // start_step(), finish() and gather_params() for what it holds when.
  const std::vector<ShardSegment>& shard_segments() const { return segments_; }
  Tensor shard() const { return shard_; }

  const DpSyncStats& stats() const { return stats_; }
  void reset_stats() { stats_ = DpSyncStats{}; }
  // 1 - blocked_seconds / comm_seconds, clamped to [0, 1]: the fraction of the collectives' wall time that
  // was hidden behind backward; 0 when nothing was communicated. Optimistic, as comm_seconds can be.
  double hidden_fraction() const;

 private:
  using Clock = std::chrono::steady_clock;

  bool sharded_mode() const { return mode_ != Mode::kAllReduce; }
  void launch(int bucket);
  // Records an in-flight interval in the trace, if its launch was traced (launched_us >= 0, core/trace.h),
  // and forgets the launch.
  void trace_in_flight(int bucket, int64_t& launched_us);
  // kShardedGradients: the ring slot's collective is complete: adds its chunk into shard(), zeroes the slot.
  void complete_ring_slot(int slot);
  // Waits for the ring slot's collective, if any, and completes it.
  void free_ring_slot(int slot);
  // Tensor over flat-buffer elements [begin, begin + n) of `flat`.
  Tensor range(Tensor flat, int64_t begin, int64_t n) const;
  // The padded staging copy of a bucket whose size D does not divide (undefined otherwise).
  Tensor staging(int bucket) const;

  Model& model_;
  Backend& backend_;
  ProcessGroup& dp_;
  Mode mode_;
  bool overlap_ = true;
  // Nothing to do: all-reduce over a group of one.
  bool idle_ = false;

  std::vector<GradBucket> buckets_;
  std::vector<int> ready_layer_;  // bucket b is complete once mark_layer_done(l) with l <= ready_layer_[b]
  std::vector<ShardSegment> segments_;
  Buffer shard_buffer_;
  Tensor shard_;
  Buffer staging_buffer_;
  std::vector<int64_t> staging_offset_;  // per bucket, elements into staging_buffer_; -1: none

  // The current step.
  int next_bucket_ = 0;  // buckets [0, next_bucket_) are launched
  int done_layer_ = 0;   // the last mark_layer_done() argument
  bool step_open_ = false;
  std::vector<WorkHandle> work_;  // per bucket; null once completed (or not launched)
  std::vector<Clock::time_point> launched_at_, completed_at_;
  std::vector<int64_t> launched_us_;  // wall clock of a traced launch (core/trace.h), per bucket; -1: not traced
  Clock::time_point backward_done_at_;
  // Every collective's [launch, observed completion] this step, for DpSyncStats::comm_seconds.
  std::vector<std::pair<Clock::time_point, Clock::time_point>> in_flight_;

  // kShardedGradients: per ring slot, the block bucket in flight (-1: none), its collective, its receive chunk.
  std::vector<int> bucket_of_block_;  // per local block
  std::vector<int> ring_bucket_;
  std::vector<WorkHandle> ring_work_;
  std::vector<Clock::time_point> ring_launched_at_;
  std::vector<int64_t> ring_launched_us_;
  Buffer ring_receive_buffer_;
  std::vector<Tensor> ring_receive_;
  int ring_done_layer_ = 0;  // the last mark_block_done() argument of this micro-batch

  DpSyncStats stats_;
};

}  // namespace tessera
