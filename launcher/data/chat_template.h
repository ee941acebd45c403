// Supervised fine-tuning data (`tessera prepare --format sft`): conversations read from JSON Lines, rendered
// through a chat template into pieces of text, each marked as counted in the loss or not.
//
// Note [SFT rendering]. A conversation is a list of turns (role, content). Each turn renders as
//   system, user:  role prefix, content, role suffix                  (all not counted)
//   assistant:     role prefix (not counted), content (counted), EOS (counted), role suffix (not counted)
// The pieces are tokenized one by one and concatenated, so the boundary between counted and uncounted tokens
// falls exactly between two pieces. The EOS directly after the response is what a generator stops on.
#pragma once

#include <string>
#include <vector>

namespace tessera {

enum class ChatRole { kSystem, kUser, kAssistant };

struct ChatTurn {
  ChatRole role = ChatRole::kUser;
  std::string content;
};

// The markup around each role's content. Plain text: it is tokenized like the content.
struct ChatTemplate {
  std::string system_prefix, system_suffix;
  std::string user_prefix, user_suffix;
  std::string assistant_prefix, assistant_suffix;
};

// The built-in templates by name:
//   default  <|system|>\n{content}\n   <|user|>\n{content}\n   <|assistant|>\n{content}<EOS>
//   chatml   <|im_start|>system\n{content}<|im_end|>\n ... <|im_start|>assistant\n{content}<EOS><|im_end|>\n
// Returns false for an unknown name.
bool builtin_chat_template(const std::string& name, ChatTemplate* out);

// `--template NAME|FILE`: a built-in name, or a JSON file whose object may set any of the six strings
// "system_prefix", "system_suffix", "user_prefix", "user_suffix", "assistant_prefix", "assistant_suffix" (those
// left out are empty). Throws DataError naming the file for an unreadable file, bad JSON, a member that is not a
// string or an unknown member.
ChatTemplate load_chat_template(const std::string& name_or_file);

// One JSON Lines record as a conversation: {"prompt": P, "response": R} is the chat user P, assistant R;
// {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]} is the chat itself. `where` is
// "FILE:LINE" and starts every error message. Throws DataError for an empty line, malformed JSON, a line that
// is not an object, has neither prompt/response nor messages (or both), lacks a field, has a field of the wrong
// type, an unknown role, or no assistant turn.
std::vector<ChatTurn> parse_chat_line(const std::string& line, const std::string& where);

// A piece of rendered text and whether its tokens count in the loss.
struct ChatPiece {
  std::string text;
  bool counted = false;
  bool eos = false;  // the end-of-sequence token instead of text (counted)
};

// The pieces of a conversation under a template, in order (Note [SFT rendering]); empty texts are left out.
std::vector<ChatPiece> render_chat(const std::vector<ChatTurn>& turns, const ChatTemplate& chat_template);

}  // namespace tessera
