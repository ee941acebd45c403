// Flag parsing.
#include "launcher/commands/cli_args.h"

#include "core/check.h"

namespace tessera {

namespace {
std::string known_list(const std::set<std::string>& a, const std::set<std::string>& b) {
  std::string s;
  for (const auto* set : {&a, &b})
    for (const std::string& f : *set) s += (s.empty() ? "" : ", ") + f;
  return s;
}
}  // namespace

CliArgs::CliArgs(const std::string& command, const std::vector<std::string>& args,
                 const std::set<std::string>& value_flags, const std::set<std::string>& switches,
                 const std::set<std::string>& repeated)
    : command_(command) {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    TS_CHECK(arg.rfind("--", 0) == 0, ConfigError, "tessera ", command, ": unexpected argument '", arg,
             "'. Flags: ", known_list(value_flags, switches));
    std::string value;
    bool has_value = false;
    size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    if (switches.count(arg)) {
      TS_CHECK(!has_value, ConfigError, "tessera ", command, ": ", arg, " takes no value");
      values_[arg].push_back("true");
      continue;
    }
    TS_CHECK(value_flags.count(arg), ConfigError, "tessera ", command, ": unknown flag '", arg,
             "'. Flags: ", known_list(value_flags, switches));
    if (!has_value) {
      TS_CHECK(i + 1 < args.size(), ConfigError, "tessera ", command, ": ", arg, " needs a value");
      value = args[++i];
    }
    TS_CHECK(repeated.count(arg) || !values_.count(arg), ConfigError, "tessera ", command, ": ", arg,
             " given more than once");
    values_[arg].push_back(value);
  }
}

std::string CliArgs::get(const std::string& flag, const std::string& fallback) const {
  auto it = values_.find(flag);
  return it == values_.end() ? fallback : it->second.back();
}

std::vector<std::string> CliArgs::all(const std::string& flag) const {
  auto it = values_.find(flag);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

std::string CliArgs::required(const std::string& flag) const {
  TS_CHECK(has(flag), ConfigError, "tessera ", command_, ": ", flag, " is required");
  return get(flag);
}

}  // namespace tessera
