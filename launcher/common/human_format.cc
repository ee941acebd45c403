// Formatting numbers for logs.
#include "launcher/common/human_format.h"

#include <cstdio>

namespace tessera {

std::string human_bytes(double bytes) {
  char text[32];
  if (bytes >= 1e9)
    std::snprintf(text, sizeof(text), "%.2f GB", bytes / 1e9);
  else if (bytes >= 1e6)
    std::snprintf(text, sizeof(text), "%.1f MB", bytes / 1e6);
  else if (bytes >= 1e3)
    std::snprintf(text, sizeof(text), "%.1f kB", bytes / 1e3);
  else
    std::snprintf(text, sizeof(text), "%.0f B", bytes);
  return text;
}

std::string human_count(double n) {
  char text[32];
  if (n >= 1e9)
    std::snprintf(text, sizeof(text), "%.2fG", n / 1e9);
  else if (n >= 1e6)
    std::snprintf(text, sizeof(text), "%.2fM", n / 1e6);
  else if (n >= 1e4)
    std::snprintf(text, sizeof(text), "%.1fk", n / 1e3);
  else
    std::snprintf(text, sizeof(text), "%.0f", n);
  return text;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

std::string join_lines(const std::vector<std::string>& lines, const std::string& indent) {
  std::string out;
  for (const std::string& line : lines) out += "\n" + indent + line;
  return out;
}

}  // namespace tessera
