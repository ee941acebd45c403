// `tessera prepare`: a tokenizer trained on a small generated text, documents that decode back to their text,
// a deterministic split, thread-independent output, and clear errors for bad inputs and usage.
#include "launcher/data/prepare.h"

#include <gtest/gtest.h>
#include <sentencepiece_processor.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <zlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>
#include <vector>

#include "core/check.h"
#include "launcher/common/human_format.h"
#include "launcher/common/json_io.h"
#include "launcher/data/indexed_dataset.h"
#include "launcher/data/splitmix64.h"
#include "tests/run_command.h"
#include "tests/temp_dir.h"

namespace tessera {
namespace {

using testing::error_message;
using testing::TempDir;
using testing::write_text_file;

constexpr int kVocab = 320;

// Documents of generated text with what real text has: punctuation, digits, tabs, runs of spaces, several
// lines, and non-ASCII letters.
std::vector<std::string> make_documents(int count, uint64_t seed) {
  const std::vector<std::string> words = {"the",   "a",     "model",    "learns", "to",   "predict", "next",  "token",
                                          "from",  "text",  "every",    "layer",  "has",  "heads",   "and",   "weights",
                                          "of",    "rank",  "pipeline", "stage",  "data", "shards",  "café",  "naïve",
                                          "Größe", "über",  "42",       "2048",   "loss", "falls",   "quick", "brown",
                                          "fox",   "jumps", "over",     "lazy",   "dog",  "while",   "GPUs",  "idle,"};
  SplitMix64 rng(seed);
  std::vector<std::string> documents;
  for (int d = 0; d < count; ++d) {
    std::string text;
    const int lines = 1 + static_cast<int>(rng.uniform(3));
    for (int l = 0; l < lines; ++l) {
      if (l > 0) text += '\n';
      if (rng.uniform(4) == 0) text += '\t';
      const int length = 3 + static_cast<int>(rng.uniform(9));
      for (int w = 0; w < length; ++w) {
        if (w > 0) text += rng.uniform(8) == 0 ? "  " : " ";
        text += words[rng.uniform(words.size())];
      }
      text += rng.uniform(2) == 0 ? "." : "!";
    }
    documents.push_back(text);
  }
  return documents;
}

std::string join(const std::vector<std::string>& documents, const std::string& separator_line) {
  std::string text;
  for (const auto& document : documents) {
    text += document + "\n" + separator_line + "\n";
  }
  return text;
}

std::string decode(const sentencepiece::SentencePieceProcessor& tokenizer, std::vector<int32_t> tokens) {
  EXPECT_FALSE(tokens.empty());
  EXPECT_EQ(tokens.back(), tokenizer.eos_id());
  tokens.pop_back();
  std::string text;
  EXPECT_TRUE(tokenizer.Decode(std::vector<int>(tokens.begin(), tokens.end()), &text).ok());
  return text;
}

std::vector<std::string> decode_all(const std::string& prefix, const std::string& tokenizer_path) {
  sentencepiece::SentencePieceProcessor tokenizer;
  EXPECT_TRUE(tokenizer.Load(tokenizer_path).ok());
  const IndexedDataset ds = IndexedDataset::open(prefix);
  ds.check_vocab(tokenizer.GetPieceSize());
  std::vector<std::string> texts;
  for (int64_t i = 0; i < ds.num_documents(); ++i) texts.push_back(decode(tokenizer, ds.document(i)));
  return texts;
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

class PrepareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    documents_ = make_documents(120, 1);
    input_ = dir_.file("corpus.txt");
    write_text_file(input_, join(documents_, ""));
  }
  PrepareOptions train_options(const std::string& out) {
    PrepareOptions options;
    options.inputs = {input_};
    options.tokenizer_out = dir_.file("tok.model");
    options.vocab_size = kVocab;
    options.out_prefix = dir_.file(out);
    options.threads = 2;
    return options;
  }

  TempDir dir_;
  std::vector<std::string> documents_;
  std::string input_;
};

TEST_F(PrepareTest, TrainsTokenizerAndDocumentsDecodeBack) {
  PrepareOptions options = train_options("out/corpus");
  options.valid_fraction = 0;
  const PrepareSummary summary = run_prepare(options);
  EXPECT_EQ(summary.documents, 120);
  EXPECT_EQ(summary.train_documents, 120);
  EXPECT_EQ(summary.valid_documents, 0);
  EXPECT_EQ(summary.vocab_size, kVocab);
  EXPECT_TRUE(summary.trained_tokenizer);
  EXPECT_EQ(summary.train_prefix, dir_.file("out/corpus_train"));

  const auto texts = decode_all(summary.train_prefix, options.tokenizer_out);
  ASSERT_EQ(texts.size(), documents_.size());
  EXPECT_EQ(texts[0], documents_[0]);
  EXPECT_EQ(texts, documents_);
  const IndexedDataset ds = IndexedDataset::open(summary.train_prefix);
  EXPECT_EQ(ds.dtype(), IndexedDType::kUInt16);
  EXPECT_EQ(ds.num_tokens(), summary.train_tokens);
  EXPECT_EQ(IndexedDataset::open(summary.valid_prefix).num_documents(), 0);
  EXPECT_FALSE(std::filesystem::exists(options.tokenizer_out + ".tmp"));
}

TEST_F(PrepareTest, SplitIsDeterministicAndKeepsOrder) {
  PrepareOptions options = train_options("a");
  options.valid_fraction = 0.25;
  const PrepareSummary a = run_prepare(options);
  EXPECT_GT(a.valid_documents, 10);
  EXPECT_GT(a.train_documents, 60);
  EXPECT_EQ(a.train_documents + a.valid_documents, 120);

  // Each split holds its documents in input order; together they hold them all.
  const auto train = decode_all(a.train_prefix, options.tokenizer_out);
  const auto valid = decode_all(a.valid_prefix, options.tokenizer_out);
  size_t t = 0, v = 0;
  for (const auto& document : documents_) {
    if (t < train.size() && train[t] == document) {
      ++t;
    } else if (v < valid.size() && valid[v] == document) {
      ++v;
    }
  }
  EXPECT_EQ(t, train.size());
  EXPECT_EQ(v, valid.size());

  // Same seed with the saved tokenizer: the same bytes. Another seed: another split.
  PrepareOptions again = options;
  again.tokenizer = options.tokenizer_out;
  again.tokenizer_out.clear();
  again.vocab_size = 0;
  again.out_prefix = dir_.file("b");
  const PrepareSummary b = run_prepare(again);
  EXPECT_FALSE(b.trained_tokenizer);
  EXPECT_TRUE(file_bytes(a.valid_prefix + ".idx") == file_bytes(b.valid_prefix + ".idx"));
  EXPECT_TRUE(file_bytes(a.train_prefix + ".bin") == file_bytes(b.train_prefix + ".bin"));
  again.seed = 99;
  again.out_prefix = dir_.file("c");
  const PrepareSummary c = run_prepare(again);
  EXPECT_TRUE(file_bytes(a.valid_prefix + ".bin") != file_bytes(c.valid_prefix + ".bin"));
}

TEST_F(PrepareTest, OutputDoesNotDependOnThreads) {
  PrepareOptions one = train_options("one");
  one.threads = 1;
  PrepareOptions three = train_options("three");
  three.threads = 3;
  three.tokenizer_out = dir_.file("tok3.model");
  run_prepare(one);
  run_prepare(three);
  // The model files differ only in the thread count they record; the pieces must be the same.
  sentencepiece::SentencePieceProcessor a, b;
  ASSERT_TRUE(a.Load(one.tokenizer_out).ok());
  ASSERT_TRUE(b.Load(three.tokenizer_out).ok());
  ASSERT_EQ(a.GetPieceSize(), b.GetPieceSize());
  for (int id = 0; id < a.GetPieceSize(); ++id) ASSERT_EQ(a.IdToPiece(id), b.IdToPiece(id)) << id;
  for (const char* suffix : {"_train.bin", "_train.idx", "_valid.bin", "_valid.idx"}) {
    EXPECT_TRUE(file_bytes(one.out_prefix + suffix) == file_bytes(three.out_prefix + suffix)) << suffix;
  }
}

TEST_F(PrepareTest, SeparatorLinesKeepBlankLinesInsideDocuments) {
  PrepareOptions options = train_options("fortunes");
  options.valid_fraction = 0;
  options.doc_separator = "%";
  // Train on the main corpus (the tiny fortune file has too little text for the vocabulary).
  run_prepare(options);
  options.inputs = {dir_.file("fortunes.txt")};
  options.tokenizer = options.tokenizer_out;
  options.tokenizer_out.clear();
  options.vocab_size = 0;
  write_text_file(options.inputs[0], "%\nthe fox\n\n  jumps over\n\n%\n\n\n%\nlazy dog!\n%\n");
  const PrepareSummary summary = run_prepare(options);
  EXPECT_EQ(summary.documents, 2);
  EXPECT_EQ(decode_all(summary.train_prefix, options.tokenizer),
            (std::vector<std::string>{"the fox\n\n  jumps over", "lazy dog!"}));
}

TEST_F(PrepareTest, TwoDocumentsGiveOneToEachSplit) {
  PrepareOptions options = train_options("two");
  run_prepare(options);
  options.tokenizer = options.tokenizer_out;
  options.tokenizer_out.clear();
  options.vocab_size = 0;
  options.inputs = {dir_.file("two.txt")};
  write_text_file(options.inputs[0], "the fox.\n\n\nthe dog.\n");
  const PrepareSummary summary = run_prepare(options);
  EXPECT_EQ(summary.train_documents, 1);
  EXPECT_EQ(summary.valid_documents, 1);
}

TEST_F(PrepareTest, InputErrorsNameTheFile) {
  PrepareOptions options = train_options("x");
  options.inputs = {input_, dir_.file("missing.txt")};
  std::string message = error_message<ConfigError>([&] { run_prepare(options); });
  EXPECT_TRUE(contains(message, "--input " + dir_.file("missing.txt") + ": no such file; the directory " +
                                    dir_.path().string() + " exists but holds no missing.txt"))
      << message;

  options.inputs = {dir_.path().string()};
  message = error_message<DataError>([&] { run_prepare(options); });
  EXPECT_TRUE(contains(message, "is a directory")) << message;

  write_text_file(dir_.file("blank.txt"), "\n   \n\t\n");
  options.inputs = {dir_.file("blank.txt")};
  message = error_message<DataError>([&] { run_prepare(options); });
  EXPECT_TRUE(contains(message, "no documents in " + dir_.file("blank.txt"))) << message;
}

TEST_F(PrepareTest, TokenizerErrorsNameTheFile) {
  PrepareOptions options = train_options("x");
  options.tokenizer_out.clear();
  options.vocab_size = 0;
  options.tokenizer = dir_.file("missing.model");
  std::string message = error_message<DataError>([&] { run_prepare(options); });
  EXPECT_TRUE(contains(message, dir_.file("missing.model") + ": does not exist")) << message;

  options.tokenizer = dir_.path().string();
  message = error_message<DataError>([&] { run_prepare(options); });
  EXPECT_TRUE(contains(message, dir_.path().string() + ": is a directory, not a file")) << message;

  options.tokenizer = dir_.file("garbage.model");
  write_text_file(options.tokenizer, "this is not a model");
  message = error_message<DataError>([&] { run_prepare(options); });
  EXPECT_TRUE(contains(message, dir_.file("garbage.model") + ": not a SentencePiece model")) << message;
}

TEST_F(PrepareTest, VocabularySizeOutOfReach) {
  PrepareOptions options = train_options("x");
  options.vocab_size = 100;
  std::string message = error_message<DataError>([&] { run_prepare(options); });
  EXPECT_TRUE(contains(message, "--vocab-size 100 is too small")) << message;
  options.vocab_size = 20000;  // far more pieces than this little text can make
  message = error_message<DataError>([&] { run_prepare(options); });
  EXPECT_TRUE(contains(message, "use a smaller --vocab-size")) << message;
  EXPECT_FALSE(std::filesystem::exists(options.tokenizer_out));
}

TEST_F(PrepareTest, InconsistentOptions) {
  PrepareOptions options = train_options("x");
  options.tokenizer = dir_.file("tok.model");
  EXPECT_THROW(run_prepare(options), ConfigError);  // both --tokenizer and --tokenizer-out
  options = train_options("x");
  options.vocab_size = 0;
  EXPECT_THROW(run_prepare(options), ConfigError);
  options = train_options("x");
  options.valid_fraction = 1.5;
  EXPECT_THROW(run_prepare(options), ConfigError);
  options = train_options("x");
  options.inputs.clear();
  EXPECT_THROW(run_prepare(options), ConfigError);
  options = train_options("x");
  options.out_prefix.clear();
  EXPECT_THROW(run_prepare(options), ConfigError);
}

TEST_F(PrepareTest, InvalidUtf8IsRefusedWithFileOffsetAndLineUnlessReplacedOrSkipped) {
  // Line 3 holds a Latin-1 'e' with acute accent (0xe9): not UTF-8.
  const std::string text = "first line\nsecond line\ncaf\xe9 au lait\n\nnext document \xe2\x82\xac ok\n";
  const std::string latin1 = dir_.file("latin1.txt");
  write_text_file(latin1, join(documents_, "") + text);
  const int64_t offset = static_cast<int64_t>(join(documents_, "").size()) + 26;  // the 0xe9 byte
  PrepareOptions options = train_options("utf8");
  options.inputs = {latin1};
  std::string message = error_message<DataError>([&] { run_prepare(options); });
  EXPECT_TRUE(contains(message, latin1 + ": not valid UTF-8 at byte offset " + std::to_string(offset))) << message;
  EXPECT_TRUE(contains(message, "bytes 0xe9 0x20")) << message;
  EXPECT_TRUE(contains(message, "--invalid-utf8 replace")) << message;
  EXPECT_FALSE(std::filesystem::exists(options.tokenizer_out));

  options.invalid_utf8 = InvalidUtf8::kReplace;
  PrepareSummary summary = run_prepare(options);
  EXPECT_EQ(summary.invalid_utf8, 1);
  options.invalid_utf8 = InvalidUtf8::kSkip;
  options.out_prefix = dir_.file("utf8_skip");
  summary = run_prepare(options);
  EXPECT_EQ(summary.invalid_utf8, 1);

  // A binary file is refused, not tokenized.
  std::string binary;
  for (int i = 0; i < 4096; ++i) binary.push_back(static_cast<char>((i * 7919) & 0xff));
  write_text_file(dir_.file("data.bin"), binary);
  options = train_options("binary");
  options.inputs = {dir_.file("data.bin")};
  message = error_message<DataError>([&] { run_prepare(options); });
  EXPECT_TRUE(contains(message, "data.bin: not valid UTF-8 at byte offset")) << message;
}

TEST_F(PrepareTest, NonRegularInputsAndAnEmptyTrainSplitAreRefused) {
  const std::string fifo = dir_.file("pipe.txt");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  PrepareOptions options = train_options("fifo");
  options.inputs = {fifo};
  std::string message = error_message<DataError>([&] { run_prepare(options); });
  EXPECT_TRUE(contains(message, fifo + ": is a FIFO (named pipe), not a regular file")) << message;

  options = train_options("all_valid");
  options.valid_fraction = 1.0;
  message = error_message<ConfigError>([&] { run_prepare(options); });
  EXPECT_TRUE(contains(message, "--valid-fraction 1 holds out every document, leaving no training data")) << message;
}

// `tessera prepare` as a user runs it: the flags (with --flag=value too), its summary, and the usage errors (exit 2).
TEST_F(PrepareTest, CommandLine) {
  const std::string tessera = TESSERA_BINARY;
  const auto r =
      tessera::testing::run_command(tessera + " prepare --input " + input_ + " " + input_ + " --tokenizer-out " +
                                    dir_.file("cli.model") + " --vocab-size=" + std::to_string(kVocab) + " --out " +
                                    dir_.file("cli") + " --valid-fraction 0.1 --seed=7 --threads 2");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "prepared 240 documents")) << r.output;
  EXPECT_TRUE(contains(r.output, "train: ")) << r.output;
  EXPECT_TRUE(IndexedDataset::open(dir_.file("cli_valid")).num_documents() > 0);

  const auto help = tessera::testing::run_command(tessera + " prepare --help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_TRUE(contains(help.output, "Usage: tessera prepare")) << help.output;

  for (const std::string& bad :
       {"--inptu " + input_, "--input " + input_ + " --vocab-size many", "--input " + input_ + " --out",
        std::string("--input"), "--input " + input_ + " --invalid-utf8 ignore",
        "--input " + input_ + " --mc-task-size 0"}) {
    const auto e = tessera::testing::run_command(tessera + " prepare " + bad);
    EXPECT_EQ(e.exit_code, 2) << bad << "\n" << e.output;
    EXPECT_TRUE(contains(e.output, "`tessera prepare --help`")) << bad << "\n" << e.output;
  }
}

// The binary turns errors into a message and an exit code, never a crash. A missing input is a usage error
// (exit 2) whose message says where the relative path was looked for.
TEST_F(PrepareTest, BinaryReportsErrors) {
  const std::string command = "cd " + dir_.path().string() + " && " + std::string(TESSERA_BINARY) +
                              " prepare --input corpus.txt sub/missing.txt --tokenizer t.model --out o 2> " +
                              dir_.file("stderr.txt");
  int status = std::system(command.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
  const std::string message = file_bytes(dir_.file("stderr.txt"));
  const std::string dir = std::filesystem::canonical(dir_.path()).string();
  EXPECT_TRUE(contains(message, "--input sub/missing.txt: no such file; it resolves to " + dir +
                                    "/sub/missing.txt, relative to the working directory " + dir + "; the directory " +
                                    dir + "/sub does not exist (" + dir + " is the nearest that does). Check the path"))
      << message;

  // A data error (a tokenizer that is not one) is a failed run: exit 1.
  write_text_file(dir_.file("t.model"), "not a model");
  const std::string data_command = std::string(TESSERA_BINARY) + " prepare --input " + input_ + " --tokenizer " +
                                   dir_.file("t.model") + " --out " + dir_.file("o") + " 2> " + dir_.file("stderr.txt");
  status = std::system(data_command.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_TRUE(contains(file_bytes(dir_.file("stderr.txt")), "t.model: not a SentencePiece model"));
}

// The documents as JSON Lines: each an object with the text under `key` among other members.
std::string jsonl(const std::vector<std::string>& documents, const std::string& key) {
  std::string text;
  for (size_t i = 0; i < documents.size(); ++i) {
    Json line = Json::object();
    line["id"] = static_cast<int64_t>(i);
    line[key] = documents[i];
    line["source"] = "test";
    text += dump_json(line) + "\n";
  }
  return text;
}

// Writes text gzip'd at path, as two gzip members (as `cat a.gz b.gz` makes) when split is between 0 and size.
void write_gzip(const std::string& path, const std::string& text, size_t split) {
  for (const auto& [begin, end] : {std::pair<size_t, size_t>{0, split}, {split, text.size()}}) {
    if (begin == end) continue;
    gzFile file = gzopen(path.c_str(), begin == 0 ? "wb" : "ab");
    ASSERT_NE(file, nullptr);
    ASSERT_EQ(gzwrite(file, text.data() + begin, static_cast<unsigned>(end - begin)), static_cast<int>(end - begin));
    ASSERT_EQ(gzclose(file), Z_OK);
  }
}

// JSON Lines (named .jsonl or not, gzip'd or not, from stdin) give the very tokens of the same documents as text.
TEST_F(PrepareTest, JsonlGzipAndStdinGiveTheTokensOfText) {
  PrepareOptions options = train_options("text");
  run_prepare(options);
  const std::string text_bin = file_bytes(dir_.file("text_train.bin"));
  const std::string text_valid = file_bytes(dir_.file("text_valid.bin"));
  ASSERT_FALSE(text_bin.empty());
  const auto same_tokens = [&](const std::string& out) {
    EXPECT_EQ(file_bytes(dir_.file(out + "_train.bin")), text_bin) << out;
    EXPECT_EQ(file_bytes(dir_.file(out + "_valid.bin")), text_valid) << out;
    EXPECT_EQ(file_bytes(dir_.file(out + "_train.idx")), file_bytes(dir_.file("text_train.idx"))) << out;
  };
  PrepareOptions use = options;
  use.tokenizer_out.clear();
  use.vocab_size = 0;
  use.tokenizer = dir_.file("tok.model");

  const std::string lines = jsonl(documents_, "text");
  write_text_file(dir_.file("corpus.jsonl"), lines);
  use.inputs = {dir_.file("corpus.jsonl")};  // the format from the name
  use.out_prefix = dir_.file("jsonl");
  EXPECT_EQ(run_prepare(use).documents, 120);
  same_tokens("jsonl");

  write_gzip(dir_.file("corpus.jsonl.gz"), lines, lines.size() / 3);
  use.inputs = {dir_.file("corpus.jsonl.gz")};
  use.out_prefix = dir_.file("gz");
  EXPECT_EQ(run_prepare(use).documents, 120);
  same_tokens("gz");

  // Another key, a name that says nothing (the format given), blank lines: skipped.
  write_gzip(dir_.file("corpus.data"), "\n" + jsonl(documents_, "body") + "\n \n", 0);
  use.inputs = {dir_.file("corpus.data")};
  use.input_format = "jsonl";
  use.text_key = "body";
  use.out_prefix = dir_.file("body");
  EXPECT_EQ(run_prepare(use).documents, 120);
  same_tokens("body");

  // A gzip'd text file; the tokenizer trained on it is the same one.
  write_gzip(dir_.file("corpus.txt.gz"), join(documents_, ""), 1000);
  PrepareOptions train = train_options("textgz");
  train.inputs = {dir_.file("corpus.txt.gz")};
  train.tokenizer_out = dir_.file("tokgz.model");
  run_prepare(train);
  EXPECT_EQ(file_bytes(dir_.file("tokgz.model")), file_bytes(dir_.file("tok.model")));
  EXPECT_EQ(file_bytes(dir_.file("textgz_train.bin")), text_bin);

  // stdin, through the command as a user runs it: JSON Lines and gzip'd JSON Lines, and training from stdin.
  const std::string tessera = TESSERA_BINARY;
  const std::string tail = " --tokenizer " + dir_.file("tok.model") + " --threads 2 --out " + dir_.file("stdin");
  testing::CommandResult r = testing::run_command("cat " + dir_.file("corpus.jsonl") + " | " + tessera +
                                                  " prepare --input - --input-format jsonl" + tail);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  same_tokens("stdin");
  r = testing::run_command(tessera + " prepare --input - --input-format jsonl" + tail + " < " +
                           dir_.file("corpus.jsonl.gz"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  same_tokens("stdin");
  r = testing::run_command("cat " + input_ + " | " + tessera + " prepare --input - --tokenizer-out " +
                           dir_.file("tokstdin.model") + " --vocab-size " + std::to_string(kVocab) +
                           " --threads 2 --out " + dir_.file("stdintrain"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(file_bytes(dir_.file("tokstdin.model")), file_bytes(dir_.file("tok.model")));
  EXPECT_EQ(file_bytes(dir_.file("stdintrain_train.bin")), text_bin);
  // The copy of stdin is gone.
  for (const auto& entry : std::filesystem::directory_iterator(dir_.path())) {
    EXPECT_FALSE(contains(entry.path().filename().string(), ".stdin-")) << entry.path();
  }
  r = testing::run_command(tessera + " prepare --input - - --input-format jsonl" + tail + " < /dev/null");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "stdin can be read once")) << r.output;
}

TEST_F(PrepareTest, BadJsonlLinesNameTheFileAndLine) {
  PrepareOptions options = train_options("bad");
  const std::string path = dir_.file("bad.jsonl");
  options.inputs = {path};
  const std::string good = jsonl({documents_[0], documents_[1]}, "text");
  const auto message_for = [&](const std::string& third_line) {
    write_text_file(path, good + third_line + "\n" + jsonl({documents_[2]}, "text"));
    return error_message<DataError>([&] { run_prepare(options); });
  };
  std::string message = message_for(R"(["an", "array"])");
  EXPECT_TRUE(contains(message, path + ":3: a JSON array, not an object; --input-format jsonl reads one JSON object "
                                       "per line, with the text under \"text\" (--text-key)"))
      << message;
  message = message_for(R"({"id": 7, "body": "words"})");
  EXPECT_TRUE(contains(message, path + ":3: no member \"text\" in this line's object (it has \"id\", \"body\"); "
                                       "name the member that holds the text with --text-key NAME"))
      << message;
  message = message_for(R"({"text": 12})");
  EXPECT_TRUE(contains(message, path + ":3: \"text\" is a number, not a string")) << message;
  message = message_for(R"({"text": "unterminated)");
  EXPECT_TRUE(contains(message, path + ":3: ")) << message;
  EXPECT_TRUE(contains(message, "--input-format jsonl reads one JSON object per line")) << message;
  EXPECT_FALSE(std::filesystem::exists(options.tokenizer_out));

  // A damaged gzip file is an error too, not a short corpus.
  std::string bytes;
  write_gzip(dir_.file("cut.jsonl.gz"), jsonl(documents_, "text"), 0);
  bytes = file_bytes(dir_.file("cut.jsonl.gz"));
  write_text_file(dir_.file("cut.jsonl.gz"), bytes.substr(0, bytes.size() / 2));
  options.inputs = {dir_.file("cut.jsonl.gz")};
  message = error_message<DataError>([&] { run_prepare(options); });
  EXPECT_TRUE(contains(message, "cut.jsonl.gz: the gzip stream is truncated")) << message;

  options.input_format = "csv";
  EXPECT_THROW(run_prepare(options), ConfigError);
}

// On a non-terminal, each pass prints a line every TESSERA_PROGRESS_INTERVAL_S seconds and a summary line, on
// stderr; stdout keeps only the results.
TEST_F(PrepareTest, ProgressLinesOnANonTerminal) {
  run_prepare(train_options("first"));  // the tokenizer
  write_text_file(dir_.file("big.txt"), join(make_documents(20000, 3), ""));
  const std::string command = "TESSERA_PROGRESS=auto TESSERA_PROGRESS_INTERVAL_S=0.02 " + std::string(TESSERA_BINARY) +
                              " prepare --input " + dir_.file("big.txt") + " --tokenizer " + dir_.file("tok.model") +
                              " --threads 1 --out " + dir_.file("big") + " 2> " + dir_.file("stderr.txt") + " > " +
                              dir_.file("stdout.txt");
  const int status = std::system(command.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0) << file_bytes(dir_.file("stderr.txt"));
  const std::string err = file_bytes(dir_.file("stderr.txt"));
  EXPECT_EQ(err.find('\r'), std::string::npos);
  EXPECT_FALSE(contains(file_bytes(dir_.file("stdout.txt")), "prepare: tokenizing"));
  const std::regex progress(
      R"(prepare: tokenizing: [0-9.]+ [kM]?B of [0-9.]+ MB \([0-9]+%\), [0-9.]+k? documents of 20\.0k documents, )"
      R"([0-9.]+[kM]? tokens, [0-9.]+ [kM]?B/s, [0-9.]+[kM]? tokens/s, [0-9]+ s elapsed, ETA [0-9]+ s)");
  const std::regex summary(
      R"(prepare: tokenizing: done, [0-9.]+ MB, 20\.0k documents, [0-9.]+[kM] tokens in [0-9.]+ s )"
      R"(\([0-9.]+ [kM]?B/s, [0-9.]+[kM]? tokens/s\))");
  int progress_lines = 0, summaries = 0;
  std::string last;
  for (const std::string& line : split_lines(err)) {
    if (line.rfind("prepare: tokenizing", 0) != 0) continue;
    last = line;
    if (std::regex_match(line, progress)) {
      ++progress_lines;
    } else {
      EXPECT_TRUE(std::regex_match(line, summary)) << line;
      ++summaries;
    }
  }
  EXPECT_GE(progress_lines, 2) << err;
  EXPECT_EQ(summaries, 1) << err;
  EXPECT_TRUE(std::regex_match(last, summary)) << err;  // the summary comes last
  EXPECT_TRUE(contains(err, "prepare: counting documents: done, ")) << err;
}

}  // namespace
}  // namespace tessera
