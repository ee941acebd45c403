// Creating a rank's process groups from the rank grid.
#include "parallel/parallel_groups.h"

#include <mpi.h>

#include <memory>

#include "core/check.h"
#include "parallel/local_process_group.h"
#include "parallel/mpi_check.h"
#include "parallel/mpi_process_group.h"

namespace tessera {

namespace {

// The group of MPI_COMM_WORLD whose members are `members` (in that order): split with the lowest member as
// the color, which names the group uniquely, and the position along the axis as the key.
std::unique_ptr<MpiProcessGroup> split_world(const std::vector<int>& members, int axis_rank, const char* name,
                                             double timeout_s) {
  MPI_Comm comm = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, members.front(), axis_rank, &comm));
  auto group = std::make_unique<MpiProcessGroup>(comm, name, timeout_s);
  TS_ASSERT(group->world_ranks() == members && group->rank() == axis_rank, "MPI_Comm_split built ", name,
            " group with other members than the rank grid");
  return group;
}

}  // namespace

ParallelGroups make_mpi_groups(const RankGrid& grid, int world_rank, double timeout_s) {
  int mpi_rank = 0;
  int mpi_size = 0;
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &mpi_rank));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &mpi_size));
  TS_CHECK(grid.world_size() == mpi_size, ConfigError, "the parallel layout ", grid.to_string(), " needs ",
           grid.world_size(), " ranks but the job has ", mpi_size,
           ": start as many processes as tp*pp*dp, or change parallel.tp/pp/dp");
  TS_ASSERT(world_rank == mpi_rank, "world rank ", world_rank, " given, MPI says ", mpi_rank);

  // MPI_Comm_dup and MPI_Comm_split block without a timeout; first make sure every rank is there.
  MpiProcessGroup(MPI_COMM_WORLD, "world", timeout_s).barrier();

  MPI_Comm world = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &world));
  ParallelGroups groups;
  groups.world = std::make_unique<MpiProcessGroup>(world, "world", timeout_s);
  const GridCoord coord = grid.coord(world_rank);
  groups.tp = split_world(grid.tp_group(world_rank), coord.tp, "tp", timeout_s);
  groups.pp = split_world(grid.pp_group(world_rank), coord.pp, "pp", timeout_s);
  groups.dp = split_world(grid.dp_group(world_rank), coord.dp, "dp", timeout_s);
  return groups;
}

ParallelGroups make_local_groups() {
  ParallelGroups groups;
  groups.world = std::make_unique<LocalProcessGroup>("world");
  groups.tp = std::make_unique<LocalProcessGroup>("tp");
  groups.pp = std::make_unique<LocalProcessGroup>("pp");
  groups.dp = std::make_unique<LocalProcessGroup>("dp");
  return groups;
}

}  // namespace tessera
