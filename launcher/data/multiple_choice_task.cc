// Multiple-choice task files.
#include "launcher/data/multiple_choice_task.h"

#include <algorithm>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/check.h"
#include "launcher/common/durable_file.h"
#include "launcher/common/json_io.h"
#include "launcher/common/regular_file.h"
#include "launcher/data/splitmix64.h"

namespace tessera {

namespace {

constexpr char kShape[] = "{\"context\": ..., \"choices\": [...], \"label\": i}";

// The example on one line: exactly the fields of tasks::MultipleChoiceExample, with their types (context and
// choices may be left out, as protobuf's JSON mapping allows; they are then empty).
tasks::MultipleChoiceExample parse_example(const std::string& line, const std::string& where) {
  const Json json = parse_json(line, where);
  TS_CHECK(json.is_object(), DataError, where, ": not a ", kShape, " object");
  tasks::MultipleChoiceExample example;
  for (const auto& [key, value] : json.items()) {
    if (key == "context") {
      TS_CHECK(value.is_string(), DataError, where, ": not a ", kShape, " object (\"context\" must be a string)");
      example.set_context(value.get<std::string>());
    } else if (key == "choices") {
      bool strings = value.is_array();
      for (const Json& choice : value) strings = strings && choice.is_string();
      TS_CHECK(strings, DataError, where, ": not a ", kShape, " object (\"choices\" must be an array of strings)");
      for (const Json& choice : value) example.add_choices(choice.get<std::string>());
    } else if (key == "label") {
      constexpr int64_t kMin = std::numeric_limits<int32_t>::min(), kMax = std::numeric_limits<int32_t>::max();
      const bool in_range = value.is_number_unsigned()  ? value.get<uint64_t>() <= static_cast<uint64_t>(kMax)
                            : value.is_number_integer() ? value.get<int64_t>() >= kMin && value.get<int64_t>() <= kMax
                                                        : false;
      TS_CHECK(in_range, DataError, where, ": not a ", kShape, " object (\"label\" must be an integer)");
      example.set_label(static_cast<int32_t>(value.get<int64_t>()));
    } else {
      TS_CHECK(false, DataError, where, ": not a ", kShape, " object (unknown field \"", key, "\")");
    }
  }
  return example;
}

}  // namespace

std::vector<tasks::MultipleChoiceExample> read_multiple_choice_task(const std::string& path) {
  const std::string problem = regular_file_problem(path);
  TS_CHECK(problem.empty(), DataError, "--task ", path, ": ", problem, "; give a JSON Lines file of ", kShape);
  std::ifstream in(path);
  TS_CHECK(in.good(), DataError, "--task ", path, ": cannot be read");
  std::vector<tasks::MultipleChoiceExample> examples;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    const std::string where = str_cat(path, ":", number);
    TS_CHECK(line.find_first_not_of(" \t\r") != std::string::npos, DataError, where,
             ": an empty line; every line must be one ", kShape, " object");
    tasks::MultipleChoiceExample example = parse_example(line, where);
    TS_CHECK(example.choices_size() >= 2, DataError, where, ": ", example.choices_size(),
             " choice(s); a multiple-choice example needs at least two");
    TS_CHECK(example.label() >= 0 && example.label() < example.choices_size(), DataError, where, ": label ",
             example.label(), " is not the index of one of its ", example.choices_size(), " choices");
    examples.push_back(std::move(example));
  }
  TS_CHECK(!examples.empty(), DataError, "--task ", path, ": no examples in it");
  return examples;
}

void write_multiple_choice_task(const std::string& path, const std::vector<tasks::MultipleChoiceExample>& examples) {
  std::string text;
  for (const tasks::MultipleChoiceExample& example : examples) {
    const Json line = {{"context", example.context()},
                       {"choices", std::vector<std::string>(example.choices().begin(), example.choices().end())},
                       {"label", example.label()}};
    text += dump_json(line) + "\n";
  }
  write_file_atomically(path, text);
}

std::vector<tasks::MultipleChoiceExample> continuation_task(const std::vector<std::string>& documents, int count,
                                                            int distractors, uint64_t seed) {
  // Short enough that a context and a choice fit a short training sequence.
  constexpr size_t kMinWords = 6, kMaxWords = 40, kMaxBytes = 240;
  // (context, continuation) of every usable document: its words (whitespace runs become one space) halved.
  std::vector<std::pair<std::string, std::string>> halves;
  for (const std::string& document : documents) {
    std::istringstream in(document);
    std::vector<std::string> words;
    for (std::string word; in >> word;) words.push_back(word);
    if (words.size() < kMinWords || words.size() > kMaxWords || document.size() > kMaxBytes) continue;
    // The continuation starts with its space, as lm-evaluation-harness writes choices.
    const size_t half = words.size() / 2;
    std::string context = words[0], continuation;
    for (size_t w = 1; w < half; ++w) context += " " + words[w];
    for (size_t w = half; w < words.size(); ++w) continuation += " " + words[w];
    halves.emplace_back(std::move(context), std::move(continuation));
  }
  std::vector<tasks::MultipleChoiceExample> examples;
  const int64_t usable = static_cast<int64_t>(halves.size());
  if (usable < distractors + 1) return examples;
  SplitMix64 rng(hash_pair(seed, 0x6d63u));  // "mc"
  for (int64_t i = 0; i < usable && static_cast<int64_t>(examples.size()) < count; ++i) {
    std::vector<int64_t> picked{i};
    while (static_cast<int>(picked.size()) < distractors + 1) {
      const auto j = static_cast<int64_t>(rng.uniform(static_cast<uint64_t>(usable)));
      if (std::find(picked.begin(), picked.end(), j) == picked.end()) picked.push_back(j);
    }
    // Fisher-Yates over the choices; the label follows the right one.
    for (size_t k = picked.size() - 1; k > 0; --k) std::swap(picked[k], picked[rng.uniform(k + 1)]);
    tasks::MultipleChoiceExample example;
    example.set_context(halves[static_cast<size_t>(i)].first);
    for (size_t k = 0; k < picked.size(); ++k) {
      example.add_choices(halves[static_cast<size_t>(picked[k])].second);
      if (picked[k] == i) example.set_label(static_cast<int>(k));
    }
    examples.push_back(std::move(example));
  }
  return examples;
}

}  // namespace tessera
