// Elastic resume: the layout a job takes when it continues a checkpoint on a different number of ranks (a node
// was lost, or nodes were added) and the user left the layout to it.
//
// Note [Elastic layout]. A checkpoint written by tp * pp * dp ranks resumes on world ranks as follows: tp and pp
// stay the checkpoint's (they decide how the model is cut, which the operator chose for memory and speed), dp
// becomes world / (tp * pp), and the number of micro-batches per DP rank changes so that train.global_batch
// stays the same: the sequences per micro-batch stay the checkpoint's (the memory a rank needs for activations
// stays what it was) when they divide global_batch / dp, otherwise the largest size below that does. The global
// batch's samples are the same in any dp (Note [Global data order] in launcher/data/sampler.h), so the run
// continues with the same data in the same order and the losses differ from an uninterrupted run's only by fp32
// rounding (sums taken in another grouping). When tp * pp does not divide the world or dp does not divide the
// global batch, the job's own layout is taken instead if it fits the world (the checkpoint is resharded on load,
// as any resume in another layout); refused (ConfigError) only when neither fits. When the user sets parallel.tp, .pp, .dp or .micro_batches with --set, the
// command line wins and nothing is adapted (a mismatch is then the ordinary layout error).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "proto/checkpoint.pb.h"
#include "proto/config.pb.h"

namespace tessera {

// The layout a checkpoint was trained in.
struct SavedLayout {
  int tp = 1;
  int pp = 1;
  int dp = 1;
  int micro_batches = 1;
  int global_batch = 1;
};

// What elastic_layout decided: the new dp and micro-batches, and one line for the log saying what changed.
struct ElasticLayout {
  int tp = 1;
  int pp = 1;
  int dp = 1;
  int micro_batches = 1;
  int micro_batch_size = 1;
  std::string change;
};

// Pure. nullopt when saved's world (tp * pp * dp) is world_size: nothing to adapt. Otherwise the layout of Note
// [Elastic layout] for global_batch on world_size ranks; throws ConfigError saying what to do when there is none.
std::optional<ElasticLayout> elastic_layout(const SavedLayout& saved, int global_batch, int world_size);

// The layout recorded in a checkpoint's manifest (its Layout and its job config's micro-batches and batch).
SavedLayout saved_layout_of(const checkpoint::Manifest& manifest);

// Whether the command line's --set overrides choose the layout (parallel.tp, .pp, .dp or .micro_batches).
bool overrides_set_layout(const std::vector<std::string>& overrides);

// For `tessera train --resume SPEC`: reads the newest readable manifest among the checkpoints SPEC names (none:
// a run starting fresh under --resume auto, nothing to do) and, unless the overrides set the layout, rewrites
// job's parallel section to elastic_layout's choice. Returns the line describing the change, "" when the job
// keeps its layout. Reads files only; every rank calls it and reaches the same answer.
std::string adapt_layout_for_resume(config::JobConfig& job, const std::string& spec, int world_size,
                                    const std::vector<std::string>& overrides);

}  // namespace tessera
