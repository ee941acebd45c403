// JSON through nlohmann::json: the files Hugging Face tools read and write (safetensors headers, config.json,
// the shard index), chat templates and conversations, and every JSON line Tessera prints (metrics, eval,
// generate). Objects keep their members in insertion order (ordered_json), so what Tessera writes comes out in
// the order it was built and what it reads is seen in the file's order.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace tessera {

using Json = nlohmann::ordered_json;

// Parses one JSON document (RFC 8259) followed by nothing but whitespace. Strict: nlohmann's parser refuses
// comments, trailing commas, single quotes, NaN, leading zeros, control characters in strings and invalid UTF-8;
// this also refuses a duplicate key in an object (which would otherwise silently keep one of the values), a
// number beyond double's range, and nesting deeper than 64 levels. Throws DataError "<where>: not valid JSON at
// byte N (line L, column C): <problem>" (or, without a position, naming the duplicate key).
Json parse_json(std::string_view text, const std::string& where);

// The text of value: compact (indent < 0) or with members and items on lines of their own, indented by `indent`
// spaces per level. Bytes of a string that are not UTF-8 are written as U+FFFD rather than refused, so that any
// text (a decoded token) can be printed.
std::string dump_json(const Json& value, int indent = -1);

// One line with ", " between members or items and ": " after keys, as Python's json.dumps writes by default:
// {"step": 3, "loss": 2.5, "logliks": [-1.5, -2.25]}. The rows of metrics.jsonl and eval --json.
std::string dump_json_line(const Json& value);

}  // namespace tessera
