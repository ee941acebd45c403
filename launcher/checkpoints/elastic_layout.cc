// The elastic layout decision and its application to a resumed job (Note [Elastic layout] in the header).
#include "launcher/checkpoints/elastic_layout.h"

#include <algorithm>

#include "core/check.h"
#include "launcher/checkpoints/checkpoint_manifest.h"

namespace tessera {

namespace {

std::string plural(int n, const char* one, const char* many) { return str_cat(n, " ", n == 1 ? one : many); }

}  // namespace

std::optional<ElasticLayout> elastic_layout(const SavedLayout& saved, int global_batch, int world_size) {
  TS_ASSERT(saved.tp >= 1 && saved.pp >= 1 && saved.dp >= 1 && saved.micro_batches >= 1 && world_size >= 1,
            "saved layout tp ", saved.tp, " pp ", saved.pp, " dp ", saved.dp, " micro-batches ", saved.micro_batches);
  const int saved_world = saved.tp * saved.pp * saved.dp;
  if (saved_world == world_size) return std::nullopt;
  const int model_ranks = saved.tp * saved.pp;
  const std::string saved_text =
      str_cat("the checkpoint was written by ", saved_world, " ranks (tp=", saved.tp, " pp=", saved.pp, " dp=", saved.dp,
              "), this job runs on ", world_size);
  TS_CHECK(world_size % model_ranks == 0, ConfigError, saved_text, ", which tp * pp = ", model_ranks,
           " does not divide: run on a multiple of ", model_ranks,
           " ranks (mpirun -np), or choose the layout yourself with --set parallel.tp=... --set parallel.pp=...");
  ElasticLayout layout;
  layout.tp = saved.tp;
  layout.pp = saved.pp;
  layout.dp = world_size / model_ranks;
  TS_CHECK(global_batch % layout.dp == 0, ConfigError, saved_text, ", so dp would be ", layout.dp,
           ", which does not divide train.global_batch (", global_batch,
           "): the global batch must stay the same to continue the run's data order; run on tp * pp * dp ranks "
           "with a dp that divides ",
           global_batch, ", or choose the layout yourself with --set parallel.dp=...");
  const int per_dp = global_batch / layout.dp;
  // The checkpoint's sequences per micro-batch when they still divide a DP rank's share, else the largest that does.
  const int saved_size = std::max(1, saved.global_batch / (saved.dp * saved.micro_batches));
  layout.micro_batch_size = std::min(saved_size, per_dp);
  while (per_dp % layout.micro_batch_size != 0) --layout.micro_batch_size;
  layout.micro_batches = per_dp / layout.micro_batch_size;
  layout.change = str_cat("elastic resume: ", saved_text, ": tp=", layout.tp, " pp=", layout.pp, " dp=", saved.dp,
                          " -> ", layout.dp, ", ", plural(saved.micro_batches, "micro-batch", "micro-batches"), " of ",
                          saved_size, " -> ", plural(layout.micro_batches, "micro-batch", "micro-batches"), " of ",
                          layout.micro_batch_size, " per DP rank (global batch ", global_batch, " unchanged)");
  return layout;
}

SavedLayout saved_layout_of(const checkpoint::Manifest& manifest) {
  SavedLayout saved;
  saved.tp = std::max(1, manifest.layout().tp());
  saved.pp = std::max(1, manifest.layout().pp());
  saved.dp = std::max(1, manifest.layout().dp());
  saved.micro_batches = std::max(1, manifest.config().parallel().micro_batches());
  saved.global_batch = std::max(1, manifest.config().train().global_batch());
  return saved;
}

bool overrides_set_layout(const std::vector<std::string>& overrides) {
  for (const std::string& assignment : overrides) {
    const std::string key = assignment.substr(0, assignment.find('='));
    if (key == "parallel.tp" || key == "parallel.pp" || key == "parallel.dp" || key == "parallel.micro_batches") {
      return true;
    }
  }
  return false;
}

std::string adapt_layout_for_resume(config::JobConfig& job, const std::string& spec, int world_size,
                                    const std::vector<std::string>& overrides) {
  if (overrides_set_layout(overrides)) return "";
  const ResumeCandidates candidates = resume_candidates(spec, job.logging().run_dir());
  for (const std::string& dir : candidates.dirs) {
    checkpoint::Manifest manifest;
    try {
      manifest = read_manifest(dir);
    } catch (const CheckpointError&) {
      continue;  // the resume itself reports it and falls back (Checkpointer::resume)
    }
    if (!manifest.has_layout()) return "";
    std::optional<ElasticLayout> layout;
    try {
      layout = elastic_layout(saved_layout_of(manifest), job.train().global_batch(), world_size);
    } catch (const ConfigError&) {
      // The checkpoint's tp and pp do not fit this world. A checkpoint loads in any layout, so when the job's own
      // layout fits, the run continues in it, resharded; only when neither fits is the job refused.
      const config::ParallelConfig& own = job.parallel();
      const int model_ranks = own.tp() * own.pp();
      const bool own_fits = model_ranks > 0 && world_size % model_ranks == 0 &&
                            (!own.has_dp() || own.dp() * model_ranks == world_size);
      if (!own_fits) throw;
      return "";
    }
    if (!layout) return "";
    config::ParallelConfig* parallel = job.mutable_parallel();
    parallel->set_tp(layout->tp);
    parallel->set_pp(layout->pp);
    parallel->set_dp(layout->dp);
    parallel->set_micro_batches(layout->micro_batches);
    return layout->change;
  }
  return "";
}

}  // namespace tessera
