// The choice of transport (parallel.comm) for a rank, and the config rule that ties it to train.device. Pure
// functions: no GPU, no MPI.
#include "launcher/run/device_setup.h"

#include <gtest/gtest.h>

#include <string>

#include "core/check.h"
#include "launcher/common/config.h"

namespace tessera {
namespace {

config::JobConfig job(config::DeviceType device, config::Comm comm) {
  config::JobConfig j;
  j.mutable_train()->set_device(device);
  j.mutable_parallel()->set_comm(comm);
  return j;
}

DeviceSupport support(bool nccl, int gpus) { return DeviceSupport{.cuda = true, .nccl = nccl, .gpus = gpus}; }

std::string choose_error(const config::JobConfig& j, const DeviceSupport& s, int local_size) {
  try {
    choose_comm(j, s, local_size);
  } catch (const ConfigError& error) {
    return error.what();
  }
  return "(no error)";
}

TEST(ChooseComm, AutoTakesNcclOnlyWithAGpuPerRankAndNccl) {
  EXPECT_EQ(choose_comm(job(config::CUDA, config::AUTO), support(true, 8), 8), config::NCCL);
  EXPECT_EQ(choose_comm(job(config::CUDA, config::AUTO), support(true, 1), 1), config::NCCL);
  // Ranks sharing a GPU, no NCCL in the build, or the CPU: MPI.
  EXPECT_EQ(choose_comm(job(config::CUDA, config::AUTO), support(true, 1), 8), config::MPI);
  EXPECT_EQ(choose_comm(job(config::CUDA, config::AUTO), support(false, 8), 8), config::MPI);
  EXPECT_EQ(choose_comm(job(config::CPU, config::AUTO), support(true, 8), 8), config::MPI);
}

TEST(ChooseComm, MpiIsAlwaysPossible) {
  EXPECT_EQ(choose_comm(job(config::CUDA, config::MPI), support(true, 8), 1), config::MPI);
  EXPECT_EQ(choose_comm(job(config::CPU, config::MPI), DeviceSupport{}, 4), config::MPI);
}

TEST(ChooseComm, NcclWhereItCannotWorkSaysWhy) {
  EXPECT_EQ(choose_comm(job(config::CUDA, config::NCCL), support(true, 2), 2), config::NCCL);
  EXPECT_NE(choose_error(job(config::CUDA, config::NCCL), support(true, 1), 8)
                .find("this host runs 8 ranks on 1 GPU(s) and NCCL refuses two ranks on one GPU"),
            std::string::npos);
  EXPECT_NE(choose_error(job(config::CUDA, config::NCCL), support(false, 8), 1).find("has no NCCL"), std::string::npos);
  EXPECT_NE(choose_error(job(config::CPU, config::NCCL), support(true, 8), 1).find("needs train.device=CUDA"),
            std::string::npos);
}

TEST(DeviceConfig, NcclOnTheCpuIsAConfigError) {
  try {
    load_job_config(TESSERA_SOURCE_DIR "/configs/tiny.textproto", {"parallel.comm=NCCL"});
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& error) {
    EXPECT_NE(std::string(error.what()).find("parallel.comm=NCCL needs GPU tensors: set train.device=CUDA"),
              std::string::npos)
        << error.what();
  }
  EXPECT_NO_THROW(
      load_job_config(TESSERA_SOURCE_DIR "/configs/tiny.textproto", {"parallel.comm=NCCL", "train.device=CUDA"}));
}

TEST(DeviceConfig, DeviceAndCommParseCaseInsensitively) {
  config::JobConfig j;
  apply_override(j, "train.device=cuda");
  apply_override(j, "parallel.comm=mpi");
  EXPECT_EQ(j.train().device(), config::CUDA);
  EXPECT_EQ(j.parallel().comm(), config::MPI);
}

TEST(DeviceSupport, ReportsThisBuild) {
  const DeviceSupport s = device_support();
#if TESSERA_HAS_CUDA
  EXPECT_TRUE(s.cuda);
#else
  EXPECT_FALSE(s.cuda);
  EXPECT_EQ(s.gpus, 0);
#endif
  EXPECT_GE(s.gpus, 0);
}

}  // namespace
}  // namespace tessera
