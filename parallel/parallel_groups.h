// Building the world/tp/pp/dp process groups of one rank: over MPI for a parallel run, or local (no MPI) for a
// single process.
#pragma once

#include "parallel/process_group.h"
#include "parallel/rank_grid.h"

namespace tessera {

// Collective over MPI_COMM_WORLD: every rank calls it with the same grid and timeout, after MpiEnvironment.
// Throws ConfigError unless the grid has exactly as many ranks as the job. Starts with a barrier bounded by
// timeout_s, so a rank that never arrives becomes a CommError instead of a hang; then duplicates the world
// and splits it by the grid's groups (names "world", "tp", "pp", "dp"; group ranks ordered by the coordinate
// along the axis, as RankGrid lists them). Every later wait on these groups gives up after timeout_s.
ParallelGroups make_mpi_groups(const RankGrid& grid, int world_rank, double timeout_s);

// Four LocalProcessGroups of size 1 ("world", "tp", "pp", "dp"), no MPI involved.
ParallelGroups make_local_groups();

}  // namespace tessera
