// The `tessera` command line: parses it (CLI11: each subcommand registers its options, launcher/commands/commands.h),
// dispatches to the chosen subcommand and is the only place that catches errors.
//
// Exit codes (launcher/commands/exit_codes.h): 0 success; 1 a failed run (verify FAIL, a data, checkpoint or
// communication error); 2 a usage or config error; 3 a training run stopped by a signal after saving. A usage error
// (an unknown flag or command, a missing value) is found before MPI starts, the same on every rank; only world rank 0
// prints it. A ConfigError is detected identically on every rank before any communication, so every rank exits by
// itself; any other error on one rank aborts the whole job (its peers would otherwise wait in a collective until
// their timeout).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cluster/process_env.h"
#include "core/check.h"
#include "launcher/commands/build_info.h"
#include "launcher/commands/commands.h"
#include "launcher/commands/exit_codes.h"
#include "launcher/run/process_memory.h"
#include "parallel/mpi_environment.h"

namespace {

// How long a rank that hit a ConfigError waits for every other rank to hit one too (they read the same job, so
// they normally do within milliseconds) before it reports alone and aborts the job.
constexpr int kConfigErrorAgreementSeconds = 10;

constexpr const char* kFooter =
    "Run `tessera <command> --help` (or `tessera help <command>`) for a command's flags.\n"
    "\n"
    "exit codes:\n"
    "  0  finished\n"
    "  1  a runtime error (data, checkpoint, communication; verify FAIL; train: diverged)\n"
    "  2  a usage or config error, found before any work started\n"
    "  3  train stopped by SIGTERM/SIGINT/SIGUSR1 after saving a checkpoint: requeue it with --resume auto\n";

int report(const char* command, const std::string& where, const char* kind, const char* what) {
  std::fprintf(stderr, "tessera %s: %s%s%s: %s\n", command, kind, where.empty() ? "" : " on ", where.c_str(), what);
  std::fflush(stderr);
  return 0;
}

// CLI11's help, except that the list of commands shows the first line of each one's description (the rest is in
// `tessera <command> --help`).
class Formatter : public CLI::Formatter {
 public:
  std::string make_subcommand(const CLI::App* sub) const override {
    const std::string& description = sub->get_description();
    std::stringstream out;
    CLI::detail::format_help(out, sub->get_name(), description.substr(0, description.find('\n')), column_width_);
    return out.str();
  }
};

// "prepare, train, ..." for messages.
std::string command_names(CLI::App& app) {
  std::string names;
  for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
    names += (names.empty() ? "" : ", ") + sub->get_name();
  return names;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tessera;
  // CUDA loads kernels lazily by default: a kernel first launched while NCCL kernels are in flight would load
  // its module then, which can deadlock with them. Load every module when the context is made, unless the
  // user chose otherwise. (Read by the CUDA runtime when it starts; harmless without a GPU.)
  setenv("CUDA_MODULE_LOADING", "EAGER", /*overwrite=*/0);
  // The process before it works, for the planner's memory model (launcher/run/process_memory.h).
  startup_memory();

  ProcessEnv env = read_process_env();
  // Under mpirun every rank parses the same command line; one of them speaks for all.
  const bool lead = env.world_rank == 0;

  CLI::App app(
      "Tessera: pretrain GPT-2 and Llama models across tensor-, pipeline- and data-parallel ranks\n"
      "(MPI on CPU, NCCL on GPU), with sharded checkpoints that resume in any layout.",
      "tessera");
  auto formatter = std::make_shared<Formatter>();
  formatter->column_width(34);
  app.formatter(formatter);  // before the subcommands, which take their parent's
  // The subcommands, in the order --help lists them. A new command is one more line here.
  const std::vector<Command> commands = {
      add_prepare_command(app), add_train_command(app),  add_eval_command(app),   add_inspect_command(app),
      add_import_command(app),  add_export_command(app), add_verify_command(app), add_generate_command(app),
      add_plot_command(app),    add_bench_command(app),  add_plan_command(app),
  };
  CLI::App* help = app.add_subcommand("help", "Show this help, or a command's (tessera help COMMAND)");
  std::string help_topic;
  help->add_option("COMMAND", help_topic, "The command whose flags to show");
  CLI::App* version = app.add_subcommand("version", "Show the version and what the build holds (as --version)");
  const std::string version_text = build_info();
  // CLI11 ends the text with a newline of its own.
  app.set_version_flag("--version", version_text.substr(0, version_text.size() - 1),
                       "Show the version and what the build holds, and exit");
  app.require_subcommand(1);
  app.footer(kFooter);  // after the subcommands, which would inherit it

  if (argc < 2) {
    if (lead) std::fprintf(stderr, "%s", app.help().c_str());
    return kExitConfigError;
  }
  // CLI11 would call a misspelt command a missing one ("A subcommand is required").
  if (argv[1][0] != '-' && app.get_subcommands([&](CLI::App* sub) { return sub->check_name(argv[1]); }).empty()) {
    if (lead) {
      std::fprintf(stderr, "tessera: unknown command '%s'; the commands are: %s (see `tessera --help`)\n", argv[1],
                   command_names(app).c_str());
    }
    return kExitConfigError;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {  // --help, --version
      if (lead) app.exit(e);
      return kExitSuccess;
    }
    if (lead) {
      const std::vector<CLI::App*> chosen = app.get_subcommands();
      const std::string name = chosen.empty() ? "" : chosen.front()->get_name();
      // CLI11 checks required options before it complains about arguments it did not recognize; a misspelt flag
      // is the better explanation of a missing one.
      std::string message = e.what();
      if (dynamic_cast<const CLI::RequiredError*>(&e) != nullptr && !chosen.empty() &&
          chosen.front()->remaining_size() > 0) {
        message = CLI::ExtrasError(name, chosen.front()->remaining()).what();
      }
      std::fprintf(stderr, "tessera%s%s: %s\nRun `tessera%s%s --help` for %s.\n", name.empty() ? "" : " ", name.c_str(),
                   message.c_str(), name.empty() ? "" : " ", name.c_str(), name.empty() ? "the commands" : "its flags");
    }
    return kExitConfigError;
  }
  if (help->parsed()) {
    if (help_topic.empty()) {
      // Not app.help(), which would show the chosen subcommand's: help's own.
      if (lead) std::printf("%s", app.get_formatter()->make_help(&app, "tessera", CLI::AppFormatMode::Normal).c_str());
      return kExitSuccess;
    }
    const std::vector<CLI::App*> topic =
        app.get_subcommands([&](CLI::App* sub) { return sub->check_name(help_topic); });
    if (topic.empty()) {
      if (lead) {
        std::fprintf(stderr, "tessera help: unknown command '%s'; the commands are: %s\n", help_topic.c_str(),
                     command_names(app).c_str());
      }
      return kExitConfigError;
    }
    if (lead) std::printf("%s", topic.front()->help("tessera").c_str());
    return kExitSuccess;
  }
  if (version->parsed()) {
    if (lead) std::printf("%s", version_text.c_str());
    return kExitSuccess;
  }

  const Command* chosen = nullptr;
  for (const Command& command : commands)
    if (command.app->parsed()) chosen = &command;
  TS_ASSERT(chosen != nullptr, "the command line chose no command");
  const std::string name = chosen->app->get_name();

  if (chosen->run_single) {
    try {
      return chosen->run_single();
    } catch (const ConfigError& e) {
      report(name.c_str(), "", "error", e.what());
      return kExitConfigError;
    } catch (const std::exception& e) {
      report(name.c_str(), "", "error", e.what());
      return kExitFailure;
    }
  }

  // Before MPI_Init: Open MPI started by srun without PMIx fails there with a message about how it was built.
  if (const std::string problem = launcher_problem(env); !problem.empty()) {
    if (lead) report(name.c_str(), "", "config error", problem.c_str());
    return kExitConfigError;
  }
  MpiEnvironment mpi(&argc, &argv);
  if (const std::string problem = world_size_problem(env, mpi.world_size()); !problem.empty()) {
    if (mpi.world_rank() == 0) report(name.c_str(), "", "config error", problem.c_str());
    return kExitConfigError;
  }
  env.world_rank = mpi.world_rank();
  env.world_size = mpi.world_size();
  set_process_label(env.label());
  try {
    return chosen->run_mpi(mpi, env);
  } catch (const ConfigError& e) {
    // Usually every rank reads the same job and fails the same way: rank 0 reports it and all exit. A rank whose
    // config error the others do not share (a file missing on its node, a config that differs between nodes)
    // says so itself and stops the job, instead of leaving it waiting for this rank.
    if (env.world_size > 1 && !mpi.every_rank_fails(kConfigErrorAgreementSeconds)) {
      report(name.c_str(), env.label(), "config error",
             str_cat("on this rank only (the others did not stop within ", kConfigErrorAgreementSeconds,
                     " s; stopping the job): ", e.what())
                 .c_str());
      mpi.abort(kExitConfigError);
    }
    if (env.world_rank == 0) report(name.c_str(), "", "config error", e.what());
    return kExitConfigError;
  } catch (const Error& e) {
    report(name.c_str(), env.label(), "error", e.what());
    if (env.world_size > 1) mpi.abort(kExitFailure);
    return kExitFailure;
  } catch (const std::bad_alloc&) {
    report(name.c_str(), env.label(), "error",
           "out of memory: reduce train.global_batch (or raise parallel.micro_batches), train.seq_len or the model");
    if (env.world_size > 1) mpi.abort(kExitFailure);
    return kExitFailure;
  } catch (const std::exception& e) {
    report(name.c_str(), env.label(), "unexpected error", e.what());
    if (env.world_size > 1) mpi.abort(kExitFailure);
    return kExitFailure;
  }
}
