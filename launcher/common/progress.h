// Progress of long work (prepare's passes over the corpus, checkpoint saves and loads, eval, export) for the
// person waiting on it. On a terminal: one line, a bar with rate and ETA, redrawn in place with '\r' a few
// times a second. Anywhere else (a log file, a pipe, a batch job's output): a plain line every few seconds,
// which stays readable in a file. Both end with one summary line.
//
// The lines go to stderr, so that stdout keeps only the results (the summaries and JSON that scripts parse).
// A multi-rank command makes one on rank 0 only (ProgressOptions::enabled false elsewhere).
//
// The environment sets how it reports (progress_options() reads it):
//   TESSERA_PROGRESS=auto|bar|lines|off    auto (default): the bar when stderr is a terminal, lines otherwise
//   TESSERA_PROGRESS_INTERVAL_S=SECONDS    seconds between plain lines (default 5; > 0, fractions allowed)
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace tessera {

enum class ProgressUnit {
  kCount,  // "1234 documents", "12.3k tokens"
  kBytes,  // "12.3 MB"
};

// One quantity that a Progress shows. The first of a Progress's quantities is its main one: with a total it
// gives the percentage, the bar and the ETA.
struct ProgressQuantity {
  std::string name;  // plural noun for counts ("documents"); unused for bytes
  ProgressUnit unit = ProgressUnit::kCount;
  int64_t total = -1;      // -1: not known
  bool show_rate = false;  // also show "<rate> <name>/s"
};

enum class ProgressStyle { kOff, kBar, kLines };

struct ProgressOptions {
  ProgressStyle style = ProgressStyle::kLines;
  double interval_s = 5.0;  // kLines: seconds between lines
  std::FILE* out = stderr;
  // Print the summary line even when no progress was shown before it (the work took less than one
  // interval, or less than the first redraw of the bar). Off for work whose caller prints its own summary.
  bool summary_when_quick = true;
};

// The options the environment asks for (see the top of this file), for output to stderr. enabled false (a rank
// other than 0) gives kOff. Throws ConfigError for a TESSERA_PROGRESS or TESSERA_PROGRESS_INTERVAL_S it cannot
// read, saying what it takes.
ProgressOptions progress_options(bool enabled = true);

// Reports the progress of one piece of work. Not thread-safe: one thread calls update() and finish().
// update() is cheap enough to call per item: it reads a coarse clock (a few nanoseconds) and formats nothing
// until a line is due.
class Progress {
 public:
  // label names the work ("prepare: tokenizing"); quantities as above, at least one.
  Progress(std::string label, std::vector<ProgressQuantity> quantities, ProgressOptions options = progress_options());
  // Ends a bar left on the terminal with a newline (an error message then starts on a line of its own).
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // The current values of the quantities, in the order given (fewer values leave the rest as they were).
  // Redraws the bar or prints a line if one is due.
  void update(std::initializer_list<int64_t> values);
  // The current value of quantity i.
  int64_t value(size_t i) const { return values_[i]; }
  // Prints the summary line ("<label>: done, ... in 12.3 s (...)"), once; later calls do nothing.
  void finish();

  // The text of the line shown now (kLines) and of the summary line, for tests and for messages.
  std::string status_line(double elapsed_s) const;
  std::string summary_line(double elapsed_s) const;

 private:
  void draw(double now_s);

  std::string label_;
  std::vector<ProgressQuantity> quantities_;
  std::vector<int64_t> values_;
  ProgressOptions options_;
  double start_s_ = 0;
  double next_s_ = 0;  // when the next line or redraw is due
  bool shown_ = false;
  bool bar_on_screen_ = false;
  bool finished_ = false;
};

// "12 s", "3 min 05 s", "2 h 07 min".
std::string human_duration(double seconds);

}  // namespace tessera
