// Saving and resuming: the collective protocol around shard files and manifests.
#include "launcher/checkpoints/checkpoint.h"

#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <random>

#include "core/check.h"
#include "core/trace.h"
#include "launcher/checkpoints/checkpoint_manifest.h"
#include "launcher/common/checksum.h"
#include "launcher/common/config.h"
#include "launcher/common/durable_file.h"
#include "launcher/common/human_format.h"
#include "launcher/common/progress.h"
#include "launcher/common/stop_signal.h"

namespace tessera {

namespace fs = std::filesystem;

namespace {

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

std::string join_path(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

[[noreturn]] void crash_now() {
  std::fflush(stdout);
  ::kill(::getpid(), SIGKILL);
  std::abort();
}

// ---- bytes over a ProcessGroup, whose collectives carry i32/f32 tensors ----------------------------------

Tensor i32_tensor(int32_t* data, int64_t n) { return Tensor(data, DType::kI32, Device::kCpu, {n}); }

std::vector<std::string> all_gather_bytes(ProcessGroup& group, const std::string& mine) {
  const int n = group.size();
  if (n == 1) return {mine};
  int32_t size = static_cast<int32_t>(mine.size());
  std::vector<int32_t> sizes(n);
  group.all_gather(i32_tensor(sizes.data(), n), i32_tensor(&size, 1))->wait();
  const int64_t words = std::max<int64_t>(1, (*std::max_element(sizes.begin(), sizes.end()) + 3) / 4);
  std::vector<int32_t> send(words, 0), received(words * n);
  std::memcpy(send.data(), mine.data(), mine.size());
  group.all_gather(i32_tensor(received.data(), words * n), i32_tensor(send.data(), words))->wait();
  std::vector<std::string> out(n);
  for (int r = 0; r < n; ++r) out[r].assign(reinterpret_cast<const char*>(received.data() + r * words), sizes[r]);
  return out;
}

// Every rank's bytes on `root` (in rank order; empty elsewhere): point to point, so that only the root receives
// the others' data (an all-gather would hand all of it to every rank).
std::vector<std::string> gather_bytes(ProcessGroup& group, const std::string& mine, int root) {
  constexpr int kSizeTag = 7001, kDataTag = 7002;
  const int n = group.size();
  if (n == 1) return {mine};
  if (group.rank() != root) {
    int32_t size = static_cast<int32_t>(mine.size());
    std::vector<int32_t> words(std::max<size_t>(1, (mine.size() + 3) / 4), 0);
    std::memcpy(words.data(), mine.data(), mine.size());
    group.send(i32_tensor(&size, 1), root, kSizeTag)->wait();
    group.send(i32_tensor(words.data(), static_cast<int64_t>(words.size())), root, kDataTag)->wait();
    return {};
  }
  std::vector<std::string> out(n);
  out[static_cast<size_t>(root)] = mine;
  std::vector<int32_t> words;
  for (int r = 0; r < n; ++r) {
    if (r == root) continue;
    int32_t size = 0;
    group.recv(i32_tensor(&size, 1), r, kSizeTag)->wait();
    words.assign(std::max<size_t>(1, (static_cast<size_t>(size) + 3) / 4), 0);
    group.recv(i32_tensor(words.data(), static_cast<int64_t>(words.size())), r, kDataTag)->wait();
    out[static_cast<size_t>(r)].assign(reinterpret_cast<const char*>(words.data()), static_cast<size_t>(size));
  }
  return out;
}

std::string broadcast_bytes(ProcessGroup& group, const std::string& value, int root) {
  if (group.size() == 1) return value;
  int32_t size = static_cast<int32_t>(value.size());
  group.broadcast(i32_tensor(&size, 1), root)->wait();
  const int64_t words = std::max<int64_t>(1, (size + 3) / 4);
  std::vector<int32_t> buffer(words, 0);
  if (group.rank() == root) std::memcpy(buffer.data(), value.data(), value.size());
  group.broadcast(i32_tensor(buffer.data(), words), root)->wait();
  return std::string(reinterpret_cast<const char*>(buffer.data()), size);
}

void all_reduce_max(ProcessGroup& group, std::vector<int32_t>& values) {
  if (group.size() == 1 || values.empty()) return;
  group.all_reduce(i32_tensor(values.data(), static_cast<int64_t>(values.size())), ReduceOp::kMax)->wait();
}

// What a rank reports after writing its shard: 'S' + seconds + checkpoint::Shard, 'N' + seconds (nothing to
// store), or 'E' + seconds + the error message.
std::string shard_report(char kind, double seconds, const std::string& payload) {
  std::string report(1, kind);
  report.append(reinterpret_cast<const char*>(&seconds), sizeof(seconds));
  return report + payload;
}

}  // namespace

checkpoint::ModelShape model_shape(const config::ModelConfig& model) {
  checkpoint::ModelShape shape;
  shape.set_arch(config::Arch_Name(model.arch()));
  shape.set_vocab_size(model.vocab_size());
  shape.set_n_layer(model.n_layer());
  shape.set_n_head(model.n_head());
  shape.set_n_embd(model.n_embd());
  shape.set_max_seq_len(model.max_seq_len());
  const ModelConfig resolved = model_config_from(model);
  shape.set_n_kv_head(resolved.n_kv_head);
  shape.set_ffn_hidden(resolved.ffn_hidden);
  if (model.arch() == config::LLAMA) shape.set_rope_theta(resolved.rope_theta);
  shape.set_tie_embeddings(resolved.tie_embeddings);
  return shape;
}

checkpoint::DataIdentity data_identity(const config::JobConfig& job, const DataSources& data) {
  checkpoint::DataIdentity identity;
  identity.set_mock(job.data().mock());
  // A blend is named by its datasets and weights, so that a resume with another blend is reported.
  std::string train = job.data().train_prefix();
  for (const config::BlendSource& source : job.data().train_blend()) {
    train += str_cat(train.empty() ? "" : " + ", source.weight(), " x ", source.prefix());
  }
  identity.set_train_prefix(train);
  int64_t tokens = 0, documents = 0;
  for (const auto& dataset : data.train_data) {
    tokens += dataset->num_tokens();
    documents += dataset->num_documents();
  }
  if (!data.train_data.empty()) {
    identity.set_num_tokens(tokens);
    identity.set_num_documents(documents);
  }
  identity.set_tokenizer(job.data().tokenizer());
  identity.set_tokenizer_xxh64(data.tokenizer_xxh64);  // checked when the data was opened
  identity.set_seq_len(job.train().seq_len());
  identity.set_global_batch(job.train().global_batch());
  identity.set_seed(job.train().seed());
  return identity;
}

std::string publish_checkpoint(const std::string& tmp_dir, const std::string& checkpoints_dir,
                               checkpoint::Manifest& manifest, SaveCrashPoint crash) {
  if (crash == SaveCrashPoint::kAfterShards) crash_now();
  const std::string name = step_dir_name(manifest.step());
  const std::string final_dir = join_path(checkpoints_dir, name);
  const std::string virtual_path = join_path(tmp_dir, kVirtualFile);
  write_virtual_file(virtual_path, manifest);
  uint64_t size = 0;
  const uint64_t hash = hash_and_sync_file(virtual_path, &size);
  manifest.mutable_virtual_file()->set_file(kVirtualFile);
  manifest.mutable_virtual_file()->set_size_bytes(size);
  manifest.mutable_virtual_file()->set_xxh64(hash);
  manifest.set_created_unix_s(static_cast<int64_t>(std::time(nullptr)));
  write_manifest(tmp_dir, manifest);
  fsync_path(tmp_dir);
  if (crash == SaveCrashPoint::kAfterManifest) crash_now();
  // A directory of the same step (saved before a resume from an older checkpoint) is replaced; its leftover
  // name ends in .tmp-replaced, which the retention pass deletes if a crash interrupts this.
  const std::string replaced = final_dir + ".tmp-replaced";
  if (fs::exists(final_dir)) rename_durably(final_dir, replaced);
  rename_durably(tmp_dir, final_dir);
  if (crash == SaveCrashPoint::kAfterRename) crash_now();
  write_latest(checkpoints_dir, name);
  std::error_code ignored;
  fs::remove_all(replaced, ignored);
  return final_dir;
}

namespace {

// The problems of checkpoint `dir` (its manifest read into *manifest), each shard hashed by one rank of world.
// Collective over world.
std::vector<std::string> verify_checkpoint(ProcessGroup& world, const std::string& dir,
                                           checkpoint::Manifest* manifest) {
  std::string error;
  try {
    *manifest = read_manifest(dir);
  } catch (const CheckpointError& e) {
    error = e.what();
  }
  std::vector<int32_t> bad = {error.empty() ? 0 : 1};
  all_reduce_max(world, bad);
  if (bad[0] != 0) return {error.empty() ? "the manifest could not be read on another rank" : error};
  std::vector<std::string> problems = tiling_problems(*manifest);
  if (!problems.empty()) return problems;
  // Each shard is hashed by one rank.
  std::vector<checkpoint::FileEntry> files;
  for (const checkpoint::Shard& shard : manifest->shards()) files.push_back(shard.file());
  std::vector<int32_t> status(files.size(), 0);
  for (size_t i = 0; i < files.size(); ++i) {
    if (static_cast<int>(i % world.size()) == world.rank()) status[i] = static_cast<int32_t>(check_file(dir, files[i]));
  }
  all_reduce_max(world, status);
  for (size_t i = 0; i < files.size(); ++i) {
    if (status[i] != 0) problems.push_back(describe_file_problem(dir, files[i], static_cast<FileStatus>(status[i])));
  }
  return problems;
}

// Fills every piece (stored or not) from checkpoint `dir`, reading only the stored boxes that overlap them. Not
// collective.
// show_progress: this rank shows the progress of its own reads on stderr (the logger rank: its counts stand for
// every rank's, without a collective).
void read_pieces(const std::string& dir, const checkpoint::Manifest& manifest, const std::vector<LocalParam>& params,
                 const std::vector<StatePiece>& pieces, Backend& backend, bool show_progress) {
  const std::vector<SliceRead> reads = plan_slice_reads(params, pieces, manifest, fs::path(dir).filename().string());
  ProgressOptions progress_style = progress_options(show_progress);
  progress_style.summary_when_quick = false;  // the caller prints what it loaded
  Progress progress("checkpoint load " + fs::path(dir).filename().string(),
                    {{"tensor boxes", ProgressUnit::kCount, static_cast<int64_t>(reads.size())},
                     {"", ProgressUnit::kBytes, -1, true}},
                    progress_style);
  int64_t boxes_read = 0, bytes_read = 0;
  const bool on_cpu = backend.device() == Device::kCpu;
  std::vector<std::vector<float>> host_buffers(on_cpu ? 0 : pieces.size());
  std::vector<float*> host(pieces.size());
  for (size_t k = 0; k < pieces.size(); ++k) {
    // Vocabulary padding is not stored: it is zero.
    if (on_cpu) {
      backend.fill(pieces[k].memory, 0.0f);
      host[k] = pieces[k].memory.f32();
    } else {
      host_buffers[k].assign(static_cast<size_t>(pieces[k].end - pieces[k].begin), 0.0f);
      host[k] = host_buffers[k].data();
    }
  }
  std::map<int, std::vector<const SliceRead*>> by_shard;
  for (const SliceRead& read : reads) by_shard[read.shard].push_back(&read);
  for (const auto& [shard, shard_reads] : by_shard) {
    ShardReader reader(join_path(dir, manifest.shards(shard).file().file()));
    for (const SliceRead* read : shard_reads) {
      const StatePiece& piece = pieces[read->piece];
      reader.read(manifest.shards(shard).tensors(read->tensor), read->within, host[read->piece],
                  piece.end - piece.begin, read->runs);
      bytes_read += static_cast<int64_t>(read->runs.rows * read->runs.cols * sizeof(float));
      progress.update({++boxes_read, bytes_read});
    }
  }
  progress.finish();
  if (!on_cpu) {
    for (size_t k = 0; k < pieces.size(); ++k) backend.copy_from_host(pieces[k].memory, host[k]);
  }
}

}  // namespace

Checkpointer::Checkpointer(Job& job, const DataSources& data, std::string run_dir)
    : job_(job), data_(data), run_dir_(std::move(run_dir)), options_(job.config.checkpoint()) {
  checkpoints_dir_ = checkpoints_dir_of(run_dir_);
  // HDF5 starts up on the main thread: a parallel HDF5 build registers an MPI attribute when it initializes,
  // and the async writer thread must never be the first to call it (Note [Async checkpoints]).
  TS_CHECK(H5open() >= 0, CheckpointError, "cannot initialize the HDF5 library");
  silence_hdf5_errors();
  ProcessGroup& world = *job.groups.world;
  std::string token;
  if (world.rank() == 0) {
    std::random_device entropy;
    token = fmt::format("{:08x}", entropy() ^ static_cast<unsigned>(::getpid()));
  }
  token_ = broadcast_bytes(world, token, 0);
  coord_.tp = job.groups.tp->rank();
  coord_.pp = job.groups.pp->rank();
  coord_.dp = job.groups.dp->rank();

  // Without ZeRO every DP rank holds the moments of all its parameters, laid out like the flat parameter
  // buffer; under ZeRO-1 the segments of its shard, which it alone stores.
  OptimizerStateView optimizer;
  optimizer.exp_avg = job.optimizer->exp_avg();
  optimizer.exp_avg_sq = job.optimizer->exp_avg_sq();
  optimizer.ranges = job.optimizer->state_ranges();
  ReplicaRole role;
  role.dp_rank = job.groups.dp->rank();
  role.optimizer_sharded = job.optimizer->state_sharded_over_dp();
  role.first_pipeline_stage = job.model->stage().has_embedding;
  pieces_ = plan_state_pieces(job.model->params(), optimizer, role);
  writes_ = plan_slice_writes(job.model->params(), pieces_);

  staging_offset_.assign(pieces_.size(), -1);
  for (size_t k = 0; k < pieces_.size(); ++k) {
    if (!pieces_[k].stored) continue;
    staging_offset_[k] = staging_size_;
    staging_size_ += pieces_[k].end - pieces_[k].begin;
  }
  if (options_.async() || job.backend->device() != Device::kCpu) {
    // Touched now, so that the first save does not pay for faulting in its pages.
    staging_.reset(new float[static_cast<size_t>(std::max<int64_t>(staging_size_, 1))]);
    std::memset(staging_.get(), 0, static_cast<size_t>(staging_size_) * sizeof(float));
  }
}

Checkpointer::~Checkpointer() {
  if (pending_ && pending_->writer.joinable()) pending_->writer.join();
  if (cleaner_.joinable()) cleaner_.join();
}

void Checkpointer::crash_during_save(int64_t step, SaveCrashPoint point) {
  crash_step_ = step;
  crash_point_ = point;
}

void Checkpointer::write_shard(Pending& pending, const std::vector<const float*>& host) {
  // The background writer's span goes on a track of its own: it runs while the main thread trains on.
  trace::Span span(options_.async() ? trace::Track::kCheckpointWriter : trace::Track::kCheckpoint, "checkpoint",
                   "write shard");
  if (span.on()) span.arg("checkpoint_step", pending.step);
  const double start = now_s();
  std::vector<ShardWriteItem> items;
  for (const SliceWrite& write : writes_) items.push_back({write.slice, host[write.piece], write.runs});
  const int world_rank = job_.world_rank;
  try {
    TS_CHECK(pending.step != fail_shard_step_ || world_rank != fail_shard_rank_, CheckpointError, "cannot write ",
             shard_file_name(world_rank), ": failure injected by --debug-fail-shard-write");
    if (items.empty()) {
      pending.shard = shard_report('N', 0, "");
    } else {
      const std::string name = shard_file_name(world_rank);
      // A synchronous save shows world rank 0's shard being written (the others write theirs alongside); a
      // background one stays quiet, as training goes on meanwhile.
      ProgressOptions progress_style = progress_options(world_rank == 0 && !options_.async());
      progress_style.summary_when_quick = false;  // publish() prints the summary
      Progress progress("checkpoint save step " + std::to_string(pending.step) + " (rank 0's shard)",
                        {{"tensor boxes", ProgressUnit::kCount, static_cast<int64_t>(items.size())},
                         {"", ProgressUnit::kBytes, -1, true}},
                        progress_style);
      checkpoint::Shard shard = write_shard_file(join_path(pending.tmp_dir, name), name, items, pending.step,
                                                 [&](int64_t written, int64_t bytes) {
                                                   progress.update({written, bytes});
                                                 });
      progress.finish();
      shard.set_world_rank(world_rank);
      shard.set_tp_rank(coord_.tp);
      shard.set_pp_rank(coord_.pp);
      shard.set_dp_rank(coord_.dp);
      pending.shard = shard_report('S', now_s() - start, shard.SerializeAsString());
    }
  } catch (const std::exception& e) {
    pending.shard = shard_report('E', now_s() - start, e.what());
  }
  pending.done = true;
}

void Checkpointer::save(int64_t step) {
  trace::Span span(trace::Track::kCheckpoint, "checkpoint", "checkpoint save");
  if (span.on()) span.name(str_cat("checkpoint save step ", step)).arg("checkpoint_step", step);
  if (pending_) {
    publish(*pending_);
    pending_.reset();
  }
  auto pending = std::make_unique<Pending>();
  pending->step = step;
  pending->optimizer_steps = job_.optimizer->steps_taken();
  pending->tmp_dir = join_path(checkpoints_dir_, step_dir_name(step) + ".tmp-" + token_);
  pending->started_s = now_s();
  std::error_code error;
  fs::create_directories(pending->tmp_dir, error);
  TS_CHECK(!error, CheckpointError, "cannot create checkpoint directory '", pending->tmp_dir, "': ", error.message(),
           ". Check that the run directory is writable (--run-dir).");
  std::vector<const float*> host(pieces_.size(), nullptr);
  for (size_t k = 0; k < pieces_.size(); ++k) {
    if (!pieces_[k].stored) continue;
    if (staging_) {
      float* staged = staging_.get() + staging_offset_[k];
      job_.backend->copy_to_host(staged, pieces_[k].memory);
      host[k] = staged;
    } else {
      host[k] = pieces_[k].memory.f32();
    }
  }
  pending->copy_s = now_s() - pending->started_s;
  if (options_.async()) {
    Pending* writing = pending.get();
    pending->writer = std::thread([this, writing, host] { write_shard(*writing, host); });
    pending_ = std::move(pending);
  } else {
    write_shard(*pending, host);
    pending->write_s = now_s() - pending->started_s - pending->copy_s;
    publish(*pending);
  }
  last_saved_step_ = step;
}

void Checkpointer::publish(Pending& pending) {
  trace::Span span(trace::Track::kCheckpoint, "checkpoint", "checkpoint publish");
  if (span.on()) span.arg("checkpoint_step", pending.step);
  const double enter = now_s();
  if (pending.writer.joinable()) pending.writer.join();
  const double wait_s = now_s() - enter;
  ProcessGroup& world = *job_.groups.world;
  // Every rank learns whether any shard failed (one small all-reduce); only then do the reports, with their
  // error messages, go to every rank. Otherwise the shard metadata goes to rank 0 alone, which writes the manifest.
  std::vector<int32_t> failed = {pending.shard[0] == 'E' ? 1 : 0};
  all_reduce_max(world, failed);
  const std::vector<std::string> reports =
      failed[0] != 0 ? all_gather_bytes(world, pending.shard) : gather_bytes(world, pending.shard, 0);
  const std::string name = step_dir_name(pending.step);
  std::vector<std::string> errors;
  double slowest_write_s = 0;
  for (size_t r = 0; r < reports.size(); ++r) {
    double seconds = 0;
    std::memcpy(&seconds, reports[r].data() + 1, sizeof(seconds));
    slowest_write_s = std::max(slowest_write_s, seconds);
    if (reports[r][0] == 'E') errors.push_back(str_cat("rank ", r, ": ", reports[r].substr(1 + sizeof(seconds))));
  }
  if (failed[0] != 0) {
    if (world.rank() == 0) {
      std::error_code ignored;
      fs::remove_all(pending.tmp_dir, ignored);
    }
    TS_CHECK(false, CheckpointError, "checkpoint ", name, " could not be saved (the previous checkpoint is still the ",
             "latest):", join_lines(errors, "  "));
  }
  if (world.rank() != 0) return;

  checkpoint::Manifest manifest;
  manifest.set_format_version(kManifestFormatVersion);
  manifest.set_step(pending.step);
  manifest.set_consumed_samples(pending.step * job_.config.train().global_batch());
  manifest.set_optimizer_steps(pending.optimizer_steps);
  *manifest.mutable_config() = job_.config;
  checkpoint::Layout* layout = manifest.mutable_layout();
  layout->set_tp(job_.layout.tp);
  layout->set_pp(job_.layout.pp);
  layout->set_dp(job_.layout.dp);
  layout->set_zero_stage(job_.config.parallel().zero_stage());
  layout->set_world_size(world.size());
  *manifest.mutable_model() = model_shape(job_.config.model());
  *manifest.mutable_data() = data_identity(job_.config, data_);
  manifest.set_created_by("tessera train");
  uint64_t bytes = 0;
  for (const std::string& report : reports) {
    if (report[0] != 'S') continue;
    checkpoint::Shard* shard = manifest.add_shards();
    TS_ASSERT(shard->ParseFromString(report.substr(1 + sizeof(double))), "unreadable shard report");
    bytes += shard->file().size_bytes();
  }
  publish_checkpoint(pending.tmp_dir, checkpoints_dir_, manifest,
                     pending.step == crash_step_ ? crash_point_ : SaveCrashPoint::kNone);
  if (cleaner_.joinable()) cleaner_.join();
  const std::vector<std::string> removed = old_checkpoints(checkpoints_dir_, options_.keep_last(), name, token_);
  cleaner_ = std::thread([removed] {
    for (const std::string& path : removed) {
      std::error_code error;
      fs::remove_all(path, error);
      if (error)
        std::fprintf(stderr, "warning: cannot delete old checkpoint '%s': %s\n", path.c_str(), error.message().c_str());
    }
  });
  const double publish_s = now_s() - enter - wait_s;
  // The training loop waited for: the copy to staging, the shard write (synchronous saves) or the rest of the
  // background write, and this publish.
  const double blocked_s = pending.copy_s + pending.write_s + wait_s + publish_s;
  std::printf(
      "checkpoint %s saved%s: %d shard(s), %s; shards written in %.3f s (%s/s), %.3f s to publish; "
      "training blocked %.3f s (copy %.3f, %s %.3f, publish %.3f)%s\n",
      join_path(checkpoints_dir_, name).c_str(), options_.async() ? " in the background" : "", manifest.shards_size(),
      human_bytes(static_cast<double>(bytes)).c_str(), slowest_write_s,
      human_bytes(slowest_write_s > 0 ? static_cast<double>(bytes) / slowest_write_s : 0).c_str(), publish_s, blocked_s,
      pending.copy_s, options_.async() ? "waiting for the writer" : "write",
      options_.async() ? wait_s : pending.write_s, publish_s,
      removed.empty() ? "" : str_cat("; deleting ", removed.size(), " older checkpoint(s)").c_str());
  std::fflush(stdout);
}

bool Checkpointer::after_step(int64_t completed_steps, bool last) {
  std::vector<int32_t> flags = {stop_signal_received(), pending_ && !pending_->done ? 1 : 0};
  all_reduce_max(*job_.groups.world, flags);
  if (flags[0] != 0 && stop_signal_ == 0) stop_signal_ = flags[0];
  if (pending_ && flags[1] == 0) {
    publish(*pending_);
    pending_.reset();
  }
  const bool stopping = stop_signal_ != 0;
  const int every = options_.every_steps();
  const bool due = (every > 0 && completed_steps % every == 0) || (options_.save_on_exit() && (last || stopping));
  if (due && completed_steps != last_saved_step_) save(completed_steps);
  return stopping;
}

void Checkpointer::finish() {
  if (pending_) {
    publish(*pending_);
    pending_.reset();
  }
  if (cleaner_.joinable()) cleaner_.join();
}

std::vector<std::string> Checkpointer::verify(const std::string& dir, checkpoint::Manifest* manifest) {
  return verify_checkpoint(*job_.groups.world, dir, manifest);
}

void Checkpointer::check_compatible(const std::string& dir, const checkpoint::Manifest& manifest,
                                    bool weights_only) const {
  std::vector<std::string> problems, warnings;
  const checkpoint::ModelShape mine = model_shape(job_.config.model());
  const checkpoint::ModelShape& saved = manifest.model();
  auto compare = [&](const char* field, auto saved_value, auto my_value) {
    if (saved_value != my_value) {
      problems.push_back(str_cat(field, ": the checkpoint has ", saved_value, ", this run ", my_value));
    }
  };
  compare("model.arch", saved.arch(), mine.arch());
  compare("model.vocab_size", saved.vocab_size(), mine.vocab_size());
  compare("model.n_layer", saved.n_layer(), mine.n_layer());
  compare("model.n_head", saved.n_head(), mine.n_head());
  compare("model.n_embd", saved.n_embd(), mine.n_embd());
  compare("model.max_seq_len", saved.max_seq_len(), mine.max_seq_len());
  // Fields a checkpoint from before they were recorded lacks: it is a GPT-2 one, with GPT-2's values.
  compare("model.n_kv_head", saved.has_n_kv_head() ? saved.n_kv_head() : saved.n_head(), mine.n_kv_head());
  compare("model.ffn_hidden", saved.has_ffn_hidden() ? saved.ffn_hidden() : 4 * saved.n_embd(), mine.ffn_hidden());
  compare("model.tie_embeddings", saved.has_tie_embeddings() ? saved.tie_embeddings() : true, mine.tie_embeddings());
  if (saved.rope_theta() != mine.rope_theta()) {
    // The tensors fit; only the positions' angles change (as when a context is extended on purpose).
    warnings.push_back(str_cat("model.rope_theta was ", saved.rope_theta(), ", now ", mine.rope_theta()));
  }
  if (manifest.has_data()) {
    const checkpoint::DataIdentity& data = manifest.data();
    const checkpoint::DataIdentity now = data_identity(job_.config, data_);
    if (weights_only) {
      // A new run from these weights: other data, batch and order are the point; another tokenizer is not.
      if (data.tokenizer_xxh64() != 0 && now.tokenizer_xxh64() != 0 &&
          data.tokenizer_xxh64() != now.tokenizer_xxh64()) {
        problems.push_back(str_cat("data.tokenizer: the checkpoint was trained with '", data.tokenizer(),
                                   "', this run uses '", now.tokenizer(), "' (XXH64 ", hex64(data.tokenizer_xxh64()),
                                   " against ", hex64(now.tokenizer_xxh64()),
                                   "): a different tokenizer gives token ids other meanings"));
      }
    } else if (data.global_batch() != now.global_batch()) {
      problems.push_back(str_cat("train.global_batch: the checkpoint has ", data.global_batch(), ", this run ",
                                 now.global_batch(), " (the data position and the learning-rate schedule count ",
                                 "steps of one global batch, so resuming needs the same one)"));
    }
    if (!weights_only && data.seq_len() != now.seq_len()) {
      problems.push_back(str_cat("train.seq_len: the checkpoint has ", data.seq_len(), ", this run ", now.seq_len(),
                                 " (the samples consumed so far would not be the ones skipped)"));
    }
    if (weights_only) {
      // (checked above)
    } else if (data.tokenizer_xxh64() != 0 && now.tokenizer_xxh64() != 0 &&
               data.tokenizer_xxh64() != now.tokenizer_xxh64()) {
      problems.push_back(str_cat("data.tokenizer: the checkpoint was trained with '", data.tokenizer(), "' (XXH64 ",
                                 hex64(data.tokenizer_xxh64()), "), this run uses '", now.tokenizer(), "' (XXH64 ",
                                 hex64(now.tokenizer_xxh64()), "): a different tokenizer gives token ids other ",
                                 "meanings"));
    } else if (data.tokenizer_xxh64() != now.tokenizer_xxh64()) {
      if (data.tokenizer() != now.tokenizer()) {
        warnings.push_back(str_cat("data.tokenizer was '", data.tokenizer(), "', now '", now.tokenizer(),
                                   "' (one of them cannot be checked)"));
      }
    }
    if (!weights_only && (data.mock() != now.mock() || data.train_prefix() != now.train_prefix() ||
                          data.num_tokens() != now.num_tokens())) {
      warnings.push_back(str_cat("the training data differ: the checkpoint saw ",
                                 data.mock() ? "generated tokens" : "'" + data.train_prefix() + "'", " (",
                                 data.num_tokens(), " tokens), this run reads ",
                                 now.mock() ? "generated tokens" : "'" + now.train_prefix() + "'", " (",
                                 now.num_tokens(), " tokens)"));
    }
    if (!weights_only && data.seed() != now.seed()) {
      warnings.push_back(str_cat("train.seed was ", data.seed(), ", now ", now.seed(), ": the data order changes"));
    }
  }
  TS_CHECK(problems.empty(), ConfigError, "cannot ", weights_only ? "load the weights of " : "resume from ", dir,
           ": it was saved by a different ", weights_only ? "model" : "job", ":", join_lines(problems, "  - "),
           weights_only
               ? "\nChange the model config back to match the checkpoint's."
               : "\nChange the config back to match, or start a new run (another --run-dir, without --resume).");
  if (job_.is_logger()) {
    for (const std::string& warning : warnings)
      std::printf("warning: %s %s: %s\n", weights_only ? "loading weights from" : "resuming from", dir.c_str(),
                  warning.c_str());
  }
}

void Checkpointer::load(const std::string& dir, const checkpoint::Manifest& manifest, bool weights_only) {
  // Weights only: the model's pieces; the optimizer's moments stay as they are (zero in a new run).
  std::vector<StatePiece> model_pieces;
  if (weights_only) {
    for (const StatePiece& piece : pieces_)
      if (piece.kind == StateKind::kModel) model_pieces.push_back(piece);
  }
  read_pieces(dir, manifest, job_.model->params(), weights_only ? model_pieces : pieces_, *job_.backend,
              job_.is_logger());
  job_.model->refresh_compute_params();  // checkpoints hold the f32 master weights
  if (!weights_only) job_.optimizer->set_steps_taken(manifest.optimizer_steps());
}

namespace {

// The candidates `spec` names (resume_candidates), decided by world rank 0 so that every rank tries the same ones.
// Collective over world; throws the ConfigError of rank 0 on every rank.
ResumeCandidates world_resume_candidates(ProcessGroup& world, const std::string& spec, const std::string& run_dir,
                                         const std::string& what) {
  std::string listing;
  if (world.rank() == 0) {
    try {
      const ResumeCandidates candidates = resume_candidates(spec, run_dir, what);
      listing = std::string(candidates.may_fall_back ? "F" : "1") + candidates.checkpoints_dir + "\n" +
                candidates.latest_problem + "\n";
      for (const std::string& dir : candidates.dirs) listing += dir + "\n";
    } catch (const ConfigError& e) {
      listing = std::string("E") + e.what();
    }
  }
  listing = broadcast_bytes(world, listing, 0);
  TS_CHECK(listing[0] != 'E', ConfigError, listing.substr(1));
  const std::vector<std::string> lines = split_lines(listing.substr(1));
  TS_ASSERT(lines.size() >= 2, "bad checkpoint listing");
  ResumeCandidates candidates;
  candidates.may_fall_back = listing[0] == 'F';
  candidates.checkpoints_dir = lines[0];
  candidates.latest_problem = lines[1];
  candidates.dirs.assign(lines.begin() + 2, lines.end());
  return candidates;
}

// The newest usable candidate: shards verified over world's ranks, every fallback said on stdout when log.
// An empty dir when there are no candidates (spec "latest" and no checkpoint yet).
CheckpointChoice choose_verified(ProcessGroup& world, const std::string& spec, const std::string& run_dir,
                                 const std::string& what, bool log) {
  const ResumeCandidates candidates = world_resume_candidates(world, spec, run_dir, what);
  if (candidates.dirs.empty()) {
    TS_CHECK(spec == "latest", ConfigError, what, " ", spec, ": no checkpoint in ", candidates.checkpoints_dir);
    CheckpointChoice none;
    none.checkpoints_dir = candidates.checkpoints_dir;
    return none;
  }
  if (log && !candidates.latest_problem.empty()) {
    std::printf("warning: %s\n  using the newest complete checkpoint instead\n", candidates.latest_problem.c_str());
  }
  CheckpointChoice choice = choose_checkpoint(
      candidates,
      [&](const std::string& dir, checkpoint::Manifest* manifest) { return verify_checkpoint(world, dir, manifest); },
      [&](const std::string& dir, const std::vector<std::string>& problems) {
        if (!log) return;
        std::printf("warning: checkpoint %s is not usable:%s\n  falling back to the next newest checkpoint\n",
                    dir.c_str(), join_lines(problems, "    ").c_str());
        std::fflush(stdout);
      });
  choice.fell_back = !choice.rejected.empty() || !candidates.latest_problem.empty();
  choice.checkpoints_dir = candidates.checkpoints_dir;
  if (log) {
    if (choice.manifest.format_version() == kLegacyManifestFormatVersion) {
      std::printf(
          "warning: %s was written in checkpoint format 1, whose manifest has no checksum: damage to it "
          "cannot be detected (the next save writes format %d)\n",
          choice.dir.c_str(), kManifestFormatVersion);
    }
    for (const std::string& problem : auxiliary_file_problems(choice.dir, choice.manifest)) {
      std::printf("warning: %s (only tools read it; training does not need it)\n", problem.c_str());
    }
  }
  return choice;
}

}  // namespace

CheckpointChoice Checkpointer::choose(const std::string& spec, const char* flag) {
  return choose_verified(*job_.groups.world, spec, run_dir_, flag, job_.is_logger());
}

int64_t Checkpointer::resume(const std::string& spec) {
  const double start = now_s();
  const CheckpointChoice choice = choose(spec, "--resume");
  if (choice.dir.empty()) {
    if (job_.is_logger()) {
      std::printf("no checkpoint in %s yet: starting from step 0\n", choice.checkpoints_dir.c_str());
    }
    return 0;
  }
  const std::string& chosen = choice.dir;
  const checkpoint::Manifest& manifest = choice.manifest;
  check_compatible(chosen, manifest, false);
  load(chosen, manifest, false);
  last_saved_step_ = manifest.step();
  resumed_ = true;
  if (job_.is_logger()) {
    const checkpoint::Layout& saved = manifest.layout();
    std::printf(
        "resumed from %s%s: step %lld (%lld samples consumed, %lld optimizer updates), saved in layout "
        "tp=%d pp=%d dp=%d; verified and loaded in %.3f s\n",
        chosen.c_str(), choice.fell_back ? " (the newest complete checkpoint)" : "",
        static_cast<long long>(manifest.step()), static_cast<long long>(manifest.consumed_samples()),
        static_cast<long long>(manifest.optimizer_steps()), saved.tp(), saved.pp(), saved.dp(), now_s() - start);
    std::fflush(stdout);
  }
  return manifest.step();
}

std::string Checkpointer::load_weights(const std::string& spec, const char* flag) {
  const double start = now_s();
  const CheckpointChoice choice = choose(spec, flag);
  TS_CHECK(!choice.dir.empty(), ConfigError, flag, " ", spec, ": no checkpoint in ", choice.checkpoints_dir);
  check_compatible(choice.dir, choice.manifest, true);
  load(choice.dir, choice.manifest, true);
  if (job_.is_logger()) {
    const checkpoint::Layout& saved = choice.manifest.layout();
    std::printf("loaded the weights of %s%s (step %lld, saved in layout tp=%d pp=%d dp=%d) in %.3f s\n",
                choice.dir.c_str(), choice.fell_back ? " (the newest complete checkpoint)" : "",
                static_cast<long long>(choice.manifest.step()), saved.tp(), saved.pp(), saved.dp(), now_s() - start);
    std::fflush(stdout);
  }
  return choice.dir;
}

CheckpointChoice choose_checkpoint_for_inference(const std::string& spec, ProcessGroup& world, bool log,
                                                 const std::string& what) {
  CheckpointChoice choice = choose_verified(world, spec, "", what, log);
  TS_CHECK(!choice.dir.empty(), ConfigError, what, " ", spec, ": no checkpoint in ", choice.checkpoints_dir);
  return choice;
}

void load_model_weights(const std::string& dir, const checkpoint::Manifest& manifest, Model& model, Backend& backend) {
  const std::vector<StatePiece> pieces = plan_state_pieces(model.params(), OptimizerStateView{}, ReplicaRole{});
  read_pieces(dir, manifest, model.params(), pieces, backend, /*show_progress=*/false);
  model.refresh_compute_params();  // checkpoints hold the f32 master weights
}

}  // namespace tessera
