// NCCL backend of ProcessGroup: stream ordering by events, deferred point-to-point, and the watchdog (see the
// Notes in the header).
#include "parallel/nccl_process_group.h"

#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>
#include <utility>

#include "core/check.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device.h"
#include "parallel/parallel_groups.h"
#include "parallel/process_group_checks.h"

namespace tessera {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kPollInterval = std::chrono::milliseconds(5);
// The longest sleep between two queries of a call still in progress (Note [Non-blocking communicators]): the
// first queries come after microseconds, so a collective that is merely being enqueued waits little.
constexpr auto kMaxSettleSleep = std::chrono::milliseconds(2);

// " (rank 2/8 on node7)", or "" before the launcher sets the label.
std::string label_suffix() {
  const std::string& label = process_label();
  return label.empty() ? "" : str_cat(" (", label, ")");
}

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kI32:
      return ncclInt32;
    case DType::kBF16:
      return ncclBfloat16;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::kSum ? ncclSum : ncclMax; }

// One launched or queued operation, shared by its Work and the watchdog.
struct Pending {
  std::string what;  // "all_reduce of 1024 f32 on group 'tp' (world ranks 2,3)"
  cuda::Event done;  // recorded on the group's stream after the operation
  bool launched = false;
  Clock::time_point launch_time;
};

}  // namespace

struct NcclProcessGroup::Core {
  Core(std::unique_ptr<MpiProcessGroup> host_group, cudaStream_t compute_stream)
      : host(std::move(host_group)), compute(compute_stream) {
    CUDA_CHECK(cudaGetDevice(&device));
    stream = cuda::Stream::create();
    config.blocking = 0;  // Note [Non-blocking communicators]
    config.commName = host->name().c_str();
  }

  ~Core() {
    try {
      flush();
    } catch (const std::exception& error) {
      std::fprintf(stderr, "tessera: %s\n", error.what());
    }
    {
      std::lock_guard<std::mutex> lock(watch_mutex);
      stopping = true;
    }
    watch_cv.notify_all();
    if (watchdog.joinable()) watchdog.join();
    if (comm == nullptr) return;
    // Destroying a communicator with operations in flight would block on them: give them one timeout, then abort.
    const Clock::time_point deadline = Clock::now() + timeout();
    bool finished = false;
    while (!aborted.load() && !(finished = all_watched_done()) && Clock::now() < deadline) {
      std::this_thread::sleep_for(kPollInterval);
    }
    if (aborted.load()) return;
    if (finished) {
      // Non-blocking: finalize may return in progress; give it one timeout too, then abort.
      ncclResult_t state = ncclCommFinalize(comm);
      while (state == ncclInProgress && Clock::now() < deadline) {
        std::this_thread::sleep_for(kPollInterval);
        if (ncclCommGetAsyncError(comm, &state) != ncclSuccess) break;
      }
      if (state == ncclSuccess) {
        ncclCommDestroy(comm);
      } else {
        ncclCommAbort(comm);
      }
    } else {
      std::fprintf(stderr, "tessera: operations on %s were still pending at shutdown; aborting its communicator%s\n",
                   group().c_str(), label_suffix().c_str());
      ncclCommAbort(comm);
    }
  }

  std::chrono::steady_clock::duration timeout() const {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(host->timeout_s()));
  }
  std::string group() const { return describe_group(host->name(), host->world_ranks()); }
  std::string describe(const char* op, const Tensor& t, const std::string& detail = "") const {
    return str_cat(op, " of ", t.numel(), " ", dtype_name(t.dtype()), detail, " on ", group());
  }

  // Throws the group's error, if it has one. `context` says what the caller was doing.
  void check_usable(const std::string& context = "") {
    std::lock_guard<std::mutex> lock(state_mutex);
    if (error.empty()) return;
    throw CommError(context.empty() ? error : str_cat(error, "; seen while ", context));
  }

  // Orders the group's stream after everything issued to the compute stream so far (Note [NCCL stream ordering])
  // and returns the new operation's record.
  std::shared_ptr<Pending> begin(std::string what) {
    check_usable();
    auto pending = std::make_shared<Pending>();
    pending->what = std::move(what);
    pending->done = cuda::Event::create();
    // Destroying the event right after the wait is allowed: the wait keeps what it captured.
    const cuda::Event ready = cuda::Event::create();
    ready.record(compute);
    ready.block(stream.get());
    return pending;
  }

  // Marks pending as launched on the group's stream and hands it to the watchdog.
  void launched(const std::shared_ptr<Pending>& pending) {
    pending->done.record(stream.get());
    pending->launched = true;
    pending->launch_time = Clock::now();
    {
      std::lock_guard<std::mutex> lock(watch_mutex);
      watched.push_back(pending);
    }
    watch_cv.notify_all();
  }

  // Runs NCCL calls on the communicator, unless the watchdog has aborted it. They return at once (the
  // communicator is non-blocking); settle() then waits for what they started.
  template <typename Calls>
  void with_comm(Calls&& calls) {
    std::lock_guard<std::mutex> lock(comm_mutex);
    if (aborted.load()) check_usable();
    TS_ASSERT(!aborted.load(), "NCCL communicator of ", group(), " used after abort");
    calls();
  }

  // Waits until communicator c (this group's, or the parent of a split) has finished the NCCL call that
  // returned `result` (ncclInProgress while it connects to its peers or enqueues), for at most the group's
  // timeout from now (Note [Non-blocking communicators]). An error, or the deadline, fails the group (aborting
  // the communicator) and throws CommError naming `what`, the group, its ranks and this process. The
  // communicator's lock is taken only for each query, so the watchdog can always abort in between.
  void settle(ncclComm_t c, ncclResult_t result, const std::string& what) {
    if (result != ncclSuccess && result != ncclInProgress) {
      const std::string last = ncclGetLastError(c);
      fail(str_cat(what, " failed: ", ncclGetErrorString(result), last.empty() ? "" : str_cat(" (", last, ")")));
      check_usable(what);
    }
    const Clock::time_point deadline = Clock::now() + timeout();
    auto sleep = std::chrono::microseconds(10);
    for (;;) {
      ncclResult_t state = ncclSuccess;
      {
        std::lock_guard<std::mutex> lock(comm_mutex);
        if (aborted.load()) check_usable(what);
        const ncclResult_t query = ncclCommGetAsyncError(c, &state);
        if (query != ncclSuccess) state = query;
      }
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) {
        const std::string last = ncclGetLastError(c);
        fail(str_cat(what, " failed: ", ncclGetErrorString(state), last.empty() ? "" : str_cat(" (", last, ")")));
        check_usable(what);
      }
      if (Clock::now() >= deadline) {
        fail(str_cat(what, " did not get going within ", host->timeout_s(),
                     " s (NCCL was still connecting to its peers or enqueueing it): a peer rank is missing, stuck "
                     "or dead, or issued different operations"));
        check_usable(what);
      }
      std::this_thread::sleep_for(sleep);
      sleep = std::min<std::chrono::microseconds>(sleep * 2, kMaxSettleSleep);
    }
  }

  // Launches the queued point-to-point operations in one NCCL group (Note [Deferred point-to-point]).
  void flush() {
    if (queued.empty()) return;
    std::vector<P2p> batch;
    batch.swap(queued);
    check_usable();
    ncclResult_t result = ncclSuccess;
    with_comm([&] {
      NCCL_CHECK(ncclGroupStart());
      for (const P2p& p : batch) {
        const size_t count = static_cast<size_t>(p.tensor.numel());
        const ncclDataType_t type = nccl_type(p.tensor.dtype());
        const ncclResult_t r = p.send ? ncclSend(p.tensor.data(), count, type, p.peer, comm, stream.get())
                                      : ncclRecv(p.tensor.data(), count, type, p.peer, comm, stream.get());
        if (result == ncclSuccess || result == ncclInProgress) result = r;
      }
      const ncclResult_t end = ncclGroupEnd();
      if (result == ncclSuccess || result == ncclInProgress) result = end;
    });
    settle(comm, result,
           batch.size() == 1
               ? batch.front().pending->what
               : str_cat(batch.size(), " sends and receives starting with ", batch.front().pending->what));
    for (const P2p& p : batch) launched(p.pending);
  }

  // Records the first failure, reports it and aborts the communicator (Note [NCCL timeouts]). Any thread.
  void fail(const std::string& message) {
    {
      std::lock_guard<std::mutex> lock(state_mutex);
      if (!error.empty()) return;
      error = message + label_suffix();
    }
    std::fprintf(stderr, "tessera: %s%s; aborting the NCCL communicator of %s\n", message.c_str(),
                 label_suffix().c_str(), group().c_str());
    std::fflush(stderr);
    abort_comm();
  }

  // Only with the communicator's lock: the main thread holds it for a non-blocking call or one state query at
  // a time, never while waiting (Note [Non-blocking communicators]).
  void abort_comm() {
    std::lock_guard<std::mutex> lock(comm_mutex);
    if (comm == nullptr || aborted.exchange(true)) return;
    ncclCommAbort(comm);
  }

  bool all_watched_done() {
    std::lock_guard<std::mutex> lock(watch_mutex);
    return std::all_of(watched.begin(), watched.end(), [](const std::shared_ptr<Pending>& p) {
      return cudaEventQuery(p->done.get()) != cudaErrorNotReady;
    });
  }

  void start_watchdog() {
    watchdog = std::thread([this] { watch(); });
  }

  void watch() {
    if (cudaSetDevice(device) != cudaSuccess) return;  // the main thread will report the device error
    std::unique_lock<std::mutex> lock(watch_mutex);
    while (!stopping) {
      if (watched.empty()) {
        watch_cv.wait(lock, [this] { return stopping || !watched.empty(); });
        continue;
      }
      lock.unlock();
      std::this_thread::sleep_for(kPollInterval);
      poll();
      lock.lock();
    }
  }

  void poll() {
    if (aborted.load()) {
      std::lock_guard<std::mutex> lock(watch_mutex);
      watched.clear();
      return;
    }
    // The communicator is read under comm_mutex, so that an abort from the main thread cannot free it in between.
    // When the main thread holds the lock (it is issuing NCCL calls), the error query waits for the next poll;
    // the timeouts below are checked either way.
    ncclResult_t async = ncclSuccess;
    std::string last_error;
    {
      std::unique_lock<std::mutex> lock(comm_mutex, std::try_to_lock);
      if (lock.owns_lock() && !aborted.load() && ncclCommGetAsyncError(comm, &async) == ncclSuccess &&
          async != ncclSuccess && async != ncclInProgress) {
        last_error = ncclGetLastError(comm);
      } else {
        async = ncclSuccess;
      }
    }
    if (async != ncclSuccess) {
      fail(str_cat("NCCL reported an asynchronous error on ", group(), ": ", ncclGetErrorString(async), " (",
                   last_error, ")"));
      return;
    }
    std::vector<std::shared_ptr<Pending>> snapshot;
    {
      std::lock_guard<std::mutex> lock(watch_mutex);
      snapshot = watched;
    }
    const Clock::time_point now = Clock::now();
    std::vector<Pending*> finished;
    for (const std::shared_ptr<Pending>& p : snapshot) {
      const cudaError_t status = cudaEventQuery(p->done.get());
      if (status == cudaSuccess) {
        finished.push_back(p.get());
      } else if (status != cudaErrorNotReady) {
        fail(str_cat(p->what, " failed on the GPU: ", cudaGetErrorString(status)));
        return;
      } else if (now - p->launch_time > timeout()) {
        fail(str_cat(p->what, " did not complete within ", host->timeout_s(),
                     " s: a peer rank is missing, stuck or dead, or issued different operations"));
        return;
      }
    }
    std::lock_guard<std::mutex> lock(watch_mutex);
    std::erase_if(watched, [&](const std::shared_ptr<Pending>& p) {
      return std::find(finished.begin(), finished.end(), p.get()) != finished.end();
    });
  }

  struct P2p {
    bool send;
    Tensor tensor;
    int peer;
    std::shared_ptr<Pending> pending;
  };

  std::unique_ptr<MpiProcessGroup> host;  // the same members over MPI: host tensors, barriers, the unique id
  cudaStream_t compute;
  int device = 0;
  cuda::Stream stream;  // the group's communication stream
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  ncclComm_t comm = nullptr;
  std::vector<P2p> queued;  // main thread only

  std::mutex state_mutex;
  std::string error;  // the first failure; non-empty means unusable
  std::atomic<bool> aborted{false};
  std::mutex comm_mutex;  // the main thread's NCCL calls and state queries vs. the watchdog's abort

  std::mutex watch_mutex;
  std::condition_variable watch_cv;
  std::vector<std::shared_ptr<Pending>> watched;  // launched, not yet seen complete
  bool stopping = false;
  std::thread watchdog;
};

namespace {

class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<NcclProcessGroup::Core> core, std::shared_ptr<Pending> pending)
      : core_(std::move(core)), pending_(std::move(pending)) {}

  // Orders the compute stream after the operation even if nobody waited (so that memory the operation uses is
  // not reused under it, Note [Stream-ordered reuse] in kernels/cuda/caching_allocator.h).
  ~NcclWork() override {
    if (waited_) return;
    try {
      if (!pending_->launched) core_->flush();
      if (pending_->launched) pending_->done.block(core_->compute);
    } catch (const std::exception& error) {
      std::fprintf(stderr, "tessera: %s was abandoned after an error: %s\n", pending_->what.c_str(), error.what());
    }
  }

  void wait() override {
    if (!pending_->launched) core_->flush();
    core_->check_usable(str_cat("waiting for ", pending_->what));
    pending_->done.block(core_->compute);
    waited_ = true;
  }

  bool test() override {
    if (!pending_->launched) core_->flush();
    core_->check_usable(str_cat("testing ", pending_->what));
    return pending_->done.query();
  }

 private:
  std::shared_ptr<NcclProcessGroup::Core> core_;
  std::shared_ptr<Pending> pending_;
  bool waited_ = false;
};

void check_gpu_tensor(const ProcessGroup& group, const char* op, const Tensor& t) {
  TS_ASSERT(t.device() == Device::kCuda, op, " on ", describe_group(group.name(), group.world_ranks()), ": a ",
            t.shape_string(), " host tensor among GPU tensors");
}

std::unique_ptr<MpiProcessGroup> as_mpi_group(std::unique_ptr<ProcessGroup> group) {
  auto* mpi = dynamic_cast<MpiProcessGroup*>(group.get());
  TS_ASSERT(mpi != nullptr, "make_mpi_groups returned a group that is not an MpiProcessGroup");
  group.release();
  return std::unique_ptr<MpiProcessGroup>(mpi);
}

}  // namespace

NcclProcessGroup::NcclProcessGroup(std::shared_ptr<Core> core) : core_(std::move(core)) {}

NcclProcessGroup::~NcclProcessGroup() = default;

std::unique_ptr<NcclProcessGroup> NcclProcessGroup::create(std::unique_ptr<MpiProcessGroup> host_group,
                                                           cudaStream_t compute_stream) {
  auto core = std::make_shared<Core>(std::move(host_group), compute_stream);
  ncclUniqueId id{};
  static_assert(sizeof(id) % sizeof(int32_t) == 0);
  if (core->host->rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
  core->host->broadcast(Tensor(&id, DType::kI32, Device::kCpu, {sizeof(id) / sizeof(int32_t)}), 0)->wait();
  // Non-blocking: the call returns while NCCL connects, and settle() gives it the group's timeout.
  const ncclResult_t result =
      ncclCommInitRankConfig(&core->comm, core->host->size(), id, core->host->rank(), &core->config);
  TS_CHECK(core->comm != nullptr || result == ncclSuccess || result == ncclInProgress, CommError,
           "creating the NCCL communicator of ", core->group(), " failed: ", ncclGetErrorString(result),
           label_suffix());
  core->settle(core->comm, result, "creating the NCCL communicator");
  core->start_watchdog();
  return std::unique_ptr<NcclProcessGroup>(new NcclProcessGroup(std::move(core)));
}

std::unique_ptr<NcclProcessGroup> NcclProcessGroup::split(NcclProcessGroup& parent, int color,
                                                          std::unique_ptr<MpiProcessGroup> host_group,
                                                          cudaStream_t compute_stream) {
  auto core = std::make_shared<Core>(std::move(host_group), compute_stream);
  Core& from = *parent.core_;
  from.flush();
  from.check_usable(str_cat("splitting ", core->group(), " from it"));
  ncclResult_t result = ncclSuccess;
  from.with_comm([&] { result = ncclCommSplit(from.comm, color, core->host->rank(), &core->comm, &core->config); });
  // Both the parent and the new communicator may still be in progress (non-blocking).
  from.settle(from.comm, result, str_cat("splitting ", core->group(), " from it"));
  TS_CHECK(core->comm != nullptr, CommError, "ncclCommSplit made no communicator for ", core->group(), label_suffix());
  core->settle(core->comm, ncclSuccess, "creating the NCCL communicator (split)");
  int rank = -1, count = -1;
  NCCL_CHECK(ncclCommUserRank(core->comm, &rank));
  NCCL_CHECK(ncclCommCount(core->comm, &count));
  TS_ASSERT(rank == core->host->rank() && count == core->host->size(), "ncclCommSplit built ", core->group(),
            " with rank ", rank, " of ", count, ", MPI says ", core->host->rank(), " of ", core->host->size());
  core->start_watchdog();
  return std::unique_ptr<NcclProcessGroup>(new NcclProcessGroup(std::move(core)));
}

int NcclProcessGroup::rank() const { return core_->host->rank(); }
int NcclProcessGroup::size() const { return core_->host->size(); }
const std::string& NcclProcessGroup::name() const { return core_->host->name(); }
const std::vector<int>& NcclProcessGroup::world_ranks() const { return core_->host->world_ranks(); }

WorkHandle NcclProcessGroup::all_reduce(Tensor t, ReduceOp op) {
  check_comm_tensor(*this, "all_reduce", t);
  if (t.device() == Device::kCpu) return core_->host->all_reduce(t, op);
  core_->flush();
  auto pending = core_->begin(core_->describe("all_reduce", t));
  ncclResult_t result = ncclSuccess;
  core_->with_comm([&] {
    result = ncclAllReduce(t.data(), t.data(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()), nccl_op(op),
                           core_->comm, core_->stream.get());
  });
  core_->settle(core_->comm, result, pending->what);
  core_->launched(pending);
  return std::make_unique<NcclWork>(core_, pending);
}

WorkHandle NcclProcessGroup::reduce_scatter(Tensor out, Tensor in, ReduceOp op) {
  check_reduce_scatter_args(*this, out, in);
  if (in.device() == Device::kCpu && out.device() == Device::kCpu) return core_->host->reduce_scatter(out, in, op);
  check_gpu_tensor(*this, "reduce_scatter", in);
  check_gpu_tensor(*this, "reduce_scatter", out);
  core_->flush();
  auto pending = core_->begin(core_->describe("reduce_scatter", out));
  ncclResult_t result = ncclSuccess;
  core_->with_comm([&] {
    result = ncclReduceScatter(in.data(), out.data(), static_cast<size_t>(out.numel()), nccl_type(out.dtype()),
                               nccl_op(op), core_->comm, core_->stream.get());
  });
  core_->settle(core_->comm, result, pending->what);
  core_->launched(pending);
  return std::make_unique<NcclWork>(core_, pending);
}

WorkHandle NcclProcessGroup::all_gather(Tensor out, Tensor in) {
  check_all_gather_args(*this, out, in);
  if (in.device() == Device::kCpu && out.device() == Device::kCpu) return core_->host->all_gather(out, in);
  check_gpu_tensor(*this, "all_gather", in);
  check_gpu_tensor(*this, "all_gather", out);
  core_->flush();
  auto pending = core_->begin(core_->describe("all_gather", in));
  ncclResult_t result = ncclSuccess;
  core_->with_comm([&] {
    result = ncclAllGather(in.data(), out.data(), static_cast<size_t>(in.numel()), nccl_type(in.dtype()), core_->comm,
                           core_->stream.get());
  });
  core_->settle(core_->comm, result, pending->what);
  core_->launched(pending);
  return std::make_unique<NcclWork>(core_, pending);
}

WorkHandle NcclProcessGroup::broadcast(Tensor t, int root) {
  check_group_rank(*this, "broadcast", "root", root);
  check_comm_tensor(*this, "broadcast", t);
  if (t.device() == Device::kCpu) return core_->host->broadcast(t, root);
  core_->flush();
  auto pending = core_->begin(
      core_->describe("broadcast", t, str_cat(" from root world rank ", world_ranks()[static_cast<size_t>(root)])));
  ncclResult_t result = ncclSuccess;
  core_->with_comm([&] {
    result = ncclBroadcast(t.data(), t.data(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()), root, core_->comm,
                           core_->stream.get());
  });
  core_->settle(core_->comm, result, pending->what);
  core_->launched(pending);
  return std::make_unique<NcclWork>(core_, pending);
}

WorkHandle NcclProcessGroup::send(Tensor t, int peer, int tag) {
  check_group_rank(*this, "send", "peer", peer);
  check_comm_tensor(*this, "send", t);
  if (t.device() == Device::kCpu) return core_->host->send(t, peer, tag);
  auto pending = core_->begin(core_->describe(
      "send", t, str_cat(" to world rank ", world_ranks()[static_cast<size_t>(peer)], " (tag ", tag, ")")));
  core_->queued.push_back({true, t, peer, pending});
  return std::make_unique<NcclWork>(core_, pending);
}

WorkHandle NcclProcessGroup::recv(Tensor t, int peer, int tag) {
  check_group_rank(*this, "recv", "peer", peer);
  check_comm_tensor(*this, "recv", t);
  if (t.device() == Device::kCpu) return core_->host->recv(t, peer, tag);
  auto pending = core_->begin(core_->describe(
      "recv", t, str_cat(" from world rank ", world_ranks()[static_cast<size_t>(peer)], " (tag ", tag, ")")));
  core_->queued.push_back({false, t, peer, pending});
  return std::make_unique<NcclWork>(core_, pending);
}

void NcclProcessGroup::barrier() {
  core_->flush();
  core_->check_usable("entering a barrier");
  core_->host->barrier();
}

void NcclProcessGroup::flush() { core_->flush(); }

void NcclProcessGroup::abort() {
  {
    std::lock_guard<std::mutex> lock(core_->state_mutex);
    if (core_->error.empty()) core_->error = str_cat(core_->group(), " was aborted", label_suffix());
  }
  core_->abort_comm();
}

ParallelGroups make_nccl_groups(const RankGrid& grid, int world_rank, double timeout_s, cudaStream_t compute_stream) {
  ParallelGroups host = make_mpi_groups(grid, world_rank, timeout_s);
  ParallelGroups groups;
  auto world = NcclProcessGroup::create(as_mpi_group(std::move(host.world)), compute_stream);
  // The lowest world rank of a group names it uniquely: the color of the split, as in make_mpi_groups.
  groups.tp = NcclProcessGroup::split(*world, grid.tp_group(world_rank).front(), as_mpi_group(std::move(host.tp)),
                                      compute_stream);
  groups.pp = NcclProcessGroup::split(*world, grid.pp_group(world_rank).front(), as_mpi_group(std::move(host.pp)),
                                      compute_stream);
  groups.dp = NcclProcessGroup::split(*world, grid.dp_group(world_rank).front(), as_mpi_group(std::move(host.dp)),
                                      compute_stream);
  groups.world = std::move(world);
  return groups;
}

}  // namespace tessera
