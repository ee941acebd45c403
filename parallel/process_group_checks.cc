// Argument checks and message pieces shared by the ProcessGroup implementations.
#include "parallel/process_group_checks.h"

#include "core/check.h"

namespace tessera {

namespace {

std::string format_world_ranks(const std::vector<int>& ranks) {
  if (ranks.empty()) return "none";
  bool contiguous = true;
  for (size_t i = 1; i < ranks.size(); ++i) contiguous = contiguous && ranks[i] == ranks[i - 1] + 1;
  if (contiguous && ranks.size() > 2) return str_cat(ranks.front(), "-", ranks.back());
  constexpr size_t kMaxListed = 16;
  std::string text;
  for (size_t i = 0; i < ranks.size() && i < kMaxListed; ++i) text += (i ? "," : "") + std::to_string(ranks[i]);
  if (ranks.size() > kMaxListed) text += str_cat(",... (", ranks.size(), " ranks)");
  return text;
}

}  // namespace

std::string describe_group(const std::string& name, const std::vector<int>& world_ranks) {
  return str_cat("group '", name, "' (world ", world_ranks.size() == 1 ? "rank " : "ranks ",
                 format_world_ranks(world_ranks), ")");
}

void check_comm_tensor(const ProcessGroup& group, const char* op, const Tensor& t) {
  TS_ASSERT(t.dtype() == DType::kF32 || t.dtype() == DType::kBF16 || t.dtype() == DType::kI32, op, " on ",
            describe_group(group.name(), group.world_ranks()), ": dtype ", dtype_name(t.dtype()),
            " is not supported (f32, bf16 or i32)");
  TS_ASSERT(t.defined() || t.numel() == 0, op, " on ", describe_group(group.name(), group.world_ranks()),
            ": tensor has no memory");
}

void check_reduce_scatter_args(const ProcessGroup& group, const Tensor& out, const Tensor& in) {
  check_comm_tensor(group, "reduce_scatter", out);
  check_comm_tensor(group, "reduce_scatter", in);
  TS_ASSERT(in.dtype() == out.dtype() && in.numel() == out.numel() * group.size(), "reduce_scatter on ",
            describe_group(group.name(), group.world_ranks()), ": in ", dtype_name(in.dtype()), in.shape_string(),
            " must hold ", group.size(), " chunks of out ", dtype_name(out.dtype()), out.shape_string());
}

void check_all_gather_args(const ProcessGroup& group, const Tensor& out, const Tensor& in) {
  check_comm_tensor(group, "all_gather", out);
  check_comm_tensor(group, "all_gather", in);
  TS_ASSERT(in.dtype() == out.dtype() && out.numel() == in.numel() * group.size(), "all_gather on ",
            describe_group(group.name(), group.world_ranks()), ": out ", dtype_name(out.dtype()), out.shape_string(),
            " must hold ", group.size(), " chunks of in ", dtype_name(in.dtype()), in.shape_string());
}

void check_group_rank(const ProcessGroup& group, const char* op, const char* role, int group_rank) {
  TS_ASSERT(group_rank >= 0 && group_rank < group.size(), op, " on ", describe_group(group.name(), group.world_ranks()),
            ": ", role, " ", group_rank, " is not a rank of this group (0..", group.size() - 1, ")");
}

}  // namespace tessera
