// `tessera prepare`: reads documents from text or JSON Lines files (gzip'd or not, or stdin), trains or loads a
// SentencePiece tokenizer, tokenizes in parallel and writes the train and validation splits as Megatron indexed
// datasets.
//
// The inputs are streamed three times (count, train the tokenizer, tokenize) so memory stays bounded by one
// batch of documents plus what SentencePiece keeps for training; each pass shows its progress on stderr
// (launcher/common/progress.h).
#include "launcher/data/prepare.h"

#include <fmt/format.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "core/check.h"
#include "launcher/common/human_format.h"
#include "launcher/common/json_io.h"
#include "launcher/common/progress.h"
#include "launcher/common/regular_file.h"
#include "launcher/data/chat_template.h"
#include "launcher/data/indexed_dataset.h"
#include "launcher/data/line_reader.h"
#include "launcher/data/multiple_choice_task.h"
#include "launcher/data/splitmix64.h"

namespace tessera {
namespace {

constexpr uint64_t kSplitStream = 0x7370'6c69'7400'0004ULL;
// Pieces SentencePiece adds before any character: unk, bos, eos and the 256 byte-fallback pieces.
constexpr int kReservedPieces = 3 + 256;
// Documents per tokenization batch, and text bytes: whichever is reached first ends the batch.
constexpr size_t kBatchDocuments = 16384;
constexpr size_t kBatchBytes = 16 << 20;
// SentencePiece keeps at most this many documents (a uniform sample) for training.
constexpr int kTrainingDocuments = 1000000;
// Longer documents are left out of tokenizer training (they are still tokenized).
constexpr int kMaxTrainingDocumentBytes = 1 << 20;

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

bool is_blank(const std::string& line) {
  return std::all_of(line.begin(), line.end(), [](unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); });
}

// The length of the valid UTF-8 sequence starting at text[i] (1 to 4), or 0 when it is not valid: a stray
// continuation byte, an overlong form, a surrogate, a code point above U+10FFFF, or a truncated sequence
// (RFC 3629). `*invalid` then gets the length of the maximal invalid prefix (at least 1), which U+FFFD
// replaces (the Unicode "maximal subpart" practice).
size_t utf8_sequence(const std::string& text, size_t i, size_t* invalid) {
  const auto byte = [&](size_t k) { return i + k < text.size() ? static_cast<unsigned char>(text[i + k]) : 0; };
  const unsigned char lead = byte(0);
  if (lead < 0x80) return 1;
  size_t length = 0;
  unsigned char low = 0x80, high = 0xbf;  // the allowed range of the second byte
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    if (lead == 0xe0) low = 0xa0;   // overlong
    if (lead == 0xed) high = 0x9f;  // surrogates
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    if (lead == 0xf0) low = 0x90;   // overlong
    if (lead == 0xf4) high = 0x8f;  // above U+10FFFF
  } else {
    *invalid = 1;
    return 0;
  }
  for (size_t k = 1; k < length; ++k) {
    const unsigned char c = byte(k);
    const bool ok = i + k < text.size() && (k == 1 ? c >= low && c <= high : c >= 0x80 && c <= 0xbf);
    if (!ok) {
      *invalid = k;
      return 0;
    }
  }
  return length;
}

// One input as prepare reads it: the file to open (stdin's temporary copy for "-"), its name in messages and
// its format.
struct InputSource {
  std::string path;
  std::string name;
  bool jsonl = false;
  int64_t bytes = 0;  // the file's size
};

int64_t total_bytes(const std::vector<InputSource>& sources) {
  int64_t bytes = 0;
  for (const InputSource& source : sources) bytes += source.bytes;
  return bytes;
}

// The text of one JSON Lines document: the string member `key` of the object on the line. Throws DataError
// naming `where` (file:line). Kept to this one function so the JSON library under it can change.
std::string jsonl_text(const std::string& line, const std::string& key, const std::string& where) {
  const char* hint = "; --input-format jsonl reads one JSON object per line";
  Json value;
  try {
    value = parse_json(line, where);
  } catch (const DataError& e) {
    TS_CHECK(false, DataError, e.what(), hint);
  }
  TS_CHECK(value.is_object(), DataError, where, ": a JSON ", value.type_name(), ", not an object", hint,
           ", with the text under \"", key, "\" (--text-key)");
  const auto text = value.find(key);
  if (text == value.end()) {
    std::string keys;
    for (const auto& member : value.items()) {
      if (keys.size() > 200) {
        keys += ", ...";
        break;
      }
      keys += (keys.empty() ? "\"" : ", \"") + member.key() + "\"";
    }
    TS_CHECK(false, DataError, where, ": no member \"", key, "\" in this line's object (",
             keys.empty() ? std::string("it is empty") : "it has " + keys,
             "); name the member that holds the text with --text-key NAME");
  }
  TS_CHECK(text->is_string(), DataError, where, ": \"", key, "\" is a ", text->type_name(),
           ", not a string of text; name the member that holds the text with --text-key NAME");
  return text->get<std::string>();
}

// Streams the documents of several inputs; see PrepareOptions::doc_separator and input_format for the rules.
// Each line is checked to be UTF-8 and handled as PrepareOptions::invalid_utf8 says (in JSON Lines, before
// the line is parsed).
class DocumentReader {
 public:
  DocumentReader(const std::vector<InputSource>& sources, const PrepareOptions& options)
      : sources_(sources),
        separator_(options.doc_separator),
        text_key_(options.text_key),
        invalid_utf8_(options.invalid_utf8) {}

  // Invalid UTF-8 sequences replaced or skipped so far.
  int64_t invalid_sequences() const { return invalid_sequences_; }
  // Bytes of the input files consumed so far (compressed bytes of gzip'd ones).
  int64_t bytes_read() const { return finished_bytes_ + (reader_ ? reader_->bytes_read() : 0); }

  // The next document into *document; false after the last. Throws DataError if a file cannot be read.
  bool next(std::string* document) {
    document->clear();
    int pending_blank_lines = 0;
    std::string line;
    while (true) {
      if (!reader_) {
        if (file_index_ == sources_.size()) return false;
        const InputSource& source = sources_[file_index_++];
        reader_ = std::make_unique<LineReader>(source.path, source.name);
        current_ = &source;
        offset_ = 0;
        line_number_ = 0;
      }
      if (!reader_->next(&line)) {
        finished_bytes_ += reader_->bytes_read();
        reader_.reset();
        if (!document->empty()) return true;
        continue;
      }
      ++line_number_;
      const int64_t line_bytes = static_cast<int64_t>(line.size());
      check_utf8(line);
      offset_ += line_bytes + 1;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      const bool blank = is_blank(line);
      if (current_->jsonl) {
        if (blank) continue;
        *document = jsonl_text(line, text_key_, str_cat(current_->name, ":", line_number_));
        if (is_blank(*document)) {  // skipped, as whitespace-only text documents are
          document->clear();
          continue;
        }
        return true;
      }
      const bool separates = separator_.empty() ? blank : line == separator_;
      if (separates) {
        if (!document->empty()) return true;
        continue;
      }
      if (blank) {
        if (!document->empty()) ++pending_blank_lines;
        continue;
      }
      if (!document->empty()) document->append(static_cast<size_t>(pending_blank_lines) + 1, '\n');
      pending_blank_lines = 0;
      document->append(line);
    }
  }

 private:
  // Validates one line (before offset_ moves past it); replaces or drops invalid sequences, or throws.
  void check_utf8(std::string& line) {
    std::string fixed;
    size_t copied = 0;
    for (size_t i = 0; i < line.size();) {
      size_t invalid = 0;
      const size_t length = utf8_sequence(line, i, &invalid);
      if (length > 0) {
        i += length;
        continue;
      }
      if (invalid_utf8_ == InvalidUtf8::kError) {
        std::string bytes;
        for (size_t k = 0; k < 4 && i + k < line.size(); ++k) {
          bytes += fmt::format("{}0x{:02x}", k ? " " : "", static_cast<unsigned char>(line[i + k]));
        }
        TS_CHECK(false, DataError, current_->name, ": not valid UTF-8 at ", reader_->gzipped() ? "uncompressed " : "",
                 "byte offset ", offset_ + static_cast<int64_t>(i), " (line ", line_number_, ", bytes ", bytes,
                 "). Is it a text file? Convert text in another ",
                 "encoding to UTF-8 first (e.g. iconv -f LATIN1 -t UTF-8), or pass --invalid-utf8 replace (U+FFFD ",
                 "for each bad sequence) or --invalid-utf8 skip (drop the bad bytes)");
      }
      fixed.append(line, copied, i - copied);
      if (invalid_utf8_ == InvalidUtf8::kReplace) fixed.append("\xef\xbf\xbd");
      ++invalid_sequences_;
      i += invalid;
      copied = i;
    }
    if (copied == 0) return;
    fixed.append(line, copied, std::string::npos);
    line = std::move(fixed);
  }

  const std::vector<InputSource>& sources_;
  const std::string& separator_;
  const std::string& text_key_;
  InvalidUtf8 invalid_utf8_;
  size_t file_index_ = 0;
  std::unique_ptr<LineReader> reader_;
  const InputSource* current_ = nullptr;
  int64_t finished_bytes_ = 0;
  int64_t offset_ = 0;       // of the current line in its file (uncompressed)
  int64_t line_number_ = 0;  // 1-based, of the current line
  int64_t invalid_sequences_ = 0;
};

// Feeds documents to the SentencePiece trainer (which reads them all, then samples and trains), showing the
// progress of that reading.
class TrainingDocuments : public sentencepiece::SentenceIterator {
 public:
  TrainingDocuments(const std::vector<InputSource>& sources, const PrepareOptions& options, int64_t documents)
      : reader_(sources, options),
        vocab_size_(options.vocab_size),
        progress_("prepare: reading for the tokenizer", {{"", ProgressUnit::kBytes, total_bytes(sources), true},
                                                         {"documents", ProgressUnit::kCount, documents}}) {
    Next();
  }
  bool done() const override { return done_; }
  void Next() override {
    try {
      done_ = !reader_.next(&value_);
      if (!done_) ++documents_;
      progress_.update({reader_.bytes_read(), documents_});
      if (done_) {
        progress_.finish();
        // SentencePiece's training shows no progress of its own: say what the wait is for.
        if (progress_options().style != ProgressStyle::kOff) {
          std::fprintf(stderr,
                       "prepare: training a BPE tokenizer of %d pieces on %s documents (a sample of at most %s)\n",
                       vocab_size_, human_count(static_cast<double>(documents_)).c_str(),
                       human_count(kTrainingDocuments).c_str());
        }
      }
    } catch (const Error& e) {
      status_ = sentencepiece::util::Status(sentencepiece::util::StatusCode::kDataLoss, e.what());
      done_ = true;
    }
  }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return status_; }

 private:
  DocumentReader reader_;
  int vocab_size_;
  Progress progress_;
  int64_t documents_ = 0;
  std::string value_;
  bool done_ = false;
  sentencepiece::util::Status status_;
};

struct CorpusStats {
  int64_t documents = 0;
  int64_t bytes = 0;
  int64_t distinct_characters = 0;  // UTF-8 code points, space included (SentencePiece's "required chars")
  int64_t invalid_utf8 = 0;         // sequences replaced or skipped
};

// Counts documents, bytes and (when count_characters) distinct code points in one pass.
CorpusStats scan_corpus(const std::vector<InputSource>& sources, const PrepareOptions& options, bool count_characters) {
  CorpusStats stats;
  std::set<uint32_t> characters;
  characters.insert(' ');  // SentencePiece always needs its whitespace piece
  DocumentReader reader(sources, options);
  Progress progress("prepare: counting documents",
                    {{"", ProgressUnit::kBytes, total_bytes(sources), true}, {"documents"}});
  std::string document;
  while (reader.next(&document)) {
    ++stats.documents;
    stats.bytes += static_cast<int64_t>(document.size());
    progress.update({reader.bytes_read(), stats.documents});
    if (!count_characters) continue;
    for (size_t i = 0; i < document.size();) {
      const auto lead = static_cast<unsigned char>(document[i]);
      const size_t length = lead < 0x80 ? 1 : lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
      uint32_t code = 0;
      for (size_t k = 0; k < length && i + k < document.size(); ++k) {
        code = code << 8 | static_cast<unsigned char>(document[i + k]);
      }
      characters.insert(code);
      i += length;
    }
  }
  progress.update({reader.bytes_read(), stats.documents});
  progress.finish();
  stats.distinct_characters = static_cast<int64_t>(characters.size());
  stats.invalid_utf8 = reader.invalid_sequences();
  return stats;
}

std::string inputs_for_message(const std::vector<std::string>& inputs) {
  std::string text = inputs.front();
  if (inputs.size() > 1) text += str_cat(" and ", inputs.size() - 1, " more");
  return text;
}

void make_parent_directory(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) return;
  std::error_code error;
  std::filesystem::create_directories(parent, error);
  TS_CHECK(!error, DataError, parent.string(), ": cannot create this output directory (", error.message(),
           "); choose another output path");
}

// Writes bytes to path through a temporary file and a rename, so a partial file never has the final name.
void write_file(const std::string& path, const std::string& bytes) {
  make_parent_directory(path);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    TS_CHECK(out.is_open(), DataError, tmp, ": cannot create; check that the directory is writable");
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    TS_CHECK(!out.fail(), DataError, tmp, ": cannot write; check free disk space");
  }
  std::error_code error;
  std::filesystem::rename(tmp, path, error);
  TS_CHECK(!error, DataError, path, ": cannot move into place (", error.message(), ")");
}

std::string read_file(const std::string& path, const char* what_to_do) {
  const std::string problem = regular_file_problem(path);
  TS_CHECK(problem.empty(), DataError, path, ": ", problem, "; ", what_to_do);
  std::ifstream in(path, std::ios::binary);
  TS_CHECK(in.is_open(), DataError, path, ": cannot open; ", what_to_do);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  TS_CHECK(!in.bad(), DataError, path, ": read error; ", what_to_do);
  return bytes.str();
}

// Trains the BPE tokenizer and returns the serialized model.
std::string train_tokenizer(const std::vector<InputSource>& sources, const PrepareOptions& options,
                            const CorpusStats& stats, int threads) {
  const int64_t needed = kReservedPieces + stats.distinct_characters;
  TS_CHECK(options.vocab_size >= needed, DataError, "--vocab-size ", options.vocab_size, " is too small for ",
           inputs_for_message(options.inputs), ": the tokenizer needs ", kReservedPieces,
           " special and byte pieces plus one per distinct character (", stats.distinct_characters, "), so at least ",
           needed, "; use a larger --vocab-size");
  const std::unordered_map<std::string, std::string> flags = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(options.vocab_size)},
      {"character_coverage", "1.0"},
      {"byte_fallback", "true"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"max_sentence_length", std::to_string(kMaxTrainingDocumentBytes)},
      {"input_sentence_size", std::to_string(kTrainingDocuments)},
      {"shuffle_input_sentence", "true"},
      {"num_threads", std::to_string(std::clamp(threads, 1, 128))},
      {"minloglevel", "2"},  // SentencePiece's progress log off; errors come back as a Status
  };
  TrainingDocuments documents(sources, options, stats.documents);
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(flags, &documents, &model);
  TS_CHECK(status.ok(), DataError, "cannot train a tokenizer with --vocab-size ", options.vocab_size, " on ",
           inputs_for_message(options.inputs), ": ", status.ToString(),
           ". If the vocabulary is too large for this much text, use a smaller --vocab-size");
  return model;
}

std::unique_ptr<sentencepiece::SentencePieceProcessor> load_tokenizer(const std::string& model,
                                                                      const std::string& path) {
  auto processor = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = processor->LoadFromSerializedProto(model);
  TS_CHECK(status.ok(), DataError, path, ": not a SentencePiece model (", status.ToString(),
           "); pass a .model file written by `tessera prepare --tokenizer-out` or spm_train");
  return processor;
}

// Tokenizes documents[i] into tokens[i] (+ EOS) with one processor per thread; thread t takes i = t mod n.
void tokenize_batch(const std::vector<std::unique_ptr<sentencepiece::SentencePieceProcessor>>& processors,
                    const std::vector<std::string>& documents, int eos_id, std::vector<std::vector<int>>& tokens,
                    const std::string& tokenizer_path) {
  tokens.resize(documents.size());
  const size_t workers = std::min(processors.size(), std::max<size_t>(documents.size(), 1));
  std::vector<std::string> errors(workers);
  auto work = [&](size_t worker) {
    for (size_t i = worker; i < documents.size(); i += workers) {
      const auto status = processors[worker]->Encode(documents[i], &tokens[i]);
      if (!status.ok()) {
        errors[worker] = status.ToString();
        return;
      }
      tokens[i].push_back(eos_id);
    }
  };
  if (workers == 1) {
    work(0);
  } else {
    std::vector<std::thread> threads;
    threads.reserve(workers);
    for (size_t w = 0; w < workers; ++w) threads.emplace_back(work, w);
    for (auto& thread : threads) thread.join();
  }
  for (const auto& error : errors) {
    TS_CHECK(error.empty(), DataError, tokenizer_path, ": tokenization failed (", error, ")");
  }
}

// valid[i]: document i goes to the validation split. See PrepareOptions::valid_fraction.
std::vector<bool> split_documents(int64_t documents, double valid_fraction, uint64_t seed) {
  std::vector<bool> valid(static_cast<size_t>(documents));
  if (valid_fraction <= 0) return valid;
  int64_t valid_count = 0, lowest = 0, highest = 0;
  double lowest_u = 2, highest_u = -1;
  for (int64_t i = 0; i < documents; ++i) {
    const double u = static_cast<double>(hash_pair(seed ^ kSplitStream, static_cast<uint64_t>(i)) >> 11) * 0x1.0p-53;
    valid[static_cast<size_t>(i)] = u < valid_fraction;
    valid_count += valid[static_cast<size_t>(i)];
    if (u < lowest_u) lowest_u = u, lowest = i;
    if (u > highest_u) highest_u = u, highest = i;
  }
  if (documents >= 2 && valid_fraction < 1) {
    if (valid_count == 0) valid[static_cast<size_t>(lowest)] = true;
    if (valid_count == documents) valid[static_cast<size_t>(highest)] = false;
  }
  return valid;
}

// "--input data/a.txt: no such file; it resolves to /home/u/data/a.txt, relative to the working directory
// /home/u; the directory /home/u/data does not exist. ...": what was looked for where, so that a path relative
// to the wrong directory (a job script started elsewhere) is plain to see.
std::string missing_input_message(const std::string& input) {
  namespace fs = std::filesystem;
  std::error_code error;
  const fs::path given(input);
  const fs::path cwd = fs::current_path(error);
  const fs::path resolved = (given.is_absolute() ? given : cwd / given).lexically_normal();
  std::string message = str_cat("--input ", input, ": no such file");
  if (!given.is_absolute()) {
    message += str_cat("; it resolves to ", resolved.string(), ", relative to the working directory ", cwd.string());
  }
  const fs::path parent = resolved.parent_path();
  if (fs::is_directory(parent, error)) {
    message += str_cat("; the directory ", parent.string(), " exists but holds no ", resolved.filename().string());
  } else {
    fs::path existing = parent;
    while (existing.has_relative_path() && !fs::is_directory(existing, error)) existing = existing.parent_path();
    message += str_cat("; the directory ", parent.string(), " does not exist (", existing.string(),
                       " is the nearest that does)");
  }
  return message +
         ". Check the path: give it relative to the directory tessera prepare runs in, or as an "
         "absolute path";
}

// Note [Input from stdin]. prepare reads its inputs more than once (counting the documents, training the
// tokenizer, tokenizing) and stdin can be read only once, so `--input -` first copies stdin to a temporary
// file next to the output (PREFIX.stdin-<pid>.tmp, deleted when prepare ends, also on errors) and reads that.
// The copy is what stdin held: gzip'd bytes stay gzip'd and are detected as in a file.
class StdinCopy {
 public:
  explicit StdinCopy(const std::string& out_prefix) {
    TS_CHECK(!::isatty(STDIN_FILENO), ConfigError,
             "--input - reads stdin, which is a terminal here: pipe the text in, e.g. `zcat corpus.jsonl.gz | tessera "
             "prepare --input - --input-format jsonl ...`");
    make_parent_directory(out_prefix);
    path_ = str_cat(out_prefix, ".stdin-", ::getpid(), ".tmp");
    std::FILE* out = std::fopen(path_.c_str(), "wb");
    TS_CHECK(out != nullptr, DataError, path_, ": cannot create the copy of stdin (", std::strerror(errno),
             "); check that the output directory is writable");
    Progress progress("prepare: reading stdin", {{"", ProgressUnit::kBytes, -1, true}});
    std::vector<char> buffer(1 << 20);
    int64_t copied = 0;
    bool failed = false;
    while (true) {
      const ssize_t n = ::read(STDIN_FILENO, buffer.data(), buffer.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        failed = n < 0;
        break;
      }
      if (std::fwrite(buffer.data(), 1, static_cast<size_t>(n), out) != static_cast<size_t>(n)) {
        std::fclose(out);
        TS_CHECK(false, DataError, path_, ": cannot write the copy of stdin (", std::strerror(errno),
                 "); check free disk space");
      }
      copied += n;
      progress.update({copied});
    }
    const int read_errno = errno;
    const bool closed = std::fclose(out) == 0;
    TS_CHECK(!failed, DataError, "stdin: read error (", std::strerror(read_errno), ")");
    TS_CHECK(closed, DataError, path_, ": cannot write the copy of stdin; check free disk space");
    progress.finish();
  }
  ~StdinCopy() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  StdinCopy(const StdinCopy&) = delete;
  StdinCopy& operator=(const StdinCopy&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The inputs to read, "-" replaced by stdin's copy; each one's format (PrepareOptions::input_format).
std::vector<InputSource> input_sources(const PrepareOptions& options, const StdinCopy* stdin_copy) {
  std::vector<InputSource> sources;
  for (const std::string& input : options.inputs) {
    InputSource source;
    const bool from_stdin = input == "-";
    source.path = from_stdin ? stdin_copy->path() : input;
    source.name = from_stdin ? "stdin" : input;
    source.jsonl = options.input_format.empty()
                       ? !from_stdin && (ends_with(input, ".jsonl") || ends_with(input, ".jsonl.gz"))
                       : options.input_format == "jsonl";
    std::error_code error;
    const auto size = std::filesystem::file_size(source.path, error);
    source.bytes = error ? 0 : static_cast<int64_t>(size);
    sources.push_back(std::move(source));
  }
  return sources;
}

void check_options(const PrepareOptions& options) {
  const char* help = " (see `tessera prepare --help`)";
  TS_CHECK(!options.inputs.empty(), ConfigError, "no input files: pass them with --input FILE...", help);
  TS_CHECK(!options.out_prefix.empty(), ConfigError, "no output prefix: pass --out PREFIX", help);
  TS_CHECK(options.tokenizer.empty() != options.tokenizer_out.empty(), ConfigError,
           "pass exactly one of --tokenizer PATH.model (use an existing tokenizer) and --tokenizer-out PATH.model "
           "(train one)",
           help);
  TS_CHECK(options.tokenizer_out.empty() || options.vocab_size > 0, ConfigError,
           "--tokenizer-out needs --vocab-size N, the size of the vocabulary to train", help);
  TS_CHECK(options.tokenizer.empty() || options.vocab_size == 0, ConfigError,
           "--vocab-size applies only when training a tokenizer with --tokenizer-out; an existing tokenizer ",
           "brings its own vocabulary", help);
  TS_CHECK(options.valid_fraction >= 0 && options.valid_fraction <= 1, ConfigError,
           "--valid-fraction must be between 0 and 1, got ", options.valid_fraction, help);
  TS_CHECK(options.valid_fraction < 1, ConfigError,
           "--valid-fraction 1 holds out every document, leaving no training data; use a share below 1, "
           "e.g. 0.02 (or 0 for no validation split)",
           help);
  TS_CHECK(options.threads >= 0, ConfigError, "--threads must be 0 (all hardware threads) or more, got ",
           options.threads, help);
  TS_CHECK(options.input_format.empty() || options.input_format == "text" || options.input_format == "jsonl",
           ConfigError, "--input-format takes text or jsonl, not '", options.input_format, "'", help);
  TS_CHECK(!options.text_key.empty(), ConfigError, "--text-key needs the name of the member that holds the text", help);
  TS_CHECK(std::count(options.inputs.begin(), options.inputs.end(), "-") <= 1, ConfigError,
           "--input names - (stdin) more than once; stdin can be read once", help);
  for (const auto& input : options.inputs) {
    if (input == "-") continue;
    const std::string problem = regular_file_problem(input);
    if (problem.empty()) continue;
    TS_CHECK(problem != "does not exist", ConfigError, missing_input_message(input));
    std::error_code error;
    TS_CHECK(!std::filesystem::is_directory(input, error), DataError, input,
             ": is a directory; pass the files in it, e.g. --input ", input, "/*");
    TS_CHECK(false, DataError, input, ": ", problem, "; --input takes text files");
  }
}

// `--format sft`: JSON Lines conversations -> tokens and a loss mask (Note [SFT rendering]). Every line is read
// and checked before anything is written, so a bad line leaves no output behind.
PrepareSummary run_sft_prepare(const std::vector<InputSource>& sources, const PrepareOptions& options) {
  const auto start = Clock::now();
  TS_CHECK(options.tokenizer_out.empty(), ConfigError,
           "--format sft tokenizes with an existing tokenizer, the one the model was pretrained with: pass "
           "--tokenizer PATH.model instead of --tokenizer-out (see `tessera prepare --help`)");
  TS_CHECK(options.mc_task_out.empty() && options.doc_separator.empty(), ConfigError,
           "--mc-task-out and --doc-separator apply to --format text only (see `tessera prepare --help`)");
  const ChatTemplate chat_template = load_chat_template(options.chat_template);

  PrepareSummary summary;
  std::vector<std::vector<ChatTurn>> conversations;
  Progress reading("prepare: reading conversations",
                   {{"", ProgressUnit::kBytes, total_bytes(sources), true}, {"conversations"}});
  int64_t finished_bytes = 0;
  for (const InputSource& source : sources) {
    LineReader in(source.path, source.name);
    std::string line;
    for (int64_t number = 1; in.next(&line); ++number) {
      summary.text_bytes += static_cast<int64_t>(line.size()) + 1;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      conversations.push_back(parse_chat_line(line, str_cat(source.name, ":", number)));
      reading.update({finished_bytes + in.bytes_read(), static_cast<int64_t>(conversations.size())});
    }
    finished_bytes += in.bytes_read();
  }
  reading.update({finished_bytes, static_cast<int64_t>(conversations.size())});
  reading.finish();
  TS_CHECK(!conversations.empty(), DataError, "no conversations in ", inputs_for_message(options.inputs),
           ": the input is empty; --format sft reads one JSON object per line");

  const std::string model = read_file(options.tokenizer, "pass an existing SentencePiece .model file with --tokenizer");
  summary.tokenizer_path = options.tokenizer;
  const auto processor = load_tokenizer(model, summary.tokenizer_path);
  const int eos_id = processor->eos_id();
  TS_CHECK(eos_id >= 0, DataError, summary.tokenizer_path,
           ": the tokenizer has no end-of-sequence piece, which ends every response; train it with an eos_id ",
           "(as `tessera prepare --tokenizer-out` does)");
  summary.vocab_size = processor->GetPieceSize();
  summary.documents = static_cast<int64_t>(conversations.size());

  make_parent_directory(options.out_prefix);
  summary.train_prefix = options.out_prefix + "_train";
  summary.valid_prefix = options.out_prefix + "_valid";
  const IndexedDType dtype = choose_token_dtype(summary.vocab_size);
  IndexedDatasetWriter train_writer(summary.train_prefix, dtype);
  IndexedDatasetWriter valid_writer(summary.valid_prefix, dtype);
  IndexedDatasetWriter train_mask_writer(summary.train_prefix + "_mask", IndexedDType::kUInt8);
  IndexedDatasetWriter valid_mask_writer(summary.valid_prefix + "_mask", IndexedDType::kUInt8);
  const std::vector<bool> valid = split_documents(summary.documents, options.valid_fraction, options.seed);
  std::vector<int> tokens, mask, ids;
  Progress tokenizing("prepare: tokenizing", {{"conversations", ProgressUnit::kCount, summary.documents},
                                              {"tokens", ProgressUnit::kCount, -1, true}});
  for (size_t c = 0; c < conversations.size(); ++c) {
    tokenizing.update({static_cast<int64_t>(c), train_writer.num_tokens() + valid_writer.num_tokens()});
    tokens.clear();
    mask.clear();
    for (const ChatPiece& piece : render_chat(conversations[c], chat_template)) {
      if (piece.eos) {
        ids.assign(1, eos_id);
      } else {
        const auto status = processor->Encode(piece.text, &ids);
        TS_CHECK(status.ok(), DataError, summary.tokenizer_path, ": tokenization failed (", status.ToString(), ")");
      }
      tokens.insert(tokens.end(), ids.begin(), ids.end());
      mask.insert(mask.end(), ids.size(), piece.counted ? 1 : 0);
      if (piece.counted) summary.loss_tokens += static_cast<int64_t>(ids.size());
    }
    const bool held_out = valid[c];
    (held_out ? valid_writer : train_writer).add_document(tokens.data(), tokens.size());
    (held_out ? valid_mask_writer : train_mask_writer).add_document(mask.data(), mask.size());
  }
  summary.train_documents = train_writer.num_documents();
  summary.valid_documents = valid_writer.num_documents();
  summary.train_tokens = train_writer.num_tokens();
  summary.valid_tokens = valid_writer.num_tokens();
  tokenizing.update({summary.documents, summary.train_tokens + summary.valid_tokens});
  tokenizing.finish();
  train_writer.finalize();
  valid_writer.finalize();
  train_mask_writer.finalize();
  valid_mask_writer.finalize();
  summary.total_seconds = seconds_since(start);
  return summary;
}

}  // namespace

PrepareSummary run_prepare(const PrepareOptions& options) {
  const auto start = Clock::now();
  check_options(options);
  TS_CHECK(options.format == "text" || options.format == "sft", ConfigError, "--format takes text or sft, not '",
           options.format, "' (see `tessera prepare --help`)");
  const std::unique_ptr<StdinCopy> stdin_copy = std::count(options.inputs.begin(), options.inputs.end(), "-") > 0
                                                    ? std::make_unique<StdinCopy>(options.out_prefix)
                                                    : nullptr;
  const std::vector<InputSource> sources = input_sources(options, stdin_copy.get());
  if (options.format == "sft") return run_sft_prepare(sources, options);
  const int threads = options.threads > 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  const bool train = !options.tokenizer_out.empty();

  const CorpusStats stats = scan_corpus(sources, options, train);
  TS_CHECK(stats.documents > 0, DataError, "no documents in ", inputs_for_message(options.inputs),
           ": the input is empty or only whitespace; check the --input files");

  PrepareSummary summary;
  summary.documents = stats.documents;
  summary.text_bytes = stats.bytes;
  summary.invalid_utf8 = stats.invalid_utf8;
  summary.trained_tokenizer = train;
  std::string model;
  if (train) {
    const auto train_start = Clock::now();
    model = train_tokenizer(sources, options, stats, threads);
    write_file(options.tokenizer_out, model);
    summary.tokenizer_path = options.tokenizer_out;
    summary.tokenizer_seconds = seconds_since(train_start);
  } else {
    model = read_file(options.tokenizer, "pass an existing SentencePiece .model file with --tokenizer");
    summary.tokenizer_path = options.tokenizer;
  }

  std::vector<std::unique_ptr<sentencepiece::SentencePieceProcessor>> processors;
  for (int t = 0; t < threads; ++t) processors.push_back(load_tokenizer(model, summary.tokenizer_path));
  const int eos_id = processors.front()->eos_id();
  TS_CHECK(eos_id >= 0, DataError, summary.tokenizer_path,
           ": the tokenizer has no end-of-sequence piece, which separates documents; train it with an eos_id ",
           "(as `tessera prepare --tokenizer-out` does)");
  summary.vocab_size = processors.front()->GetPieceSize();

  make_parent_directory(options.out_prefix);
  summary.train_prefix = options.out_prefix + "_train";
  summary.valid_prefix = options.out_prefix + "_valid";
  const IndexedDType dtype = choose_token_dtype(summary.vocab_size);
  IndexedDatasetWriter train_writer(summary.train_prefix, dtype);
  IndexedDatasetWriter valid_writer(summary.valid_prefix, dtype);
  const std::vector<bool> valid = split_documents(stats.documents, options.valid_fraction, options.seed);

  DocumentReader reader(sources, options);
  Progress progress("prepare: tokenizing", {{"", ProgressUnit::kBytes, total_bytes(sources), true},
                                            {"documents", ProgressUnit::kCount, stats.documents},
                                            {"tokens", ProgressUnit::kCount, -1, true}});
  std::vector<std::string> valid_texts;  // for the multiple-choice task
  std::vector<std::string> batch;
  std::vector<std::vector<int>> tokens;
  int64_t index = 0;
  bool more = true;
  while (more) {
    batch.clear();
    size_t batch_bytes = 0;
    std::string document;
    while (batch.size() < kBatchDocuments && batch_bytes < kBatchBytes && (more = reader.next(&document))) {
      batch_bytes += document.size();
      batch.push_back(std::move(document));
      progress.update({reader.bytes_read()});
    }
    tokenize_batch(processors, batch, eos_id, tokens, summary.tokenizer_path);
    for (size_t i = 0; i < batch.size(); ++i, ++index) {
      // The inputs changed between the passes if they now hold more documents.
      TS_CHECK(index < stats.documents, DataError, inputs_for_message(options.inputs),
               ": the input files changed while being prepared; run tessera prepare again");
      auto& writer = valid[static_cast<size_t>(index)] ? valid_writer : train_writer;
      writer.add_document(tokens[i].data(), tokens[i].size());
      if (valid[static_cast<size_t>(index)] && !options.mc_task_out.empty()) valid_texts.push_back(batch[i]);
    }
    progress.update({reader.bytes_read(), index, train_writer.num_tokens() + valid_writer.num_tokens()});
  }
  progress.finish();
  TS_CHECK(index == stats.documents, DataError, inputs_for_message(options.inputs),
           ": the input files changed while being prepared; run tessera prepare again");
  summary.train_documents = train_writer.num_documents();
  summary.valid_documents = valid_writer.num_documents();
  summary.train_tokens = train_writer.num_tokens();
  summary.valid_tokens = valid_writer.num_tokens();
  if (!options.mc_task_out.empty()) {
    const auto task = continuation_task(valid_texts, options.mc_task_size, 3, options.seed);
    TS_CHECK(!task.empty(), DataError, "--mc-task-out: only ", valid_texts.size(),
             " validation document(s), too few with six words or more to make a task of four choices; raise "
             "--valid-fraction");
    write_multiple_choice_task(options.mc_task_out, task);
    summary.mc_task_examples = static_cast<int64_t>(task.size());
  }
  train_writer.finalize();
  valid_writer.finalize();
  summary.total_seconds = seconds_since(start);
  return summary;
}

int prepare_command(const PrepareOptions& options) {
  const PrepareSummary s = run_prepare(options);
  auto percent = [&](int64_t part) { return s.documents > 0 ? 100.0 * part / s.documents : 0.0; };
  // fmt::format: a summary line is as long as its paths, with no buffer to cut it short.
  std::cout << fmt::format("prepared {} {} ({:.1f} MB of text) from {} input file{} in {:.1f} s\n", s.documents,
                           options.format == "sft" ? "conversations" : "documents", s.text_bytes / 1e6,
                           options.inputs.size(), options.inputs.size() == 1 ? "" : "s", s.total_seconds);
  if (s.invalid_utf8 > 0) {
    std::cout << fmt::format("  {} invalid UTF-8 sequence(s) {} (--invalid-utf8 {})\n", s.invalid_utf8,
                             options.invalid_utf8 == InvalidUtf8::kReplace ? "replaced by U+FFFD" : "skipped",
                             options.invalid_utf8 == InvalidUtf8::kReplace ? "replace" : "skip");
  }
  if (s.trained_tokenizer) {
    std::cout << fmt::format("  tokenizer: {} (trained, vocab {}, {:.1f} s)\n", s.tokenizer_path, s.vocab_size,
                             s.tokenizer_seconds);
  } else {
    std::cout << fmt::format("  tokenizer: {} (vocab {})\n", s.tokenizer_path, s.vocab_size);
  }
  std::cout << fmt::format("  train: {} documents ({:.1f}%), {} tokens -> {}.{{bin,idx}}\n", s.train_documents,
                           percent(s.train_documents), s.train_tokens, s.train_prefix);
  std::cout << fmt::format("  valid: {} documents ({:.1f}%), {} tokens -> {}.{{bin,idx}}\n", s.valid_documents,
                           percent(s.valid_documents), s.valid_tokens, s.valid_prefix);
  if (options.format == "sft") {
    std::cout << fmt::format("  loss mask: {} counted tokens (responses and their EOS) -> {}_mask and {}_mask\n",
                             s.loss_tokens, s.train_prefix, s.valid_prefix);
  }
  if (s.mc_task_examples > 0) {
    std::cout << fmt::format("  task: {} multiple-choice examples from validation documents -> {}\n",
                             s.mc_task_examples, options.mc_task_out);
  }
  std::cout << std::flush;
  return 0;
}

}  // namespace tessera
