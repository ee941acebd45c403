// MPI backend of ProcessGroup: nonblocking MPI calls and timed waits (Note [Timed waits] in the header).
#include "parallel/mpi_process_group.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <thread>
#include <utility>

#include "core/bf16.h"
#include "core/check.h"
#include "parallel/mpi_check.h"
#include "parallel/peer_processes.h"
#include "parallel/process_group_checks.h"

namespace tessera {

struct MpiProcessGroup::Info {
  std::string name;
  std::vector<int> world_ranks;
  double timeout_s;
};

namespace {

using Clock = std::chrono::steady_clock;

bool mpi_finalized() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return finalized != 0;
}

// " (rank 2/8 on node7)", or "" before the launcher sets the label.
std::string label_suffix() {
  const std::string& label = process_label();
  return label.empty() ? "" : str_cat(" (", label, ")");
}

// bf16 has no MPI datatype: it travels as a committed duplicate of MPI_UINT16_T, and its reductions are
// user-defined operations that widen each pair to f32, combine them and round the result to nearest even (as
// NCCL's bf16 reductions do). Created on first use, after MPI_Init; never freed (MPI_Finalize reclaims them).
MPI_Datatype bf16_type() {
  static const MPI_Datatype type = [] {
    MPI_Datatype t;
    MPI_CHECK(MPI_Type_dup(MPI_UINT16_T, &t));
    MPI_CHECK(MPI_Type_commit(&t));
    return t;
  }();
  return type;
}

template <bool kMax>
void bf16_reduce(void* in, void* inout, int* len, MPI_Datatype* /*type*/) {
  const uint16_t* a = static_cast<const uint16_t*>(in);
  uint16_t* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) {
    const float x = bf16_to_f32(a[i]), y = bf16_to_f32(b[i]);
    b[i] = f32_to_bf16(kMax ? (x > y ? x : y) : x + y);
  }
}

MPI_Op bf16_op(ReduceOp op) {
  static const MPI_Op sum = [] {
    MPI_Op o;
    MPI_CHECK(MPI_Op_create(&bf16_reduce<false>, /*commute=*/1, &o));
    return o;
  }();
  static const MPI_Op max = [] {
    MPI_Op o;
    MPI_CHECK(MPI_Op_create(&bf16_reduce<true>, /*commute=*/1, &o));
    return o;
  }();
  return op == ReduceOp::kSum ? sum : max;
}

MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return MPI_FLOAT;
    case DType::kI32:
      return MPI_INT32_T;
    case DType::kBF16:
      return bf16_type();
  }
  TS_ASSERT(false, "no MPI datatype for ", dtype_name(dtype));
  return MPI_DATATYPE_NULL;
}

MPI_Op mpi_op(ReduceOp op, DType dtype) {
  if (dtype == DType::kBF16) return bf16_op(op);
  return op == ReduceOp::kSum ? MPI_SUM : MPI_MAX;
}

enum class OpKind { kCollective, kSend, kRecv };

// What an operation was, to describe it in an error.
struct Operation {
  const char* name;  // "all_reduce", "send", ...
  OpKind kind = OpKind::kCollective;
  int64_t count = -1;  // elements per rank (the recv/out side); -1: none (barrier)
  DType dtype = DType::kF32;
  int peer_world_rank = -1;  // send/recv: the peer; broadcast: the root; otherwise -1
  int tag = -1;              // send/recv only
};

class MpiWork final : public Work {
 public:
  MpiWork(std::shared_ptr<const MpiProcessGroup::Info> group, Operation operation)
      : group_(std::move(group)), operation_(operation), started_(Clock::now()) {}

  // A work destroyed unfinished (never waited, or left behind when another wait threw) is given until its own
  // deadline, counted from when it started, not a fresh timeout: several operations in flight when a peer
  // stops (DP buckets, pipeline sends) then give up together, and the error reaches the user at the first
  // deadline instead of one timeout per operation.
  ~MpiWork() override {
    if (request_ == MPI_REQUEST_NULL || mpi_finalized()) return;
    try {
      if (timed_out_ ? test() : poll_until(started_ + timeout())) return;
      const std::string waited = timed_out_ ? std::string(" after its wait timed out")
                                            : str_cat(" ", group_->timeout_s, " s after it started");
      std::fprintf(stderr,
                   "tessera: %s was abandoned unfinished%s: a peer rank is missing, stuck or dead, and its buffer "
                   "may still be in use; the job must be aborted%s\n",
                   describe().c_str(), waited.c_str(), label_suffix().c_str());
    } catch (const std::exception& error) {
      std::fprintf(stderr, "tessera: %s was abandoned after an error: %s\n", describe().c_str(), error.what());
    }
    std::fflush(stderr);
  }

  // Where the MPI call writes its request; valid until the first test().
  MPI_Request* request() { return &request_; }

  void wait() override {
    if (request_ == MPI_REQUEST_NULL && error_.empty()) return;
    if (poll_until(Clock::now() + timeout())) return;
    timed_out_ = true;
    throw CommError(str_cat(describe(), " did not complete within ", group_->timeout_s, " s: ", suspect(),
                            peers_seen(), label_suffix()));
  }

  bool test() override {
    if (!error_.empty()) throw CommError(error_);
    if (request_ == MPI_REQUEST_NULL) return true;
    int done = 0;
    MPI_Status status;
    const int code = MPI_Test(&request_, &done, &status);
    if (code != MPI_SUCCESS) {
      // The request is unusable after an error: remember the error instead of testing it again.
      request_ = MPI_REQUEST_NULL;
      error_ = str_cat(describe(), " failed: ", mpi_error_string(code), peers_seen(), label_suffix());
      throw CommError(error_);
    }
    if (done && operation_.kind == OpKind::kRecv) check_received(status);
    return done != 0;
  }

 private:
  Clock::duration timeout() const {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(group_->timeout_s));
  }

  // Polls until the request completes (true) or the deadline passes (false).
  bool poll_until(Clock::time_point deadline) {
    using std::chrono::microseconds;
    const Clock::time_point spin_end = Clock::now() + microseconds(100);
    Clock::duration pause = microseconds(50);
    while (true) {
      if (test()) return true;
      const Clock::time_point now = Clock::now();
      if (now >= deadline) return false;
      if (now < spin_end) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::min(pause, deadline - now));
        pause = std::min<Clock::duration>(pause * 2, std::chrono::milliseconds(1));
      }
    }
  }

  void check_received(const MPI_Status& status) {
    int received = 0;
    MPI_CHECK(MPI_Get_count(&status, mpi_type(operation_.dtype), &received));
    if (received != operation_.count) {
      error_ = str_cat(describe(), " received ", received, " elements instead of ", operation_.count,
                       ": sender and receiver disagree on the message size", label_suffix());
      throw CommError(error_);
    }
  }

  // "all_reduce of 1024 f32 on group 'tp' (world ranks 2,3)"
  std::string describe() const {
    const Operation& op = operation_;
    std::string text = op.name;
    if (op.count >= 0) text += str_cat(" of ", op.count, " ", dtype_name(op.dtype));
    if (op.kind != OpKind::kCollective) {
      text += str_cat(op.kind == OpKind::kSend ? " to" : " from", " world rank ", op.peer_world_rank, " (tag ", op.tag,
                      ")");
    } else if (op.peer_world_rank >= 0) {
      text += str_cat(" from root world rank ", op.peer_world_rank);
    }
    return str_cat(text, " on ", describe_group(group_->name, group_->world_ranks));
  }

  // What this host can see of the peers the operation waits for (Note [Peer diagnosis]).
  std::string peers_seen() const {
    if (operation_.kind != OpKind::kCollective) return peer_report({operation_.peer_world_rank});
    return peer_report(group_->world_ranks);
  }

  std::string suspect() const {
    const Operation& op = operation_;
    if (op.kind == OpKind::kCollective) return "a peer rank is missing, stuck or dead";
    return str_cat("world rank ", op.peer_world_rank, " is missing, stuck or dead, or never posted the matching ",
                   op.kind == OpKind::kSend ? "recv" : "send");
  }

  std::shared_ptr<const MpiProcessGroup::Info> group_;
  Operation operation_;
  MPI_Request request_ = MPI_REQUEST_NULL;
  Clock::time_point started_;
  bool timed_out_ = false;
  std::string error_;  // set once the operation failed; every later wait()/test() throws it
};

int mpi_count(const ProcessGroup& group, const char* op, const Tensor& t) {
  check_comm_tensor(group, op, t);
  TS_ASSERT(t.device() == Device::kCpu, op, " on ", describe_group(group.name(), group.world_ranks()),
            ": the MPI process group takes CPU tensors only");
  TS_ASSERT(t.numel() <= INT_MAX, op, " of ", t.numel(), " elements exceeds MPI's int count");
  return static_cast<int>(t.numel());
}

}  // namespace

MpiProcessGroup::MpiProcessGroup(MPI_Comm comm, std::string name, double timeout_s) : comm_(comm) {
  TS_ASSERT(comm != MPI_COMM_NULL, "process group '", name, "' needs a communicator");
  TS_ASSERT(timeout_s > 0, "process group '", name, "' needs a positive timeout, got ", timeout_s);
  MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  MPI_CHECK(MPI_Comm_size(comm_, &size_));

  // World ranks of the members, for messages: translate 0..size-1 through the groups.
  MPI_Group group = MPI_GROUP_NULL;
  MPI_Group world_group = MPI_GROUP_NULL;
  MPI_CHECK(MPI_Comm_group(comm_, &group));
  MPI_CHECK(MPI_Comm_group(MPI_COMM_WORLD, &world_group));
  std::vector<int> group_ranks(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) group_ranks[static_cast<size_t>(r)] = r;
  std::vector<int> world_ranks(static_cast<size_t>(size_));
  const int translated = MPI_Group_translate_ranks(group, size_, group_ranks.data(), world_group, world_ranks.data());
  MPI_Group_free(&group);
  MPI_Group_free(&world_group);
  MPI_CHECK(translated);

  int* tag_upper_bound = nullptr;
  int has_tag_upper_bound = 0;
  MPI_CHECK(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_upper_bound, &has_tag_upper_bound));
  if (has_tag_upper_bound && tag_upper_bound != nullptr) tag_upper_bound_ = *tag_upper_bound;

  info_ = std::make_shared<const Info>(Info{std::move(name), std::move(world_ranks), timeout_s});
}

MpiProcessGroup::~MpiProcessGroup() {
  if (comm_ == MPI_COMM_WORLD || comm_ == MPI_COMM_SELF || mpi_finalized()) return;
  MPI_Comm_free(&comm_);
}

const std::string& MpiProcessGroup::name() const { return info_->name; }
const std::vector<int>& MpiProcessGroup::world_ranks() const { return info_->world_ranks; }
double MpiProcessGroup::timeout_s() const { return info_->timeout_s; }

WorkHandle MpiProcessGroup::all_reduce(Tensor t, ReduceOp op) {
  const int count = mpi_count(*this, "all_reduce", t);
  auto work = std::make_unique<MpiWork>(info_, Operation{.name = "all_reduce", .count = count, .dtype = t.dtype()});
  MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, t.data(), count, mpi_type(t.dtype()), mpi_op(op, t.dtype()), comm_,
                           work->request()));
  return work;
}

WorkHandle MpiProcessGroup::reduce_scatter(Tensor out, Tensor in, ReduceOp op) {
  check_reduce_scatter_args(*this, out, in);
  mpi_count(*this, "reduce_scatter", in);
  const int count = mpi_count(*this, "reduce_scatter", out);
  auto work =
      std::make_unique<MpiWork>(info_, Operation{.name = "reduce_scatter", .count = count, .dtype = out.dtype()});
  MPI_CHECK(MPI_Ireduce_scatter_block(in.data(), out.data(), count, mpi_type(out.dtype()), mpi_op(op, out.dtype()),
                                      comm_, work->request()));
  return work;
}

WorkHandle MpiProcessGroup::all_gather(Tensor out, Tensor in) {
  check_all_gather_args(*this, out, in);
  mpi_count(*this, "all_gather", out);
  const int count = mpi_count(*this, "all_gather", in);
  const MPI_Datatype type = mpi_type(in.dtype());
  auto work = std::make_unique<MpiWork>(info_, Operation{.name = "all_gather", .count = count, .dtype = in.dtype()});
  MPI_CHECK(MPI_Iallgather(in.data(), count, type, out.data(), count, type, comm_, work->request()));
  return work;
}

WorkHandle MpiProcessGroup::broadcast(Tensor t, int root) {
  check_group_rank(*this, "broadcast", "root", root);
  const int count = mpi_count(*this, "broadcast", t);
  auto work =
      std::make_unique<MpiWork>(info_, Operation{.name = "broadcast",
                                                 .count = count,
                                                 .dtype = t.dtype(),
                                                 .peer_world_rank = info_->world_ranks[static_cast<size_t>(root)]});
  MPI_CHECK(MPI_Ibcast(t.data(), count, mpi_type(t.dtype()), root, comm_, work->request()));
  return work;
}

WorkHandle MpiProcessGroup::send(Tensor t, int peer, int tag) {
  check_group_rank(*this, "send", "peer", peer);
  TS_ASSERT(tag >= 0 && tag <= tag_upper_bound_, "send tag ", tag, " outside 0..", tag_upper_bound_);
  const int count = mpi_count(*this, "send", t);
  auto work =
      std::make_unique<MpiWork>(info_, Operation{.name = "send",
                                                 .kind = OpKind::kSend,
                                                 .count = count,
                                                 .dtype = t.dtype(),
                                                 .peer_world_rank = info_->world_ranks[static_cast<size_t>(peer)],
                                                 .tag = tag});
  MPI_CHECK(MPI_Isend(t.data(), count, mpi_type(t.dtype()), peer, tag, comm_, work->request()));
  return work;
}

WorkHandle MpiProcessGroup::recv(Tensor t, int peer, int tag) {
  check_group_rank(*this, "recv", "peer", peer);
  TS_ASSERT(tag >= 0 && tag <= tag_upper_bound_, "recv tag ", tag, " outside 0..", tag_upper_bound_);
  const int count = mpi_count(*this, "recv", t);
  auto work =
      std::make_unique<MpiWork>(info_, Operation{.name = "recv",
                                                 .kind = OpKind::kRecv,
                                                 .count = count,
                                                 .dtype = t.dtype(),
                                                 .peer_world_rank = info_->world_ranks[static_cast<size_t>(peer)],
                                                 .tag = tag});
  MPI_CHECK(MPI_Irecv(t.data(), count, mpi_type(t.dtype()), peer, tag, comm_, work->request()));
  return work;
}

void MpiProcessGroup::barrier() {
  MpiWork work(info_, Operation{.name = "barrier"});
  MPI_CHECK(MPI_Ibarrier(comm_, work.request()));
  work.wait();
}

}  // namespace tessera
