// Multiple-choice task files: JSON Lines of tasks::MultipleChoiceExample (proto/tasks.proto), read and written
// with nlohmann::json: {"context": "...", "choices": ["...", "..."], "label": 0} per line. `tessera prepare
// --mc-task-out` writes one from held-out documents; `tessera eval --task` scores one (launcher/run/multiple_choice.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "proto/tasks.pb.h"

namespace tessera {

// The examples of a JSON Lines file, one MultipleChoiceExample per line. Throws DataError naming the file and
// line for a line that is empty or not such an object, fewer than two choices, or a label out of range.
std::vector<tasks::MultipleChoiceExample> read_multiple_choice_task(const std::string& path);
// Writes examples as JSON Lines (what read_multiple_choice_task reads), atomically.
void write_multiple_choice_task(const std::string& path, const std::vector<tasks::MultipleChoiceExample>& examples);

// A continuation task from documents (each one's words split in half: the first half is the context, the
// second the right choice; `distractors` other documents' second halves are the wrong ones), for documents of
// 6 to 40 words (240 bytes at most), at most `count` examples, choices in an order drawn from seed. Fewer when there
// are too few usable documents (none with fewer than distractors + 1).
std::vector<tasks::MultipleChoiceExample> continuation_task(const std::vector<std::string>& documents, int count,
                                                            int distractors, uint64_t seed);

}  // namespace tessera
