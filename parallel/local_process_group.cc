// The single-process ProcessGroup: operations on one rank, done on the spot.
#include "parallel/local_process_group.h"

#include <cstring>
#include <utility>

#include "core/check.h"
#include "parallel/process_group_checks.h"

namespace tessera {

namespace {

class CompletedWork final : public Work {
 public:
  void wait() override {}
  bool test() override { return true; }
};

void copy_tensor(const Tensor& out, const Tensor& in, const char* op) {
  if (out.data() == in.data() || in.bytes() == 0) return;
  TS_ASSERT(out.device() == Device::kCpu && in.device() == Device::kCpu, op,
            " on a local group copies CPU tensors only");
  std::memcpy(out.data(), in.data(), in.bytes());
}

}  // namespace

LocalProcessGroup::LocalProcessGroup(std::string name) : name_(std::move(name)) {}

WorkHandle LocalProcessGroup::all_reduce(Tensor t, ReduceOp) {
  check_comm_tensor(*this, "all_reduce", t);
  return std::make_unique<CompletedWork>();
}

WorkHandle LocalProcessGroup::reduce_scatter(Tensor out, Tensor in, ReduceOp) {
  check_reduce_scatter_args(*this, out, in);
  copy_tensor(out, in, "reduce_scatter");
  return std::make_unique<CompletedWork>();
}

WorkHandle LocalProcessGroup::all_gather(Tensor out, Tensor in) {
  check_all_gather_args(*this, out, in);
  copy_tensor(out, in, "all_gather");
  return std::make_unique<CompletedWork>();
}

WorkHandle LocalProcessGroup::broadcast(Tensor t, int root) {
  check_group_rank(*this, "broadcast", "root", root);
  check_comm_tensor(*this, "broadcast", t);
  return std::make_unique<CompletedWork>();
}

WorkHandle LocalProcessGroup::send(Tensor, int peer, int tag) {
  throw CommError(str_cat("send to rank ", peer, " (tag ", tag, ") on single-process ",
                          describe_group(name_, world_ranks_),
                          ": a group of one rank has no peer; run with more ranks along this axis"));
}

WorkHandle LocalProcessGroup::recv(Tensor, int peer, int tag) {
  throw CommError(str_cat("recv from rank ", peer, " (tag ", tag, ") on single-process ",
                          describe_group(name_, world_ranks_),
                          ": a group of one rank has no peer; run with more ranks along this axis"));
}

}  // namespace tessera
