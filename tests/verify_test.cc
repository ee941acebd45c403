// `tessera verify` can fail: a fixture whose expected loss was changed, or a run with another learning
// rate, must be reported as FAIL with exit code 1. (The passing runs are CTest tests of their own.)
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <filesystem>
#include <vector>

#include "tests/run_command.h"

namespace {

namespace fs = std::filesystem;
using tessera::testing::run_command;

const std::string kFixture = std::string(TESSERA_TEST_DATA) + "/gpt2-tiny.h5";

// A copy of the fixture with expected/loss[step] multiplied by factor.
std::string fixture_with_changed_loss(int step, double factor) {
  fs::path dir = fs::temp_directory_path() / ("tessera_verify_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::path out = dir / "changed-loss.h5";
  fs::copy_file(kFixture, out, fs::copy_options::overwrite_existing);
  fs::permissions(out, fs::perms::owner_read | fs::perms::owner_write);
  hid_t file = H5Fopen(out.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  EXPECT_GE(file, 0);
  hid_t dataset = H5Dopen2(file, "expected/loss", H5P_DEFAULT);
  std::vector<double> loss(64);
  hid_t space = H5Dget_space(dataset);
  loss.resize(static_cast<size_t>(H5Sget_simple_extent_npoints(space)));
  H5Dread(dataset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, loss.data());
  loss[step] *= factor;
  H5Dwrite(dataset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, loss.data());
  H5Sclose(space);
  H5Dclose(dataset);
  H5Fclose(file);
  return out.string();
}

TEST(Verify, PassesTheUnchangedFixture) {
  auto r = run_command(std::string(TESSERA_BINARY) + " verify --fixture " + kFixture);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("PASS"), std::string::npos) << r.output;
}

TEST(Verify, FailsWhenTheExpectedLossChangesByOnePartInAThousand) {
  std::string changed = fixture_with_changed_loss(3, 1.001);
  auto r = run_command(std::string(TESSERA_BINARY) + " verify --fixture " + changed);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("FAIL"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("over tolerance"), std::string::npos) << r.output;
  fs::remove_all(fs::path(changed).parent_path());
}

TEST(Verify, FailsWithADifferentLearningRate) {
  auto r = run_command(std::string(TESSERA_BINARY) + " verify --fixture " + kFixture + " --set optimizer.lr=0.0011");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("FAIL"), std::string::npos) << r.output;
}

// The bf16 tolerances (Note [bf16 tolerances] in launcher/commands/verify_command.cc) still catch a wrong run: a 1%
// change of one expected loss, and a learning rate 10% off (through the weight-update error).
TEST(VerifyBf16, FailsWhenTheExpectedLossChangesByOnePercent) {
  std::string changed = fixture_with_changed_loss(5, 1.01);
  auto r = run_command(std::string(TESSERA_BINARY) + " verify --fixture " + changed + " --set model.dtype=BF16");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("verify (bf16)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("over tolerance"), std::string::npos) << r.output;
  fs::remove_all(fs::path(changed).parent_path());
}

TEST(VerifyBf16, FailsWithALearningRateTenPercentOff) {
  auto r = run_command(std::string(TESSERA_BINARY) + " verify --fixture " + kFixture +
                       " --set model.dtype=BF16 --set optimizer.lr=0.0011");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("FAIL"), std::string::npos) << r.output;
}

TEST(Verify, MissingFixtureIsAClearError) {
  auto r = run_command(std::string(TESSERA_BINARY) + " verify --fixture /nonexistent/fixture.h5");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/fixture.h5"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("does not exist"), std::string::npos) << r.output;
}

TEST(Verify, NotAFixtureIsAClearError) {
  auto r = run_command(std::string(TESSERA_BINARY) + " verify --fixture " + std::string(TESSERA_TEST_DATA) +
                       "/../CMakeLists.txt");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("not an HDF5 file"), std::string::npos) << r.output;
}

}  // namespace
