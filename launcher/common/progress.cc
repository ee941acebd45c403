// The progress bar and progress lines (progress.h). Rates are averages since the start: steadier than a recent
// window, and the ETA they give does not jump around when one batch is slow.
#include "launcher/common/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <ctime>

#include "core/check.h"
#include "launcher/common/human_format.h"

namespace tessera {
namespace {

// How often a bar on a terminal is redrawn, and how long before it is first drawn (work that ends sooner shows
// only its summary).
constexpr double kBarRedrawS = 0.2;
constexpr int kBarWidth = 24;

// CLOCK_MONOTONIC_COARSE is read from the vDSO without a system call, at the kernel's tick resolution (1-4 ms):
// cheap enough to read on every update().
double coarse_now_s() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
  return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
}

std::string format_value(const ProgressQuantity& q, double value) {
  if (q.unit == ProgressUnit::kBytes) return human_bytes(value);
  return human_count(value) + " " + q.name;
}

std::string format_rate(const ProgressQuantity& q, double per_second) {
  if (q.unit == ProgressUnit::kBytes) return human_bytes(per_second) + "/s";
  return human_count(per_second) + " " + q.name + "/s";
}

}  // namespace

std::string human_duration(double seconds) {
  seconds = std::max(0.0, seconds);
  char text[32];
  const long long s = std::llround(seconds);
  if (s < 60) {
    std::snprintf(text, sizeof(text), "%lld s", s);
  } else if (s < 3600) {
    std::snprintf(text, sizeof(text), "%lld min %02lld s", s / 60, s % 60);
  } else {
    std::snprintf(text, sizeof(text), "%lld h %02lld min", s / 3600, s / 60 % 60);
  }
  return text;
}

ProgressOptions progress_options(bool enabled) {
  ProgressOptions options;
  const char* style = std::getenv("TESSERA_PROGRESS");
  const std::string chosen = style != nullptr && *style != '\0' ? style : "auto";
  TS_CHECK(chosen == "auto" || chosen == "bar" || chosen == "lines" || chosen == "off", ConfigError,
           "TESSERA_PROGRESS='", chosen,
           "' is not one of auto (a bar on a terminal, lines otherwise), bar, lines, off");
  if (chosen == "auto") {
    options.style = ::isatty(STDERR_FILENO) ? ProgressStyle::kBar : ProgressStyle::kLines;
  } else {
    options.style = chosen == "bar"     ? ProgressStyle::kBar
                    : chosen == "lines" ? ProgressStyle::kLines
                                        : ProgressStyle::kOff;
  }
  if (const char* interval = std::getenv("TESSERA_PROGRESS_INTERVAL_S"); interval != nullptr && *interval != '\0') {
    char* end = nullptr;
    const double seconds = std::strtod(interval, &end);
    TS_CHECK(end != interval && *end == '\0' && std::isfinite(seconds) && seconds > 0, ConfigError,
             "TESSERA_PROGRESS_INTERVAL_S='", interval,
             "' is not a number of seconds above 0 (the time between progress lines, e.g. 5 or 0.5)");
    options.interval_s = seconds;
  }
  if (!enabled) options.style = ProgressStyle::kOff;
  return options;
}

Progress::Progress(std::string label, std::vector<ProgressQuantity> quantities, ProgressOptions options)
    : label_(std::move(label)), quantities_(std::move(quantities)), options_(options) {
  TS_ASSERT(!quantities_.empty(), "a Progress needs a quantity");
  values_.assign(quantities_.size(), 0);
  start_s_ = coarse_now_s();
  next_s_ = start_s_ + (options_.style == ProgressStyle::kBar ? kBarRedrawS : options_.interval_s);
}

Progress::~Progress() {
  if (bar_on_screen_) {
    std::fputc('\n', options_.out);
    std::fflush(options_.out);
  }
}

void Progress::update(std::initializer_list<int64_t> values) {
  size_t i = 0;
  for (const int64_t v : values) {
    if (i == values_.size()) break;
    values_[i++] = v;
  }
  if (options_.style == ProgressStyle::kOff || finished_) return;
  const double now = coarse_now_s();
  if (now >= next_s_) draw(now);
}

std::string Progress::status_line(double elapsed_s) const {
  const ProgressQuantity& main = quantities_.front();
  const double done = static_cast<double>(values_.front());
  const bool bar = options_.style == ProgressStyle::kBar;
  std::string line = label_ + (bar ? " " : ": ");
  const bool has_total = main.total > 0;
  const double fraction = has_total ? std::clamp(done / static_cast<double>(main.total), 0.0, 1.0) : 0.0;
  if (bar && has_total) {
    const int filled = static_cast<int>(fraction * kBarWidth);
    line += "[" + std::string(static_cast<size_t>(filled), '#') + std::string(kBarWidth - filled, '.') + "] ";
  }
  line += format_value(main, done);
  if (has_total) {
    char percent[16];
    std::snprintf(percent, sizeof(percent), "%.0f%%", 100.0 * fraction);
    line += str_cat(" of ", format_value(main, static_cast<double>(main.total)), " (", percent, ")");
  }
  for (size_t i = 1; i < quantities_.size(); ++i) {
    line += ", " + format_value(quantities_[i], static_cast<double>(values_[i]));
    if (quantities_[i].total > 0)
      line += " of " + format_value(quantities_[i], static_cast<double>(quantities_[i].total));
  }
  const double elapsed = std::max(elapsed_s, 1e-3);
  for (size_t i = 0; i < quantities_.size(); ++i) {
    if (quantities_[i].show_rate) line += ", " + format_rate(quantities_[i], static_cast<double>(values_[i]) / elapsed);
  }
  if (!bar) line += ", " + human_duration(elapsed_s) + " elapsed";
  if (has_total) {
    if (done > 0) {
      line += ", ETA " + human_duration((static_cast<double>(main.total) - done) * elapsed / done);
    } else {
      line += ", ETA unknown";
    }
  }
  return line;
}

std::string Progress::summary_line(double elapsed_s) const {
  std::string line = label_ + ": done, " + format_value(quantities_.front(), static_cast<double>(values_.front()));
  for (size_t i = 1; i < quantities_.size(); ++i) {
    line += ", " + format_value(quantities_[i], static_cast<double>(values_[i]));
  }
  char seconds[32];
  std::snprintf(seconds, sizeof(seconds), "%.1f s", elapsed_s);
  line += str_cat(" in ", seconds);
  std::string rates;
  const double elapsed = std::max(elapsed_s, 1e-3);
  for (size_t i = 0; i < quantities_.size(); ++i) {
    if (!quantities_[i].show_rate) continue;
    rates += (rates.empty() ? "" : ", ") + format_rate(quantities_[i], static_cast<double>(values_[i]) / elapsed);
  }
  if (!rates.empty()) line += " (" + rates + ")";
  return line;
}

void Progress::draw(double now_s) {
  const std::string line = status_line(now_s - start_s_);
  if (options_.style == ProgressStyle::kBar) {
    // "\033[K" erases what a longer previous line left to the right.
    std::fprintf(options_.out, "\r%s\033[K", line.c_str());
    bar_on_screen_ = true;
    next_s_ = now_s + kBarRedrawS;
  } else {
    std::fprintf(options_.out, "%s\n", line.c_str());
    next_s_ = now_s + options_.interval_s;
  }
  std::fflush(options_.out);
  shown_ = true;
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (options_.style == ProgressStyle::kOff) return;
  if (!shown_ && !options_.summary_when_quick) return;
  const std::string line = summary_line(coarse_now_s() - start_s_);
  std::fprintf(options_.out, "%s%s\n", bar_on_screen_ ? "\r\033[K" : "", line.c_str());
  bar_on_screen_ = false;
  std::fflush(options_.out);
}

}  // namespace tessera
