// Chat templates, JSON Lines conversations and their rendering. See Note [SFT rendering].
#include "launcher/data/chat_template.h"

#include <fstream>
#include <sstream>

#include "core/check.h"
#include "launcher/common/json_io.h"
#include "launcher/common/regular_file.h"

namespace tessera {

bool builtin_chat_template(const std::string& name, ChatTemplate* out) {
  if (name == "default") {
    *out = ChatTemplate{"<|system|>\n", "\n", "<|user|>\n", "\n", "<|assistant|>\n", ""};
    return true;
  }
  if (name == "chatml") {
    *out = ChatTemplate{"<|im_start|>system\n",    "<|im_end|>\n", "<|im_start|>user\n", "<|im_end|>\n",
                        "<|im_start|>assistant\n", "<|im_end|>\n"};
    return true;
  }
  return false;
}

ChatTemplate load_chat_template(const std::string& name_or_file) {
  ChatTemplate result;
  if (builtin_chat_template(name_or_file, &result)) return result;
  const std::string problem = regular_file_problem(name_or_file);
  TS_CHECK(problem.empty(), DataError, "--template ", name_or_file, ": ", problem,
           "; pass a built-in template (default, chatml) or a JSON file of role prefixes and suffixes");
  std::ifstream in(name_or_file, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  TS_CHECK(in.good() || in.eof(), DataError, name_or_file, ": cannot read the template");
  const Json json = parse_json(text.str(), name_or_file);
  TS_CHECK(json.is_object(), DataError, name_or_file,
           ": a template is a JSON object of role prefixes and suffixes, e.g. {\"user_prefix\": \"User: \"}");
  for (const auto& [key, value] : json.items()) {
    std::string* field = key == "system_prefix"      ? &result.system_prefix
                         : key == "system_suffix"    ? &result.system_suffix
                         : key == "user_prefix"      ? &result.user_prefix
                         : key == "user_suffix"      ? &result.user_suffix
                         : key == "assistant_prefix" ? &result.assistant_prefix
                         : key == "assistant_suffix" ? &result.assistant_suffix
                                                     : nullptr;
    TS_CHECK(field != nullptr, DataError, name_or_file, ": unknown template member \"", key,
             "\"; the members are system_prefix, system_suffix, user_prefix, user_suffix, assistant_prefix and ",
             "assistant_suffix");
    TS_CHECK(value.is_string(), DataError, name_or_file, ": \"", key, "\" must be a string");
    *field = value.get<std::string>();
  }
  return result;
}

namespace {

const std::string& string_member(const Json& object, const std::string& key, const std::string& where,
                                 const std::string& what) {
  const auto value = object.find(key);
  TS_CHECK(value != object.end(), DataError, where, ": ", what, " has no \"", key, "\" field");
  TS_CHECK(value->is_string(), DataError, where, ": ", what, "'s \"", key, "\" must be a string");
  return value->get_ref<const std::string&>();
}

}  // namespace

std::vector<ChatTurn> parse_chat_line(const std::string& line, const std::string& where) {
  const char* expected =
      "; each line is {\"prompt\": ..., \"response\": ...} or {\"messages\": [{\"role\": ..., \"content\": ...}, "
      "...]}";
  bool blank = true;
  for (char c : line) blank = blank && (c == ' ' || c == '\t' || c == '\r');
  TS_CHECK(!blank, DataError, where, ": empty line", expected);
  const Json json = parse_json(line, where);
  TS_CHECK(json.is_object(), DataError, where, ": not a JSON object", expected);
  const auto messages = json.find("messages");
  const bool has_messages = messages != json.end();
  const bool pair = json.contains("prompt") || json.contains("response");
  TS_CHECK(has_messages || pair, DataError, where, ": neither \"prompt\"/\"response\" nor \"messages\"", expected);
  TS_CHECK(!has_messages || !pair, DataError, where, ": both \"messages\" and \"prompt\"/\"response\"", expected);
  std::vector<ChatTurn> turns;
  if (pair) {
    turns.push_back({ChatRole::kUser, string_member(json, "prompt", where, "the line")});
    turns.push_back({ChatRole::kAssistant, string_member(json, "response", where, "the line")});
    return turns;
  }
  TS_CHECK(messages->is_array(), DataError, where, ": \"messages\" must be an array", expected);
  bool has_assistant = false;
  for (size_t i = 0; i < messages->size(); ++i) {
    const Json& message = (*messages)[i];
    const std::string what = str_cat("message ", i);
    TS_CHECK(message.is_object(), DataError, where, ": ", what, " is not an object {\"role\": ..., \"content\": ...}");
    const std::string& role = string_member(message, "role", where, what);
    ChatTurn turn;
    if (role == "system") {
      turn.role = ChatRole::kSystem;
    } else if (role == "user") {
      turn.role = ChatRole::kUser;
    } else if (role == "assistant") {
      turn.role = ChatRole::kAssistant;
      has_assistant = true;
    } else {
      TS_CHECK(false, DataError, where, ": ", what, " has the unknown role \"", role,
               "\"; the roles are system, user and assistant");
    }
    turn.content = string_member(message, "content", where, what);
    turns.push_back(std::move(turn));
  }
  TS_CHECK(has_assistant, DataError, where,
           ": the chat has no assistant turn, so nothing of it would count in the loss; add the response as "
           "{\"role\": \"assistant\", \"content\": ...}");
  return turns;
}

std::vector<ChatPiece> render_chat(const std::vector<ChatTurn>& turns, const ChatTemplate& t) {
  std::vector<ChatPiece> pieces;
  auto add = [&](const std::string& text, bool counted) {
    if (!text.empty()) pieces.push_back({text, counted, false});
  };
  for (const ChatTurn& turn : turns) {
    switch (turn.role) {
      case ChatRole::kSystem:
        add(t.system_prefix, false);
        add(turn.content, false);
        add(t.system_suffix, false);
        break;
      case ChatRole::kUser:
        add(t.user_prefix, false);
        add(turn.content, false);
        add(t.user_suffix, false);
        break;
      case ChatRole::kAssistant:
        add(t.assistant_prefix, false);
        add(turn.content, true);
        pieces.push_back({"", true, true});
        add(t.assistant_suffix, false);
        break;
    }
  }
  return pieces;
}

}  // namespace tessera
