// Argument checks and message pieces shared by the ProcessGroup implementations (MPI, local, later NCCL).
//
// A bad argument to a ProcessGroup (a bf16 tensor, chunk sizes that do not add up, a peer outside the group)
// is a bug in the calling Tessera code, not something a user can fix, so the checks throw InternalError
// (TS_ASSERT) naming the operation and the group.
#pragma once

#include <string>
#include <vector>

#include "core/tensor.h"
#include "parallel/process_group.h"

namespace tessera {

// "group 'tp' (world ranks 2,3)"; long lists are shortened ("world ranks 0-63", "world ranks 0,2,4,...").
std::string describe_group(const std::string& name, const std::vector<int>& world_ranks);

// t is f32 or i32, and has memory unless it is empty.
void check_comm_tensor(const ProcessGroup& group, const char* op, const Tensor& t);
// in holds group.size() chunks of out's size, same dtype.
void check_reduce_scatter_args(const ProcessGroup& group, const Tensor& out, const Tensor& in);
// out holds group.size() chunks of in's size, same dtype.
void check_all_gather_args(const ProcessGroup& group, const Tensor& out, const Tensor& in);
// 0 <= group_rank < group.size(); `role` is "root" or "peer" for the message.
void check_group_rank(const ProcessGroup& group, const char* op, const char* role, int group_rank);

}  // namespace tessera
