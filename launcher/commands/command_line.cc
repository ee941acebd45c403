// The --set/--unset options of the subcommands that run a job config.
#include "launcher/commands/command_line.h"

#include <CLI/CLI.hpp>

namespace tessera {

void add_override_options(CLI::App* command, ConfigOverrides* overrides) {
  command
      ->add_option("--set", overrides->set,
                   "Override one field of the job config, e.g. parallel.tp=2 or data.mock=true (repeatable).\n"
                   "The command line wins over the file: data.mock=true, data.train_prefix or data.train_blend\n"
                   "replace the file's choice of training data (a note says so). A repeated field takes one\n"
                   "element per --set in text format, e.g. 'data.train_blend={prefix: \"data/a\" weight: 0.7}';\n"
                   "the command line's elements replace the file's list.")
      ->type_name("FIELD=VALUE")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  command
      ->add_option("--unset", overrides->unset,
                   "Clear a field of the job config as if the file had not set it (its default applies), e.g.\n"
                   "data.train_prefix; a block (data) or a repeated field (data.train_blend) clears whole.\n"
                   "Applied before every --set (repeatable).")
      ->type_name("FIELD")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
}

void print_notices(const std::vector<std::string>& notices, bool lead, std::FILE* stream) {
  if (!lead) return;
  for (const std::string& notice : notices) std::fprintf(stream, "note: %s\n", notice.c_str());
  std::fflush(stream);
}

}  // namespace tessera
