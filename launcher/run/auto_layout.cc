// parallel.layout=auto: the planner's choice, made alike on every rank.
#include "launcher/run/auto_layout.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>

#include "core/check.h"
#include "launcher/common/config.h"
#include "launcher/common/human_format.h"
#include "launcher/run/device_setup.h"
#include "launcher/run/process_memory.h"
#include "parallel/mpi_process_group.h"

namespace tessera {

namespace {

std::string upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::toupper(c); });
  return s;
}

config::Recompute recompute_proto(Recompute recompute) {
  switch (recompute) {
    case Recompute::kSelective:
      return config::SELECTIVE;
    case Recompute::kFull:
      return config::FULL;
    case Recompute::kNone:
      break;
  }
  return config::NONE;
}

// The element-wise maximum of `values` over every rank (a timed all-reduce over MPI_COMM_WORLD).
std::vector<int32_t> job_maximum(std::vector<int32_t> values, double timeout_s) {
  MpiProcessGroup world(MPI_COMM_WORLD, "world", timeout_s);
  world
      .all_reduce(Tensor(values.data(), DType::kI32, Device::kCpu, {static_cast<int64_t>(values.size())}),
                  ReduceOp::kMax)
      ->wait();
  return values;
}

}  // namespace

DeviceSpec auto_layout_device(const config::JobConfig& job, int world_size, double memory_gb, double process_bytes,
                              const std::string& gpu_name, std::string* notice) {
  if (notice != nullptr) notice->clear();
  if (job.train().device() == config::CPU) {
    return cpu_device(kAutoLayoutCpuGflops, memory_gb, world_size, process_bytes);
  }
  // The planner's GPUs by the marks in the driver's names: "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB",
  // "NVIDIA H200". An H100 PCIe or an A100 40GB would be planned with the wrong numbers, so they are not matched.
  const std::string name = upper(gpu_name);
  const bool sxm_h100 = name.find("H100") != std::string::npos &&
                        (name.find("HBM3") != std::string::npos || name.find("SXM") != std::string::npos);
  const bool a100_80 = name.find("A100") != std::string::npos && name.find("80G") != std::string::npos;
  if (name.find("H200") != std::string::npos) return planner_device("H200");
  if (sxm_h100) return planner_device("H100-SXM");
  if (a100_80) return planner_device("A100-80GB");
  if (notice != nullptr) {
    *notice = str_cat("parallel.layout=auto: the planner does not know the GPU '",
                      gpu_name.empty() ? std::string("(none visible)") : gpu_name,
                      "', so it plans for an H100-SXM (80 GB); set the layout explicitly if that does not fit");
  }
  return planner_device("H100-SXM");
}

AutoLayout choose_auto_layout(const config::JobConfig& job, int world_size, const DeviceSpec& device) {
  TS_ASSERT(job.parallel().has_layout(), "choose_auto_layout of a job without parallel.layout");
  const PlanResult plan = plan_layouts(job, world_size, device, PlanConstants());
  std::string kept;
  for (const std::string& note : plan.notes)
    if (note.rfind("parallel.layout=auto", 0) == 0) kept = note;
  TS_CHECK(!plan.fits.empty(), ConfigError, "parallel.layout=auto: no layout of this job fits ", world_size, " x ",
           device.name, " (", device.memory_gb, " GB each): ", plan.refused_memory, " refused for memory, ",
           plan.illegal, " not legal for the job (", kept,
           "); unset the fields kept, run on more ranks, or lower train.global_batch or train.seq_len "
           "(tessera plan --config ... --gpus ",
           world_size, " shows the candidates)");
  AutoLayout out;
  out.chosen = plan.fits.front();
  const PlanLayout& l = out.chosen.layout;
  out.job = job;
  config::ParallelConfig* parallel = out.job.mutable_parallel();
  parallel->clear_layout();
  parallel->set_tp(l.tp);
  parallel->set_pp(l.pp);
  parallel->set_dp(l.dp);
  parallel->set_micro_batches(l.micro_batches);
  parallel->set_zero_stage(l.zero_stage);
  parallel->set_sequence_parallel(l.sequence_parallel);
  parallel->set_virtual_stages(l.virtual_stages);
  config::TrainConfig* train = out.job.mutable_train();
  train->set_recompute(recompute_proto(l.recompute));
  if (l.recompute == Recompute::kFull && l.recompute_every != 1) {
    train->set_recompute_every(l.recompute_every);
  } else {
    train->clear_recompute_every();
  }
  std::string recompute = recompute_name(l.recompute);
  if (l.recompute == Recompute::kFull && l.recompute_every != 1) recompute += str_cat(" every ", l.recompute_every);
  out.line =
      str_cat("parallel.layout=auto chose tp=", l.tp, " pp=", l.pp, " dp=", l.dp, " micro_batches=", l.micro_batches,
              " zero_stage=", l.zero_stage, " recompute=", recompute, l.sequence_parallel ? " sequence_parallel" : "",
              l.virtual_stages > 1 ? str_cat(" virtual_stages=", l.virtual_stages) : std::string(), ": predicted ",
              human_bytes(out.chosen.memory.total()), " per rank, ", human_count(out.chosen.tokens_per_s),
              " tokens/s on ", world_size, " x ", device.name,
              device.name == "cpu" ? str_cat(" (", kAutoLayoutCpuGflops, " GFLOP/s sgemm per node)") : "", "; best of ",
              plan.fits.size(), " that fit");
  return out;
}

config::JobConfig resolve_auto_layout(const config::JobConfig& job, MpiEnvironment& mpi, std::string* line,
                                      std::string* notice) {
  if (line != nullptr) line->clear();
  if (notice != nullptr) notice->clear();
  if (!job.parallel().has_layout()) return job;
  validate_job_config(job);
  const double timeout_s = job.parallel().timeout_s();
  // Every rank plans with the same memory: the smallest of the job's hosts, in MiB (min = -max(-x)), and the
  // largest process baseline (startup_memory) of any rank.
  const double host_bytes = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
  const int32_t host_mib = static_cast<int32_t>(std::min(host_bytes / (1 << 20), 2.0e9));
  const int32_t process_kib = static_cast<int32_t>(std::min<int64_t>(startup_memory().rss_bytes / 1024, INT32_MAX));
  const std::vector<int32_t> largest = job_maximum({-host_mib, process_kib}, timeout_s);
  const double memory_gb = -static_cast<double>(largest[0]) * (1 << 20) / 1e9;
  const DeviceSpec device = auto_layout_device(job, mpi.world_size(), memory_gb, largest[1] * 1024.0,
                                               job.train().device() == config::CUDA ? first_gpu_name() : "", notice);
  const AutoLayout chosen = choose_auto_layout(job, mpi.world_size(), device);
  // The planner is a pure function of what every rank now has alike; that the choices agree is checked anyway,
  // since ranks that built different jobs would deadlock in their first collective instead of failing.
  const PlanLayout& l = chosen.chosen.layout;
  const std::vector<int32_t> mine = {l.tp,
                                     l.pp,
                                     l.dp,
                                     l.micro_batches,
                                     l.zero_stage,
                                     static_cast<int32_t>(l.recompute),
                                     l.recompute_every,
                                     l.sequence_parallel ? 1 : 0,
                                     l.virtual_stages};
  std::vector<int32_t> negated(mine.size());
  for (size_t i = 0; i < mine.size(); ++i) negated[i] = -mine[i];
  std::vector<int32_t> both = mine;
  both.insert(both.end(), negated.begin(), negated.end());
  const std::vector<int32_t> max = job_maximum(both, timeout_s);
  for (size_t i = 0; i < mine.size(); ++i) {
    // Largest == smallest over all ranks: the same verdict on every rank, so they all stop or all go on.
    TS_CHECK(max[i] == -max[mine.size() + i], ConfigError,
             "parallel.layout=auto: the ranks chose different layouts (rank ", mpi.world_rank(), ": ", chosen.line,
             "); their GPUs differ, so set the layout explicitly");
  }
  if (line != nullptr) *line = chosen.line;
  return chosen.job;
}

}  // namespace tessera
