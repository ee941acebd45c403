// Process label and internal-error reporting.
#include "core/check.h"

namespace tessera {

namespace {
std::string& label_storage() {
  static std::string label;
  return label;
}
}  // namespace

void set_process_label(const std::string& label) { label_storage() = label; }
const std::string& process_label() { return label_storage(); }

void throw_internal_error(const char* condition, const char* file, int line, const std::string& message) {
  std::string where = process_label().empty() ? "" : " (" + process_label() + ")";
  throw InternalError(str_cat("internal error", where, ": ", condition, " failed at ", file, ":", line,
                              message.empty() ? "" : ": ", message,
                              ". This is a bug in Tessera; please report it with the command that triggered it."));
}

}  // namespace tessera
