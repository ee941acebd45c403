// `tessera prepare`: text or JSON Lines files (gzip'd or not, or stdin) -> SentencePiece tokenizer (trained or given)
// -> Megatron indexed datasets PREFIX_train.{bin,idx} and PREFIX_valid.{bin,idx}, each document's tokens followed by
// the tokenizer's EOS.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

// What to do with bytes of an input that are not valid UTF-8 (a binary file, text in another encoding).
enum class InvalidUtf8 {
  kError,    // stop, naming the file, the byte offset and the line (the default)
  kReplace,  // replace each maximal invalid sequence by U+FFFD, as Python's errors="replace" does
  kSkip,     // drop the invalid bytes
};

struct PrepareOptions {
  // "text": documents of plain text. "sft": JSON Lines conversations for supervised fine-tuning
  // (launcher/data/chat_template.h), written with a loss mask PREFIX_{train,valid}_mask.{bin,idx} (uint8 0/1,
  // one per token); needs `tokenizer`.
  std::string format = "text";
  // "sft": a built-in chat template name or a JSON template file (load_chat_template).
  std::string chat_template = "default";
  // UTF-8 text files (JSON Lines files for "sft"), read in this order; any of them may be gzip'd (detected by
  // its first bytes, 1f 8b). "-" is stdin (at most once), copied first to a temporary file next to the output
  // (Note [Input from stdin] in prepare.cc).
  std::vector<std::string> inputs;
  // "text": documents of plain text (doc_separator). "jsonl": JSON Lines, one document per line, the string
  // member text_key of each line's object; a line that is not an object or lacks the member (or holds no
  // string there) is an error naming file:line; blank lines are skipped. "": per input, jsonl if its name ends
  // in .jsonl or .jsonl.gz, text otherwise (stdin: text). Format "sft" ignores it (always JSON Lines).
  std::string input_format;
  std::string text_key = "text";
  InvalidUtf8 invalid_utf8 = InvalidUtf8::kError;
  // A line equal to this separates documents; empty: runs of blank (whitespace-only) lines separate them.
  // Blank lines at the start and end of a document are dropped; whitespace-only documents are skipped; a
  // document never spans two files.
  std::string doc_separator;
  // Exactly one of: train a tokenizer with vocab_size pieces and save it at tokenizer_out, or load tokenizer.
  std::string tokenizer_out;
  int vocab_size = 0;
  std::string tokenizer;
  // Output prefix; its directory is created if missing.
  std::string out_prefix;
  // Share of documents held out for validation, in [0, 1). Documents are assigned by a hash of
  // (seed, document index); with at least 2 documents and 0 < valid_fraction < 1 each split gets at least one.
  double valid_fraction = 0.02;
  uint64_t seed = 1234;
  // Tokenizer threads; 0 means all hardware threads. The output does not depend on it.
  int threads = 0;
  // If set: a multiple-choice continuation task (launcher/data/multiple_choice_task.h) from the validation
  // documents, at most mc_task_size examples of one true and three false continuations, written here.
  std::string mc_task_out;
  int mc_task_size = 200;
};

struct PrepareSummary {
  int64_t documents = 0;
  int64_t train_documents = 0;
  int64_t valid_documents = 0;
  int64_t train_tokens = 0;
  int64_t valid_tokens = 0;
  int64_t text_bytes = 0;
  int64_t invalid_utf8 = 0;  // invalid sequences replaced or skipped (InvalidUtf8::kReplace, kSkip)
  int vocab_size = 0;
  bool trained_tokenizer = false;
  std::string tokenizer_path;
  std::string train_prefix;      // out_prefix + "_train"
  std::string valid_prefix;      // out_prefix + "_valid"
  int64_t mc_task_examples = 0;  // written to PrepareOptions::mc_task_out
  int64_t loss_tokens = 0;       // "sft": tokens whose mask is 1 (responses and their EOS), both splits
  double tokenizer_seconds = 0;
  double total_seconds = 0;
};

// Runs the whole preparation, showing its progress on stderr (launcher/common/progress.h). Throws ConfigError
// for inconsistent options and for an input that does not exist (naming the path as given, the absolute path
// it resolved to and the working directory it was relative to), and DataError for unreadable,
// empty or unsuitable inputs and tokenizers, each naming the file and what to do. The tokenizer is trained
// with SentencePiece BPE: identity normalization (text is kept as is, newlines included), byte fallback,
// character coverage 1.0, digits split, ids unk=0 bos=1 eos=2, no padding piece. Writes nothing to stdout.
PrepareSummary run_prepare(const PrepareOptions& options);

// `tessera prepare` once its command line is parsed (launcher/commands/prepare_command.cc): runs run_prepare and
// prints a summary to stdout. Returns the process exit code (0). Throws the errors of run_prepare().
int prepare_command(const PrepareOptions& options);

}  // namespace tessera
