// `tessera plot RUN_DIR [--out FILE.svg]`: draws a run's metrics.jsonl (loss and validation loss, learning rate,
// tokens/s over steps) as one self-contained SVG (launcher/run/run_plot.h), RUN_DIR/plot.svg unless --out says
// otherwise. Single process, no MPI; works on a run that is still training (the rows written so far).
#include <cstdio>
#include <string>
#include <vector>

#include "core/check.h"
#include "launcher/commands/cli_args.h"
#include "launcher/commands/commands.h"
#include "launcher/commands/exit_codes.h"
#include "launcher/run/run_plot.h"

namespace tessera {

int plot_command(const std::vector<std::string>& args) {
  TS_CHECK(!args.empty() && args[0].rfind("--", 0) != 0, ConfigError,
           "tessera plot: give a run directory, e.g. tessera plot runs/tiny (it writes runs/tiny/plot.svg)");
  CliArgs cli("plot", std::vector<std::string>(args.begin() + 1, args.end()), {"--out"});
  const std::string run_dir = args[0];
  const std::string out = cli.get("--out", run_dir + "/plot.svg");
  const int rows = write_run_plot(run_dir, out);
  std::printf("%s: %d step(s) of %s/metrics.jsonl (loss, validation loss, learning rate, tokens/s)\n", out.c_str(),
              rows, run_dir.c_str());
  return kExitSuccess;
}

}  // namespace tessera
