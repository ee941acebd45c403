// Errors and checks.
//
// Two tiers (see STYLE.md): TS_CHECK for conditions a user can cause (config, files, layouts, inputs),
// with a message that says what is wrong and what to do; TS_ASSERT for internal invariants. Library code
// throws one of the typed exceptions below; only the launcher's main() catches them.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace tessera {

// Base of every error Tessera reports to a user. what() is the full, human-readable message.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

class ConfigError : public Error {
 public:
  using Error::Error;
};
class DataError : public Error {
 public:
  using Error::Error;
};
class CheckpointError : public Error {
 public:
  using Error::Error;
};
class CommError : public Error {
 public:
  using Error::Error;
};
// A broken internal invariant: a bug in Tessera, not something the user did.
class InternalError : public Error {
 public:
  using Error::Error;
};

namespace detail {

inline void append_all(std::ostringstream&) {}
template <typename T, typename... Rest>
void append_all(std::ostringstream& out, const T& first, const Rest&... rest) {
  out << first;
  append_all(out, rest...);
}

}  // namespace detail

// Concatenates the arguments with operator<<.
template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream out;
  detail::append_all(out, args...);
  return out.str();
}

// Identifies this process in messages ("rank 3 on node7"); set once by the launcher, empty before.
// Thread-safe to read after it is set.
void set_process_label(const std::string& label);
const std::string& process_label();

[[noreturn]] void throw_internal_error(const char* condition, const char* file, int line, const std::string& message);

}  // namespace tessera

// TS_CHECK(cond, ErrorType, message parts...): throws ErrorType(message) when cond is false.
#define TS_CHECK(cond, ErrorType, ...)                       \
  do {                                                       \
    if (!(cond)) throw ErrorType(::tessera::str_cat(__VA_ARGS__)); \
  } while (0)

// TS_ASSERT(cond, message parts...): an internal invariant; failure names the file and line.
#define TS_ASSERT(cond, ...)                                                                          \
  do {                                                                                                \
    if (!(cond)) ::tessera::throw_internal_error(#cond, __FILE__, __LINE__, ::tessera::str_cat(__VA_ARGS__)); \
  } while (0)
