// `tessera plot RUN_DIR [--out FILE.svg]`: draws a run's metrics.jsonl (loss and validation loss, learning rate,
// tokens/s over steps) as one self-contained SVG (launcher/run/run_plot.h), RUN_DIR/plot.svg unless --out says
// otherwise. Single process, no MPI; works on a run that is still training (the rows written so far).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <string>

#include "launcher/commands/commands.h"
#include "launcher/commands/exit_codes.h"
#include "launcher/run/run_plot.h"

namespace tessera {

namespace {

struct PlotFlags {
  std::string run_dir, out;
};

int run_plot(const PlotFlags& flags) {
  const std::string out = flags.out.empty() ? flags.run_dir + "/plot.svg" : flags.out;
  const int rows = write_run_plot(flags.run_dir, out);
  std::printf("%s: %d step(s) of %s/metrics.jsonl (loss, validation loss, learning rate, tokens/s)\n", out.c_str(),
              rows, flags.run_dir.c_str());
  return kExitSuccess;
}

}  // namespace

Command add_plot_command(CLI::App& tessera) {
  auto flags = std::make_shared<PlotFlags>();
  CLI::App* app = tessera.add_subcommand(
      "plot",
      "Draw a run's loss, validation loss, learning rate and tokens/s over steps as an SVG\n"
      "Reads RUN_DIR/metrics.jsonl (the rows written so far, so a run still training can be drawn); train\n"
      "writes RUN_DIR/plot.svg at the end of every run too.");
  app->add_option("RUN_DIR", flags->run_dir, "The run directory (it holds metrics.jsonl)")->required();
  app->add_option("--out", flags->out, "Where to write the SVG (default RUN_DIR/plot.svg)")->type_name("FILE.svg");
  Command command;
  command.app = app;
  command.run_single = [flags] { return run_plot(*flags); };
  return command;
}

}  // namespace tessera
