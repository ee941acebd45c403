// The progress reporter: the plain lines of a non-terminal at a small interval, the bar redrawn in place, the
// summary line, the environment's settings and their errors.
#include "launcher/common/progress.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <regex>
#include <string>
#include <thread>

#include "core/check.h"
#include "launcher/common/human_format.h"
#include "tests/temp_dir.h"

namespace tessera {
namespace {

// What was written to a temporary FILE.
std::string contents(std::FILE* file) {
  std::fflush(file);
  std::rewind(file);
  std::string text;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) text.append(buffer, n);
  return text;
}

void sleep_s(double seconds) { std::this_thread::sleep_for(std::chrono::duration<double>(seconds)); }

std::vector<ProgressQuantity> bytes_documents_tokens(int64_t total_bytes) {
  return {{"", ProgressUnit::kBytes, total_bytes, true}, {"documents"}, {"tokens", ProgressUnit::kCount, -1, true}};
}

TEST(ProgressTest, LinesEveryIntervalThenOneSummary) {
  std::FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  ProgressOptions options;
  options.style = ProgressStyle::kLines;
  options.interval_s = 0.02;
  options.out = out;
  {
    Progress progress("prepare: tokenizing", bytes_documents_tokens(4000000), options);
    for (int i = 1; i <= 10; ++i) {
      sleep_s(0.01);
      progress.update({i * 400000, i * 10, i * 1000});
    }
    progress.finish();
    progress.finish();  // once only
  }
  const std::string text = contents(out);
  std::fclose(out);
  const std::vector<std::string> lines = split_lines(text);
  ASSERT_GE(lines.size(), 3u) << text;  // ~0.1 s of work at 0.02 s: a few lines, then the summary
  EXPECT_LE(lines.size(), 7u) << text;  // not one per update
  const std::regex line(
      R"(prepare: tokenizing: [0-9.]+ [kM]?B of 4\.0 MB \([0-9]+%\), [0-9]+ documents, [0-9.]+k? tokens, )"
      R"([0-9.]+ [kMG]?B/s, [0-9.]+[kMG]? tokens/s, [0-9]+ s elapsed, ETA [0-9]+ s)");
  for (size_t i = 0; i + 1 < lines.size(); ++i) EXPECT_TRUE(std::regex_match(lines[i], line)) << lines[i];
  const std::regex summary(
      R"(prepare: tokenizing: done, 4\.0 MB, 100 documents, 10\.0k tokens in [0-9]+\.[0-9] s \([0-9.]+ [kMG]?B/s, )"
      R"([0-9.]+[kMG]? tokens/s\))");
  EXPECT_TRUE(std::regex_match(lines.back(), summary)) << lines.back();
  EXPECT_EQ(text.find('\r'), std::string::npos);
}

TEST(ProgressTest, QuickWorkShowsOnlyItsSummaryOrNothing) {
  std::FILE* out = std::tmpfile();
  ProgressOptions options;
  options.interval_s = 60;
  options.out = out;
  {
    Progress progress("eval", {{"windows", ProgressUnit::kCount, 8}}, options);
    for (int i = 1; i <= 8; ++i) progress.update({i});
    progress.finish();
  }
  options.summary_when_quick = false;
  {
    Progress progress("checkpoint save", {{"tensors", ProgressUnit::kCount, 8}}, options);
    progress.update({8});
    progress.finish();
  }
  const std::string text = contents(out);
  std::fclose(out);
  EXPECT_TRUE(std::regex_match(text, std::regex(R"(eval: done, 8 windows in [0-9.]+ s\n)"))) << text;
}

TEST(ProgressTest, BarIsRedrawnInPlaceAndEndsWithTheSummary) {
  std::FILE* out = std::tmpfile();
  ProgressOptions options;
  options.style = ProgressStyle::kBar;
  options.out = out;
  {
    Progress progress("export", {{"tensors", ProgressUnit::kCount, 4}, {"", ProgressUnit::kBytes, -1, true}}, options);
    for (int i = 1; i <= 4; ++i) {
      sleep_s(0.25);  // past the bar's redraw time
      progress.update({i, i * 1000000});
    }
    progress.finish();
  }
  const std::string text = contents(out);
  std::fclose(out);
  EXPECT_NE(text.find("\rexport [######..................]"), std::string::npos) << text;  // 1 of 4 redraw
  EXPECT_NE(text.find("\rexport [########################] 4 tensors of 4 tensors (100%)"), std::string::npos) << text;
  EXPECT_NE(text.find("\r\033[Kexport: done, 4 tensors, 4.0 MB in"), std::string::npos) << text;
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;  // one line on the screen in the end
}

TEST(ProgressTest, AnUnfinishedBarEndsItsLine) {
  std::FILE* out = std::tmpfile();
  ProgressOptions options;
  options.style = ProgressStyle::kBar;
  options.out = out;
  {
    Progress progress("checkpoint load", {{"", ProgressUnit::kBytes, -1}}, options);
    sleep_s(0.25);
    progress.update({1000});
  }  // as when an error unwinds
  const std::string text = contents(out);
  std::fclose(out);
  EXPECT_EQ(text, "\rcheckpoint load 1.0 kB\033[K\n");
}

TEST(ProgressTest, StatusLineWithoutTotalHasNoEta) {
  ProgressOptions options;
  options.style = ProgressStyle::kOff;
  Progress progress("prepare: reading stdin", {{"", ProgressUnit::kBytes, -1, true}}, options);
  progress.update({2500000});
  EXPECT_EQ(progress.status_line(2.0), "prepare: reading stdin: 2.5 MB, 1.2 MB/s, 2 s elapsed");
  Progress eval("eval", {{"windows", ProgressUnit::kCount, 100}}, options);
  eval.update({25});
  EXPECT_EQ(eval.status_line(10.0), "eval: 25 windows of 100 windows (25%), 10 s elapsed, ETA 30 s");
  EXPECT_EQ(human_duration(185), "3 min 05 s");
  EXPECT_EQ(human_duration(7620), "2 h 07 min");
}

TEST(ProgressTest, EnvironmentSettings) {
  ::setenv("TESSERA_PROGRESS", "lines", 1);
  ::setenv("TESSERA_PROGRESS_INTERVAL_S", "0.25", 1);
  ProgressOptions options = progress_options();
  EXPECT_EQ(options.style, ProgressStyle::kLines);
  EXPECT_DOUBLE_EQ(options.interval_s, 0.25);
  EXPECT_EQ(progress_options(/*enabled=*/false).style, ProgressStyle::kOff);
  ::setenv("TESSERA_PROGRESS", "bar", 1);
  EXPECT_EQ(progress_options().style, ProgressStyle::kBar);

  ::setenv("TESSERA_PROGRESS_INTERVAL_S", "soon", 1);
  std::string message = testing::error_message<ConfigError>([] { progress_options(); });
  EXPECT_NE(message.find("TESSERA_PROGRESS_INTERVAL_S='soon' is not a number of seconds above 0"), std::string::npos)
      << message;
  ::setenv("TESSERA_PROGRESS_INTERVAL_S", "0", 1);
  EXPECT_THROW(progress_options(), ConfigError);
  ::unsetenv("TESSERA_PROGRESS_INTERVAL_S");
  ::setenv("TESSERA_PROGRESS", "fancy", 1);
  message = testing::error_message<ConfigError>([] { progress_options(); });
  EXPECT_NE(message.find("TESSERA_PROGRESS='fancy' is not one of auto"), std::string::npos) << message;
  ::unsetenv("TESSERA_PROGRESS");
  EXPECT_DOUBLE_EQ(progress_options().interval_s, 5.0);
}

}  // namespace
}  // namespace tessera
