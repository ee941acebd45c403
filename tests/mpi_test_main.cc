// main() for multi-rank GoogleTest binaries: sets up MPI, runs every test on every rank, all-reduces the
// failure count so all ranks exit alike, and prints the results from rank 0 only (other ranks print just
// their failures, prefixed with their rank).
//
// Every rank must run the same tests in the same order: pass the same --gtest_filter to all of them.
#include <gtest/gtest.h>

#include <cstdio>
#include <exception>
#include <string>

#include "cluster/process_env.h"
#include "core/check.h"
#include "parallel/mpi_environment.h"
#include "parallel/mpi_process_group.h"

namespace {

// Failures seen on a rank other than 0, which has no result printer.
class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  // UnitTest::current_test_info() would deadlock inside OnTestPartResult (gtest holds its own lock there), so
  // the name is kept from OnTestStart.
  void OnTestStart(const ::testing::TestInfo& test) override {
    test_name_ = std::string(test.test_suite_name()) + "." + test.name();
  }
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[%s] %s failed at %s:%d\n%s\n", tessera::process_label().c_str(), test_name_.c_str(),
                 result.file_name() ? result.file_name() : "?", result.line_number(), result.summary());
  }

 private:
  std::string test_name_ = "(outside a test)";
};

}  // namespace

int main(int argc, char** argv) {
  tessera::MpiEnvironment mpi(&argc, &argv);
  tessera::ProcessEnv env = tessera::read_process_env();
  env.world_rank = mpi.world_rank();
  env.world_size = mpi.world_size();
  tessera::set_process_label(env.label());

  ::testing::InitGoogleTest(&argc, argv);
  if (mpi.world_rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter);
  }
  const int32_t failed_here = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int32_t failed = failed_here;
  std::fflush(stdout);

  // A rank that failed may have left requests pending (a timed-out wait), and MPI_Finalize could then block:
  // abort instead. The count itself is a timed collective, so a rank lost in a test cannot hang the others.
  try {
    // Not a duplicate of the world: MPI_Comm_dup blocks without a timeout.
    tessera::MpiProcessGroup group(MPI_COMM_WORLD, "world", 60.0);
    group
        .all_reduce(tessera::Tensor(&failed, tessera::DType::kI32, tessera::Device::kCpu, {1}), tessera::ReduceOp::kMax)
        ->wait();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "[%s] counting failures: %s\n", tessera::process_label().c_str(), error.what());
    failed = 1;
  }
  if (failed != 0) {
    if (mpi.world_rank() == 0 && !failed_here) std::printf("[  FAILED  ] on other ranks: see their messages\n");
    std::fflush(stdout);
    std::fflush(stderr);
    mpi.abort(1);
  }
  return 0;
}
