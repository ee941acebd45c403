// Numbers and lines for people: "1.49 GB", "12.3k", lists of problems.
#pragma once

#include <string>
#include <vector>

namespace tessera {

// Bytes with a decimal unit: "950 B", "13.0 MB", "1.49 GB".
std::string human_bytes(double bytes);
// A count with a k/M/G suffix above ten thousand: "9931", "12.3k", "1.07M".
std::string human_count(double n);
// The lines of text without their '\n' (a final '\n' ends the last line; it does not start another).
std::vector<std::string> split_lines(const std::string& text);
// Each line on a new line after `indent`: "\n  - a\n  - b" (empty for no lines).
std::string join_lines(const std::vector<std::string>& lines, const std::string& indent);

}  // namespace tessera
