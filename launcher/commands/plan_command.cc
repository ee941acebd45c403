// `tessera plan`: the layout planner (launcher/run/planner.h, docs/planner.md) on the command line. Prints the
// best layouts of a job on N devices with their predicted memory and step time by part, tokens/s and MFU, and
// how many legal layouts do not fit; --calibrate first fits the compute and communication efficiencies to
// measured runs. Single-process, no MPI and no device: it only predicts.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>

#include "core/check.h"
#include "kernels/cpu/cpu_backend.h"
#include "launcher/commands/command_line.h"
#include "launcher/commands/commands.h"
#include "launcher/common/config.h"
#include "launcher/common/human_format.h"
#include "launcher/common/json_io.h"
#include "launcher/run/planner.h"
#include "launcher/run/process_memory.h"
#include "launcher/run/throughput.h"

namespace tessera {

namespace {

// The command line of `tessera plan`.
struct PlanFlags {
  CLI::App* app = nullptr;
  std::string config, gpu = "H100-SXM";
  ConfigOverrides overrides;
  std::vector<std::string> calibrate;
  int gpus = 0, top = 10, nodes_of = 0;
  double cpu_gflops = 0, memory_gb = 0, compute_efficiency = 0, comm_efficiency = 0, dp_overlap = 0;
  bool json = false;
  bool given(const char* flag) const { return app->count(flag) > 0; }
};

// The node's sgemm GFLOP/s with every core (the shape bench uses: [1024, 768] x [3072, 768]^T).
double node_sgemm_gflops() {
  CpuBackend backend(std::max(1u, std::thread::hardware_concurrency()));
  return measure_sgemm_gflops(backend, /*reps=*/3);
}

std::string ms(double seconds) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f", seconds * 1e3);
  return text;
}

int run_plan(const PlanFlags& flags) {
  // This process before it works: the binary, its libraries and their static initialisation (recorded by main).
  const double process_bytes = static_cast<double>(startup_memory().rss_bytes);
  std::vector<std::string> notices;
  const config::JobConfig job = load_job_config(flags.config, flags.overrides, &notices);
  print_notices(notices, /*lead=*/true, flags.json ? stderr : stdout);
  const int devices = flags.gpus;
  const int top = flags.top;
  const std::string gpu = flags.gpu;
  DeviceSpec device;
  if (gpu == "cpu" || gpu == "CPU") {
    const double gflops = flags.given("--cpu-gflops") ? flags.cpu_gflops : node_sgemm_gflops();
    const double memory = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
    device = cpu_device(gflops, flags.given("--memory-gb") ? flags.memory_gb : memory / 1e9, devices, process_bytes);
  } else {
    device = planner_device(gpu);
    if (flags.given("--memory-gb")) device.memory_gb = flags.memory_gb;
  }
  if (flags.given("--nodes-of")) device.devices_per_node = flags.nodes_of;

  PlanConstants constants;
  if (flags.given("--compute-efficiency")) constants.compute_efficiency = flags.compute_efficiency;
  if (flags.given("--comm-efficiency")) constants.comm_efficiency = flags.comm_efficiency;
  if (flags.given("--dp-overlap")) constants.dp_overlap = flags.dp_overlap;
  const bool json = flags.json;
  if (!flags.calibrate.empty()) {
    std::vector<MeasuredRun> runs;
    for (const std::string& dir : flags.calibrate) runs.push_back(read_measured_run(dir));
    double rms = 0;
    constants = calibrate(runs, device, constants, &rms);
    if (!json) {
      std::printf(
          "calibrated on %zu run(s): --compute-efficiency %.4g --comm-efficiency %.4g (rms relative error "
          "of the step time %.1f%%)\n",
          runs.size(), constants.compute_efficiency, constants.comm_efficiency, 100 * rms);
    }
  }

  const PlanResult result = plan_layouts(job, devices, device, constants);
  if (json) {
    Json out = Json::object();
    out["compute_efficiency"] = constants.compute_efficiency;
    out["comm_efficiency"] = constants.comm_efficiency;
    out["refused_memory"] = result.refused_memory;
    out["illegal"] = result.illegal;
    Json layouts = Json::array();
    for (size_t i = 0; i < result.fits.size() && static_cast<int>(i) < top; ++i) {
      const PlanEntry& e = result.fits[i];
      Json row = Json::object();
      row["tp"] = e.layout.tp;
      row["pp"] = e.layout.pp;
      row["dp"] = e.layout.dp;
      row["micro_batches"] = e.layout.micro_batches;
      row["zero_stage"] = e.layout.zero_stage;
      row["sequence_parallel"] = e.layout.sequence_parallel;
      row["virtual_stages"] = e.layout.virtual_stages;
      row["recompute"] = recompute_name(e.layout.recompute);
      row["memory_bytes"] = e.memory.total();
      row["allocated_bytes"] = e.memory.allocated();
      row["activation_bytes"] = e.memory.activations;
      row["process_bytes"] = e.memory.process;
      row["mpi_bytes"] = e.memory.mpi;
      row["thread_bytes"] = e.memory.threads;
      row["rank_bytes"] = e.memory.rank;
      row["step_s"] = e.time.total();
      row["tokens_per_s"] = e.tokens_per_s;
      row["mfu"] = e.mfu;
      layouts.push_back(std::move(row));
    }
    out["layouts"] = std::move(layouts);
    std::printf("%s\n", dump_json(out).c_str());
    return 0;
  }

  std::printf(
      "plan: %s on %d x %s (%.3g GB each, %d per node); compute at %.0f%% of peak, links at %.0f%%, DP overlap "
      "%.0f%%\n",
      job.name().c_str(), devices, device.name.c_str(), device.memory_gb, device.devices_per_node,
      100 * constants.compute_efficiency, 100 * constants.comm_efficiency, 100 * constants.dp_overlap);
  std::printf("%zu layout(s) fit, %d refused for memory, %d not legal for this job\n", result.fits.size(),
              result.refused_memory, result.illegal);
  for (const std::string& note : result.notes) std::printf("note: %s\n", note.c_str());
  if (result.fits.empty()) {
    std::printf("no layout fits: use more devices, a smaller train.global_batch or train.seq_len\n");
    return 1;
  }
  std::printf(
      "\n%3s %3s %2s %2s %4s %4s %4s %-9s | %9s = %8s %8s %8s %8s %8s %8s | %9s = %8s %7s %7s %7s %7s %6s | %10s %6s\n",
      "tp", "pp", "V", "SP", "dp", "mb", "zero", "recompute", "mem/dev", "weights", "grads", "copy", "optim", "activ",
      "buffers", "step ms", "compute", "tp", "pp", "bubble", "dp", "optim", "tokens/s", "MFU");
  for (size_t i = 0; i < result.fits.size() && static_cast<int>(i) < top; ++i) {
    const PlanEntry& e = result.fits[i];
    const MemoryPrediction& m = e.memory;
    const TimePrediction& t = e.time;
    std::printf(
        "%3d %3d %2d %2s %4d %4d %4d %-9s | %9s = %8s %8s %8s %8s %8s %8s | %9s = %8s %7s %7s %7s %7s %6s | %10.4g "
        "%5.1f%%\n",
        e.layout.tp, e.layout.pp, e.layout.virtual_stages, e.layout.sequence_parallel ? "y" : "-", e.layout.dp,
        e.layout.micro_batches, e.layout.zero_stage, recompute_name(e.layout.recompute), human_bytes(m.total()).c_str(),
        human_bytes(m.master).c_str(), human_bytes(m.grads).c_str(), human_bytes(m.compute_copy).c_str(),
        human_bytes(m.optimizer).c_str(), human_bytes(m.activations).c_str(),
        human_bytes(m.comm_buffers + m.runtime()).c_str(), ms(t.total()).c_str(), ms(t.compute).c_str(),
        ms(t.tp_comm).c_str(), ms(t.pp_comm).c_str(), ms(t.bubble).c_str(), ms(t.dp_exposed).c_str(),
        ms(t.optimizer).c_str(), e.tokens_per_s, 100 * e.mfu);
  }
  std::printf(
      "\n(memory on the fullest stage; buffers = pipeline exchange and losses + the runtime: on GPUs the CUDA context "
      "and libraries' workspaces, on CPU this process's binary and libraries, MPI and the threads' buffers)\n");
  return 0;
}

}  // namespace

Command add_plan_command(CLI::App& tessera) {
  auto flags = std::make_shared<PlanFlags>();
  CLI::App* app = tessera.add_subcommand(
      "plan",
      "Predict memory per device and step time of every legal layout of a job, and print the best ones\n"
      "For every tp x pp x dp, micro-batch count, ZeRO stage and recomputation the job allows on --gpus devices:\n"
      "memory by part (weights, gradients, optimizer state, activations of the schedule's micro-batches in\n"
      "flight, buffers) and step time by part (compute, TP, PP, the pipeline bubble, DP), tokens/s and MFU;\n"
      "layouts that do not fit are refused and counted (docs/planner.md).");
  flags->app = app;
  app->add_option("--config", flags->config, "The job: a JobConfig in protobuf text format (proto/config.proto)")
      ->type_name("FILE.textproto")
      ->required();
  add_override_options(app, &flags->overrides);
  app->add_option("--gpus", flags->gpus, "The devices to plan for")
      ->type_name("N")
      ->required()
      ->check(CLI::Range(1, 1 << 20));
  app->add_option("--gpu", flags->gpu, "The device: H100-SXM, A100-80GB, H200, or cpu (this machine's sgemm speed)")
      ->type_name("NAME")
      ->capture_default_str();
  app->add_option("--nodes-of", flags->nodes_of, "Devices per node (NVLink inside a node, the network across)")
      ->type_name("N")
      ->check(CLI::Range(1, 1 << 20));
  app->add_option("--top", flags->top, "How many layouts to print")
      ->type_name("K")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  app->add_option("--calibrate", flags->calibrate,
                  "Fit the compute and communication efficiencies to the step times of measured runs first")
      ->type_name("RUN_DIR");
  app->add_option("--cpu-gflops", flags->cpu_gflops, "--gpu cpu: the node's sgemm GFLOP/s (default: measured)")
      ->type_name("G")
      ->check(CLI::Range(1e-3, 1e9));
  app->add_option("--memory-gb", flags->memory_gb,
                  "Memory per device in GB, instead of the device's (with --gpu cpu: the node's,\n"
                  "shared by the ranks)")
      ->type_name("GB")
      ->check(CLI::Range(1e-3, 1e9));
  app->add_option("--compute-efficiency", flags->compute_efficiency, "Fraction of peak the compute runs at")
      ->type_name("F")
      ->check(CLI::Range(1e-4, 1.0));
  app->add_option("--comm-efficiency", flags->comm_efficiency, "Fraction of link bandwidth communication reaches")
      ->type_name("F")
      ->check(CLI::Range(1e-4, 1.0));
  app->add_option("--dp-overlap", flags->dp_overlap, "Fraction of the DP gradient sync hidden behind backward")
      ->type_name("F")
      ->check(CLI::Range(0.0, 1.0));
  app->add_flag("--json", flags->json, "Print the result as one JSON object");
  Command command;
  command.app = app;
  command.run_single = [flags] { return run_plan(*flags); };
  return command;
}

}  // namespace tessera
