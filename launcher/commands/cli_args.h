// Command-line flags of the tessera subcommands: `--flag value`, `--flag=value`, repeatable flags, and
// boolean switches. Unknown flags are errors that list the known ones.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

namespace tessera {

class CliArgs {
 public:
  // command: "train", ... (for messages). value_flags take a value; switches do not; repeated flags may
  // appear several times. Throws ConfigError on unknown flags, missing values, or stray arguments.
  CliArgs(const std::string& command, const std::vector<std::string>& args, const std::set<std::string>& value_flags,
          const std::set<std::string>& switches = {}, const std::set<std::string>& repeated = {});

  bool has(const std::string& flag) const { return values_.count(flag) > 0; }
  // The flag's (last) value, or fallback.
  std::string get(const std::string& flag, const std::string& fallback = "") const;
  // Every value of a repeatable flag, in order.
  std::vector<std::string> all(const std::string& flag) const;
  // Throws ConfigError saying the flag is required.
  std::string required(const std::string& flag) const;

 private:
  std::string command_;
  std::map<std::string, std::vector<std::string>> values_;
};

}  // namespace tessera
