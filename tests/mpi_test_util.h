// Helpers for the multi-rank test binaries (run under mpirun with tests/mpi_test_main.cc).
#pragma once

#include <mpi.h>

namespace tessera::mpi_test {

inline int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

inline int world_size() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

}  // namespace tessera::mpi_test
