// JSON: nlohmann's parser with a callback that adds the checks it does not make, and the two layouts we write.
#include "launcher/common/json_io.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "core/check.h"

namespace tessera {

namespace {

constexpr int kMaxDepth = 64;

// nlohmann's message without its "[json.exception.parse_error.101] parse error at line 1, column 2: " prefix.
std::string reason(const nlohmann::json::exception& e) {
  std::string text = e.what();
  if (text.rfind("[json.exception.", 0) == 0 && text.find("] ") != std::string::npos) {
    text = text.substr(text.find("] ") + 2);
  }
  if (text.rfind("parse error", 0) == 0 && text.find(": ") != std::string::npos) {
    text = text.substr(text.find(": ") + 2);
  }
  return text;
}

void append_line(std::string& out, const Json& value) {
  if (value.is_object()) {
    out += '{';
    bool first = true;
    for (const auto& [key, member] : value.items()) {
      if (!first) out += ", ";
      first = false;
      out += dump_json(Json(key));
      out += ": ";
      append_line(out, member);
    }
    out += '}';
  } else if (value.is_array()) {
    out += '[';
    for (size_t i = 0; i < value.size(); ++i) {
      if (i > 0) out += ", ";
      append_line(out, value[i]);
    }
    out += ']';
  } else {
    out += dump_json(value);
  }
}

}  // namespace

Json parse_json(std::string_view text, const std::string& where) {
  // The keys seen so far in each object being parsed, innermost last.
  std::vector<std::set<std::string>> keys;
  const Json::parser_callback_t check = [&](int depth, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        TS_CHECK(depth < kMaxDepth, DataError, where, ": not valid JSON: nested deeper than ", kMaxDepth, " levels");
        if (event == Json::parse_event_t::object_start) keys.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        keys.pop_back();
        break;
      case Json::parse_event_t::key:
        TS_CHECK(keys.back().insert(parsed.get<std::string>()).second, DataError, where, ": duplicate key \"",
                 parsed.get<std::string>(), "\" in a JSON object; give each key once");
        break;
      default:
        break;
    }
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), check);
  } catch (const Json::parse_error& e) {
    // e.byte counts the bytes read, the offending one included.
    const size_t at = std::min(e.byte, text.size() + 1);
    const std::string_view before = text.substr(0, at > 0 ? at - 1 : 0);
    const size_t line = 1 + static_cast<size_t>(std::count(before.begin(), before.end(), '\n'));
    const size_t line_start = before.rfind('\n') == std::string_view::npos ? 0 : before.rfind('\n') + 1;
    throw DataError(str_cat(where, ": not valid JSON at byte ", e.byte, " (line ", line, ", column ", at - line_start,
                            "): ", reason(e)));
  } catch (const Json::exception& e) {  // a number out of range
    throw DataError(str_cat(where, ": not valid JSON: ", reason(e)));
  }
}

std::string dump_json(const Json& value, int indent) {
  return value.dump(indent, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace);
}

std::string dump_json_line(const Json& value) {
  std::string out;
  append_line(out, value);
  return out;
}

}  // namespace tessera
