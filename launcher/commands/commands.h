// The tessera subcommands. Each add_*_command adds its subcommand to the `tessera` command line (CLI11): its
// options, each with the description `tessera <command> --help` prints, bound to state that the returned Command
// owns. main() parses the command line, then runs the chosen command's function. A command returns the process
// exit code; errors a user can cause are thrown as tessera::Error subclasses and reported by main().
//
// Adding a command: write add_<name>_command in <name>_command.cc and add one line to main()'s list.
#pragma once

#include <functional>

namespace CLI {
class App;
}

namespace tessera {

class MpiEnvironment;
struct ProcessEnv;

struct Command {
  // The subcommand in the `tessera` app; parsed() is true when the command line chose it.
  CLI::App* app = nullptr;
  // Exactly one is set. A single-process command needs no MPI; an MPI command runs on every rank after MPI is
  // initialized (under mpirun, or alone as a world of one).
  std::function<int()> run_single;
  std::function<int(MpiEnvironment& mpi, const ProcessEnv& env)> run_mpi;
};

Command add_train_command(CLI::App& tessera);
Command add_verify_command(CLI::App& tessera);
Command add_bench_command(CLI::App& tessera);
Command add_eval_command(CLI::App& tessera);
Command add_generate_command(CLI::App& tessera);
// Single-process: need no MPI.
Command add_prepare_command(CLI::App& tessera);
Command add_inspect_command(CLI::App& tessera);
Command add_import_command(CLI::App& tessera);
Command add_export_command(CLI::App& tessera);
Command add_plot_command(CLI::App& tessera);
Command add_plan_command(CLI::App& tessera);

}  // namespace tessera
