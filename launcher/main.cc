// The `tessera` command line.
#include <cstdio>
#include <string>
#include <vector>

#include "core/check.h"
#include "launcher/prepare.h"

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "prepare") {
    try {
      return tessera::prepare_command({args.begin() + 1, args.end()});
    } catch (const tessera::Error& e) {
      std::fprintf(stderr, "tessera prepare: error: %s\n", e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "usage: tessera <train|verify|prepare> ...\n");
  return 2;
}
