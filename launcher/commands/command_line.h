// What the subcommands' command lines share: the --set/--unset options that change the job config, and how a
// command reports the notices those overrides produce.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "launcher/common/config.h"

namespace CLI {
class App;
}

namespace tessera {

// Adds `--set FIELD=VALUE` and `--unset FIELD` (each repeatable, one value per occurrence) to command, collected
// into *overrides, which must outlive the parse. Their help says how the command line wins over the file
// (apply_overrides).
void add_override_options(CLI::App* command, ConfigOverrides* overrides);

// Prints each notice as a "note: ..." line to stream (stdout, or stderr where stdout carries JSON), when lead (world
// rank 0; every rank computes the same notices).
void print_notices(const std::vector<std::string>& notices, bool lead, std::FILE* stream = stdout);

}  // namespace tessera
