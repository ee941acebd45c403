// ConsoleLog: a copy of this process's standard output in a file (RUN_DIR/train.log, rank 0's console), for
// a person who watches the run with `tail -f` or reads it after the job's own output is gone.
//
// While a ConsoleLog lives, `stdout` is a stream (glibc's fopencookie) that writes every byte both to the real
// standard output and to the log, in order, line-buffered. Until open() names the file (the run directory
// exists only once the job's checks passed), the lines are kept in memory and written when it opens. Only what
// goes through `stdout` (printf, puts) is copied; stderr, where errors go, is not. Main thread only.
#pragma once

#include <cstdio>
#include <string>

namespace tessera {

class ConsoleLog {
 public:
  // Starts copying stdout.
  ConsoleLog();
  // Flushes, puts the real stdout back and closes the log.
  ~ConsoleLog();
  ConsoleLog(const ConsoleLog&) = delete;
  ConsoleLog& operator=(const ConsoleLog&) = delete;

  // Appends everything printed so far, and from now on every line, to path. Throws ConfigError if it cannot.
  void open(const std::string& path);

 private:
  static long write(void* cookie, const char* data, size_t size);

  std::FILE* console_ = nullptr;  // the real stdout
  std::FILE* stream_ = nullptr;   // the copying stream, installed as stdout
  std::FILE* log_ = nullptr;
  std::string held_;  // printed before open()
};

}  // namespace tessera
