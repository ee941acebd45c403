// `tessera prepare`'s command line: its flags, bound to PrepareOptions (launcher/data/prepare.h), which
// prepare_command then runs. Numbers are converted and checked by CLI11 (a word where a number belongs is a usage
// error, exit 2); the relations between flags are checked by run_prepare.
#include <CLI/CLI.hpp>
#include <map>
#include <memory>
#include <string>

#include "launcher/commands/commands.h"
#include "launcher/data/prepare.h"

namespace tessera {

Command add_prepare_command(CLI::App& tessera) {
  auto options = std::make_shared<PrepareOptions>();
  CLI::App* app = tessera.add_subcommand(
      "prepare",
      "Tokenize text or JSON Lines files into Megatron-format token shards, with a SentencePiece tokenizer trained or given\n"
      "Writes PREFIX_train.{bin,idx} and PREFIX_valid.{bin,idx} (one document per sequence, each followed by the\n"
      "tokenizer's end-of-sequence token), training a SentencePiece BPE tokenizer (--tokenizer-out, --vocab-size)\n"
      "or using a given one (--tokenizer).\n"
      "With --format sft, each input line is one conversation for supervised fine-tuning, {\"prompt\": ...,\n"
      "\"response\": ...} or {\"messages\": [{\"role\": \"system\"|\"user\"|\"assistant\", \"content\": ...}, ...]},\n"
      "rendered through a chat template, and a loss mask PREFIX_{train,valid}_mask.{bin,idx} (1 for response\n"
      "tokens and their EOS) is written next to the tokens: train on it with data.loss_mask: true (docs/data.md).\n"
      "  tessera prepare --input FILE... --out PREFIX (--tokenizer-out PATH.model --vocab-size N | --tokenizer "
      "PATH.model)\n"
      "  tessera prepare --format sft --input FILE.jsonl... --tokenizer PATH.model --out PREFIX [--template "
      "NAME|FILE]");
  app->add_option("--input", options->inputs,
                  "UTF-8 text files (blank lines separate documents) or JSON Lines files (one document per\n"
                  "line); gzip'd ones are read as they are (detected by their first bytes); - reads stdin\n"
                  "(copied to a temporary file next to the output first)")
      ->type_name("FILE")
      ->expected(1, -1)
      ->required();
  app->add_option("--input-format", options->input_format,
                  "text or jsonl (default: jsonl for names ending in .jsonl or .jsonl.gz, text for the others\n"
                  "and stdin)")
      ->type_name("FORMAT");
  app->add_option("--text-key", options->text_key,
                  "jsonl: the member of each line's object that holds the text")
      ->type_name("NAME")
      ->capture_default_str();
  const std::map<std::string, InvalidUtf8> invalid_utf8 = {
      {"error", InvalidUtf8::kError}, {"replace", InvalidUtf8::kReplace}, {"skip", InvalidUtf8::kSkip}};
  app->add_option("--invalid-utf8", options->invalid_utf8,
                  "Bytes that are not UTF-8: error (default: stop, naming the file and offset), replace (each\n"
                  "bad sequence becomes U+FFFD) or skip (drop them)")
      ->type_name("MODE")
      ->transform(CLI::CheckedTransformer(invalid_utf8));
  app->add_option("--doc-separator", options->doc_separator,
                  "A line equal to LINE separates documents instead (e.g. % for fortune files)")
      ->type_name("LINE");
  app->add_option("--tokenizer-out", options->tokenizer_out,
                  "Train a SentencePiece BPE tokenizer on the inputs and save it here")
      ->type_name("PATH.model");
  app->add_option("--vocab-size", options->vocab_size, "Vocabulary size of the tokenizer to train")->type_name("N");
  app->add_option("--tokenizer", options->tokenizer, "Use this existing SentencePiece model instead of training one")
      ->type_name("PATH.model");
  app->add_option("--out", options->out_prefix, "Output prefix (its directory is created)")->type_name("PREFIX");
  app->add_option("--valid-fraction", options->valid_fraction, "Share of documents held out for validation")
      ->type_name("F")
      ->capture_default_str();
  app->add_option("--seed", options->seed, "Seed of the train/validation split")->type_name("N")->capture_default_str();
  app->add_option("--threads", options->threads, "Tokenizer threads (default 0: all hardware threads)")->type_name("N");
  app->add_option("--mc-task-out", options->mc_task_out,
                  "Also write a multiple-choice task for `tessera eval --task` from the validation documents:\n"
                  "the first half of each document's words, its true second half and three other documents'\n"
                  "second halves (JSON Lines)")
      ->type_name("FILE");
  app->add_option("--mc-task-size", options->mc_task_size, "At most N examples in it")
      ->type_name("N")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app->add_option("--format", options->format, "text, or sft (JSON Lines conversations, with a loss mask)")
      ->type_name("FORMAT")
      ->capture_default_str();
  app->add_option("--template", options->chat_template,
                  "sft: the chat template: default (<|user|>\\n...\\n<|assistant|>\\n...), chatml, or a JSON file\n"
                  "of \"system_prefix\", \"system_suffix\", \"user_prefix\", \"user_suffix\", \"assistant_prefix\",\n"
                  "\"assistant_suffix\" strings (those left out are empty)")
      ->type_name("NAME|FILE");
  Command command;
  command.app = app;
  command.run_single = [options] { return prepare_command(*options); };
  return command;
}

}  // namespace tessera
