// The tessera subcommands. Each returns the process exit code; errors a user can cause are thrown as
// tessera::Error subclasses and reported by main().
#pragma once

#include <string>
#include <vector>

namespace tessera {

class MpiEnvironment;
struct ProcessEnv;

int train_command(const std::vector<std::string>& args, MpiEnvironment& mpi, const ProcessEnv& env);
int verify_command(const std::vector<std::string>& args, MpiEnvironment& mpi, const ProcessEnv& env);
int bench_command(const std::vector<std::string>& args, MpiEnvironment& mpi, const ProcessEnv& env);
int eval_command(const std::vector<std::string>& args, MpiEnvironment& mpi, const ProcessEnv& env);
int generate_command(const std::vector<std::string>& args, MpiEnvironment& mpi, const ProcessEnv& env);
// Single-process: need no MPI.
int prepare_command(const std::vector<std::string>& args);
int inspect_command(const std::vector<std::string>& args);
int import_command(const std::vector<std::string>& args);
int export_command(const std::vector<std::string>& args);
int plot_command(const std::vector<std::string>& args);
int plan_command(const std::vector<std::string>& args);

}  // namespace tessera
