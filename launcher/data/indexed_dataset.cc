// Megatron indexed datasets: writer, validating reader. See Note [Indexed dataset layout].
#include "launcher/data/indexed_dataset.h"

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>

#include "core/check.h"

namespace tessera {
namespace {

// The format is little-endian and the arrays are copied in native order.
static_assert(std::endian::native == std::endian::little, "indexed datasets are read and written little-endian");

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
constexpr size_t kHeaderBytes = 9 + 8 + 1 + 8 + 8;
constexpr uint64_t kVersion = 1;

// Reads a T at any (possibly unaligned) address: the .idx arrays start at byte 34.
template <typename T>
T load(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

template <typename T>
void append(std::vector<uint8_t>& out, T value) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(&value);
  out.insert(out.end(), bytes, bytes + sizeof(T));
}

bool is_known_dtype(uint8_t code) { return code >= 1 && code <= 8; }

std::string tmp_path(const std::string& path) { return path + ".tmp"; }

void write_or_throw(std::FILE* file, const void* data, size_t bytes, const std::string& path) {
  if (bytes == 0) return;
  TS_CHECK(std::fwrite(data, 1, bytes, file) == bytes, DataError, path, ": cannot write (", std::strerror(errno),
           "); check free disk space and permissions");
}

// Calls f(pointer-to-T-array) with the token type of dtype; the caller handles the float types before.
template <typename F>
void with_token_type(IndexedDType dtype, F&& f) {
  switch (dtype) {
    case IndexedDType::kUInt8:
      f(static_cast<const uint8_t*>(nullptr));
      break;
    case IndexedDType::kInt8:
      f(static_cast<const int8_t*>(nullptr));
      break;
    case IndexedDType::kInt16:
      f(static_cast<const int16_t*>(nullptr));
      break;
    case IndexedDType::kInt32:
      f(static_cast<const int32_t*>(nullptr));
      break;
    case IndexedDType::kInt64:
      f(static_cast<const int64_t*>(nullptr));
      break;
    case IndexedDType::kUInt16:
      f(static_cast<const uint16_t*>(nullptr));
      break;
    case IndexedDType::kFloat32:
    case IndexedDType::kFloat64:
      TS_ASSERT(false, "floating-point token types are rejected by open()");
  }
}

}  // namespace

int indexed_dtype_size(IndexedDType dtype) {
  switch (dtype) {
    case IndexedDType::kUInt8:
    case IndexedDType::kInt8:
      return 1;
    case IndexedDType::kInt16:
    case IndexedDType::kUInt16:
      return 2;
    case IndexedDType::kInt32:
    case IndexedDType::kFloat32:
      return 4;
    case IndexedDType::kInt64:
    case IndexedDType::kFloat64:
      return 8;
  }
  TS_ASSERT(false, "unknown IndexedDType ", static_cast<int>(dtype));
  return 0;
}

const char* indexed_dtype_name(IndexedDType dtype) {
  switch (dtype) {
    case IndexedDType::kUInt8:
      return "uint8";
    case IndexedDType::kInt8:
      return "int8";
    case IndexedDType::kInt16:
      return "int16";
    case IndexedDType::kInt32:
      return "int32";
    case IndexedDType::kInt64:
      return "int64";
    case IndexedDType::kFloat64:
      return "float64";
    case IndexedDType::kFloat32:
      return "float32";
    case IndexedDType::kUInt16:
      return "uint16";
  }
  return "unknown";
}

IndexedDType choose_token_dtype(int64_t vocab_size) {
  return vocab_size < 65536 ? IndexedDType::kUInt16 : IndexedDType::kInt32;
}

// ---- writer -----------------------------------------------------------------------------------------------

void IndexedDatasetWriter::FileCloser::operator()(std::FILE* file) const { std::fclose(file); }

IndexedDatasetWriter::IndexedDatasetWriter(std::string prefix, IndexedDType dtype)
    : prefix_(std::move(prefix)), dtype_(dtype) {
  TS_ASSERT(dtype == IndexedDType::kUInt8 || dtype == IndexedDType::kUInt16 || dtype == IndexedDType::kInt32,
            "IndexedDatasetWriter writes uint8, uint16 or int32 tokens, not ", indexed_dtype_name(dtype));
  const std::string path = tmp_path(prefix_ + ".bin");
  bin_.reset(std::fopen(path.c_str(), "wb"));
  TS_CHECK(bin_ != nullptr, DataError, path, ": cannot create (", std::strerror(errno),
           "); check that the output directory exists and is writable");
}

IndexedDatasetWriter::~IndexedDatasetWriter() {
  if (!finalized_ && !prefix_.empty()) remove_temporaries();
}

IndexedDatasetWriter::IndexedDatasetWriter(IndexedDatasetWriter&& other) noexcept
    : prefix_(std::move(other.prefix_)),
      dtype_(other.dtype_),
      bin_(std::move(other.bin_)),
      lengths_(std::move(other.lengths_)),
      num_tokens_(other.num_tokens_),
      finalized_(other.finalized_),
      buffer_(std::move(other.buffer_)) {
  other.prefix_.clear();
  other.finalized_ = true;
}

IndexedDatasetWriter& IndexedDatasetWriter::operator=(IndexedDatasetWriter&& other) noexcept {
  if (this != &other) {
    if (!finalized_ && !prefix_.empty()) remove_temporaries();
    prefix_ = std::move(other.prefix_);
    dtype_ = other.dtype_;
    bin_ = std::move(other.bin_);
    lengths_ = std::move(other.lengths_);
    num_tokens_ = other.num_tokens_;
    finalized_ = other.finalized_;
    buffer_ = std::move(other.buffer_);
    other.prefix_.clear();
    other.finalized_ = true;
  }
  return *this;
}

void IndexedDatasetWriter::remove_temporaries() {
  bin_.reset();
  std::remove(tmp_path(prefix_ + ".bin").c_str());
  std::remove(tmp_path(prefix_ + ".idx").c_str());
}

void IndexedDatasetWriter::add_document(const int32_t* tokens, size_t n) {
  TS_ASSERT(!finalized_ && bin_ != nullptr, "add_document() after finalize()");
  const std::string path = prefix_ + ".bin";
  TS_CHECK(n <= static_cast<size_t>(std::numeric_limits<int32_t>::max()), DataError, path, ": document ",
           lengths_.size(), " has ", n, " tokens, more than the format's limit of 2^31-1 per document; ",
           "split it into smaller documents");
  const int64_t max_token = dtype_ == IndexedDType::kUInt8    ? 255
                            : dtype_ == IndexedDType::kUInt16 ? 65535
                                                              : std::numeric_limits<int32_t>::max();
  for (size_t i = 0; i < n; ++i) {
    TS_CHECK(tokens[i] >= 0 && tokens[i] <= max_token, DataError, path, ": token id ", tokens[i], " (document ",
             lengths_.size(), ", position ", i, ") does not fit the dataset's token type ", indexed_dtype_name(dtype_),
             "; the tokenizer and the chosen token type disagree");
  }
  if (dtype_ == IndexedDType::kInt32) {
    write_or_throw(bin_.get(), tokens, n * sizeof(int32_t), tmp_path(path));
  } else if (dtype_ == IndexedDType::kUInt8) {
    buffer_.resize(n);
    for (size_t i = 0; i < n; ++i) buffer_[i] = static_cast<uint8_t>(tokens[i]);
    write_or_throw(bin_.get(), buffer_.data(), buffer_.size(), tmp_path(path));
  } else {
    buffer_.resize(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; ++i) {
      const auto value = static_cast<uint16_t>(tokens[i]);
      std::memcpy(buffer_.data() + i * sizeof(uint16_t), &value, sizeof(uint16_t));
    }
    write_or_throw(bin_.get(), buffer_.data(), buffer_.size(), tmp_path(path));
  }
  lengths_.push_back(static_cast<int32_t>(n));
  num_tokens_ += static_cast<int64_t>(n);
}

void IndexedDatasetWriter::finalize() {
  TS_ASSERT(!finalized_ && bin_ != nullptr, "finalize() called twice");
  const std::string bin_path = prefix_ + ".bin";
  const std::string idx_path = prefix_ + ".idx";
  TS_CHECK(std::fclose(bin_.release()) == 0, DataError, tmp_path(bin_path), ": cannot write (", std::strerror(errno),
           "); check free disk space");

  const uint64_t sequences = lengths_.size();
  std::vector<uint8_t> index;
  index.reserve(kHeaderBytes + sequences * (4 + 8 + 8) + 8);
  index.insert(index.end(), kMagic, kMagic + sizeof(kMagic));
  append<uint64_t>(index, kVersion);
  append<uint8_t>(index, static_cast<uint8_t>(dtype_));
  append<uint64_t>(index, sequences);
  append<uint64_t>(index, sequences + 1);  // one sequence per document, plus the leading 0
  for (int32_t length : lengths_) append<int32_t>(index, length);
  int64_t pointer = 0;
  for (int32_t length : lengths_) {
    append<int64_t>(index, pointer);
    pointer += static_cast<int64_t>(length) * indexed_dtype_size(dtype_);
  }
  for (uint64_t d = 0; d <= sequences; ++d) append<int64_t>(index, static_cast<int64_t>(d));

  {
    std::unique_ptr<std::FILE, FileCloser> idx(std::fopen(tmp_path(idx_path).c_str(), "wb"));
    TS_CHECK(idx != nullptr, DataError, tmp_path(idx_path), ": cannot create (", std::strerror(errno),
             "); check that the output directory is writable");
    write_or_throw(idx.get(), index.data(), index.size(), tmp_path(idx_path));
    TS_CHECK(std::fclose(idx.release()) == 0, DataError, tmp_path(idx_path), ": cannot write (", std::strerror(errno),
             "); check free disk space");
  }
  TS_CHECK(std::rename(tmp_path(bin_path).c_str(), bin_path.c_str()) == 0, DataError, bin_path,
           ": cannot move into place (", std::strerror(errno), ")");
  TS_CHECK(std::rename(tmp_path(idx_path).c_str(), idx_path.c_str()) == 0, DataError, idx_path,
           ": cannot move into place (", std::strerror(errno), ")");
  finalized_ = true;
}

// ---- reader -----------------------------------------------------------------------------------------------

IndexedDataset IndexedDataset::open(const std::string& prefix) {
  IndexedDataset ds;
  ds.prefix_ = prefix;
  const std::string idx_path = prefix + ".idx";
  const std::string bin_path = prefix + ".bin";
  const char* remake = "re-run `tessera prepare` to rebuild the dataset";
  ds.idx_ = MappedFile::open(idx_path);
  const uint8_t* idx = ds.idx_.data();
  const size_t idx_size = ds.idx_.size();

  TS_CHECK(idx_size >= sizeof(kMagic) && std::memcmp(idx, kMagic, sizeof(kMagic)) == 0, DataError, idx_path,
           ": wrong magic (not a Megatron indexed dataset; make one with `tessera prepare`)");
  TS_CHECK(idx_size >= kHeaderBytes, DataError, idx_path, " is ", idx_size, " bytes, shorter than the ", kHeaderBytes,
           "-byte header: the file is truncated; ", remake);
  const auto version = load<uint64_t>(idx + 9);
  TS_CHECK(version == kVersion, DataError, idx_path, ": format version ", version,
           " is not supported (only version 1 is); ", remake);
  const uint8_t code = idx[17];
  TS_CHECK(is_known_dtype(code), DataError, idx_path, ": unknown token type code ", static_cast<int>(code),
           " (the file is damaged); ", remake);
  ds.dtype_ = static_cast<IndexedDType>(code);
  TS_CHECK(ds.dtype_ != IndexedDType::kFloat32 && ds.dtype_ != IndexedDType::kFloat64, DataError, idx_path,
           ": the values are ", indexed_dtype_name(ds.dtype_),
           ", not integer token ids; this is not a token dataset. Make one with `tessera prepare`");
  ds.item_size_ = indexed_dtype_size(ds.dtype_);

  const auto sequences = load<uint64_t>(idx + 18);
  const auto doc_index_length = load<uint64_t>(idx + 26);
  // Each array element takes at least 4 bytes, so counts above the file size are damage; checking this first
  // keeps the size arithmetic below from overflowing.
  const uint64_t expected =
      (sequences <= idx_size && doc_index_length <= idx_size)
          ? kHeaderBytes + sequences * (sizeof(int32_t) + sizeof(int64_t)) + doc_index_length * sizeof(int64_t)
          : std::numeric_limits<uint64_t>::max();
  TS_CHECK(
      idx_size >= expected, DataError, idx_path, " is ", idx_size, " bytes but its header describes ", sequences,
      " sequences and a document index of ", doc_index_length, " entries",
      (expected == std::numeric_limits<uint64_t>::max() ? std::string() : str_cat(", which take ", expected, " bytes")),
      ": the file is truncated or damaged; ", remake);
  // Multimodal Megatron datasets append one int8 mode per sequence.
  TS_CHECK(idx_size == expected || idx_size == expected + sequences, DataError, idx_path, " is ", idx_size,
           " bytes but its header describes ", expected, ": the file is damaged; ", remake);
  TS_CHECK(doc_index_length >= 1, DataError, idx_path,
           ": the document index is empty (it must start with 0); the file is damaged; ", remake);
  ds.num_sequences_ = static_cast<int64_t>(sequences);
  ds.num_documents_ = static_cast<int64_t>(doc_index_length) - 1;
  const size_t lengths_offset = kHeaderBytes;
  ds.pointers_offset_ = lengths_offset + sequences * sizeof(int32_t);
  ds.doc_index_offset_ = ds.pointers_offset_ + sequences * sizeof(int64_t);

  // The sequences must lie back to back from byte 0 of .bin: each pointer is the sum of the lengths before it.
  int64_t tokens = 0;
  for (int64_t s = 0; s < ds.num_sequences_; ++s) {
    const auto length = load<int32_t>(idx + lengths_offset + s * sizeof(int32_t));
    TS_CHECK(length >= 0, DataError, idx_path, ": sequence ", s, " has negative length ", length,
             "; the file is damaged; ", remake);
    TS_CHECK(tokens <= std::numeric_limits<int64_t>::max() / 8 - length, DataError, idx_path,
             ": the sequence lengths add up to an impossible size; the file is damaged; ", remake);
    const int64_t pointer = ds.sequence_pointer(s);
    TS_CHECK(pointer == tokens * ds.item_size_, DataError, idx_path, ": sequence ", s, " starts at byte ", pointer,
             " of ", bin_path, " but the sequences before it end at byte ", tokens * ds.item_size_,
             ": the pointers are inconsistent with the lengths (damaged index); ", remake);
    tokens += length;
  }
  ds.num_tokens_ = tokens;

  int64_t previous = 0;
  for (int64_t d = 0; d <= ds.num_documents_; ++d) {
    const int64_t start = ds.document_start_sequence(d);
    TS_CHECK(d > 0 || start == 0, DataError, idx_path, ": the document index starts with ", start,
             " instead of 0; the file is damaged; ", remake);
    TS_CHECK(start >= previous && start <= ds.num_sequences_, DataError, idx_path, ": document index entry ", d, " is ",
             start, ", outside [", previous, ", ", ds.num_sequences_, "]; the file is damaged; ", remake);
    previous = start;
  }
  TS_CHECK(previous == ds.num_sequences_, DataError, idx_path, ": the document index ends at sequence ", previous,
           " but there are ", ds.num_sequences_, " sequences; the file is damaged; ", remake);

  ds.bin_ = MappedFile::open(bin_path);
  const auto bin_size = static_cast<int64_t>(ds.bin_.size());
  const int64_t described = ds.num_tokens_ * ds.item_size_;
  TS_CHECK(bin_size >= described, DataError, bin_path, " is ", bin_size, " bytes but the index describes ", described,
           ": the file is truncated; ", remake);
  TS_CHECK(bin_size == described, DataError, bin_path, " is ", bin_size, " bytes but ", idx_path, " describes ",
           described, ": the two files do not belong together; ", remake);
  return ds;
}

int64_t IndexedDataset::sequence_pointer(int64_t s) const {
  return load<int64_t>(idx_.data() + pointers_offset_ + s * sizeof(int64_t));
}

int64_t IndexedDataset::document_start_sequence(int64_t d) const {
  return load<int64_t>(idx_.data() + doc_index_offset_ + d * sizeof(int64_t));
}

int64_t IndexedDataset::document_offset(int64_t i) const {
  TS_ASSERT(i >= 0 && i <= num_documents_, "document ", i, " out of range [0, ", num_documents_, "]");
  const int64_t sequence = document_start_sequence(i);
  return sequence == num_sequences_ ? num_tokens_ : sequence_pointer(sequence) / item_size_;
}

std::vector<int32_t> IndexedDataset::document(int64_t i) const {
  TS_ASSERT(i >= 0 && i < num_documents_, "document ", i, " out of range [0, ", num_documents_, ")");
  const int64_t start = document_offset(i);
  std::vector<int32_t> tokens(static_cast<size_t>(document_offset(i + 1) - start));
  read_tokens(start, static_cast<int64_t>(tokens.size()), tokens.data());
  return tokens;
}

void IndexedDataset::read_tokens(int64_t start, int64_t count, int32_t* out) const {
  TS_ASSERT(start >= 0 && count >= 0 && start <= num_tokens_ - count, "read_tokens(", start, ", ", count,
            ") outside the ", num_tokens_, " tokens of ", prefix_);
  if (count == 0) return;
  const uint8_t* source = bin_.data() + start * item_size_;
  if (dtype_ == IndexedDType::kInt32) {
    std::memcpy(out, source, static_cast<size_t>(count) * sizeof(int32_t));
    return;
  }
  with_token_type(dtype_, [&]<typename T>(const T*) {
    for (int64_t i = 0; i < count; ++i) out[i] = static_cast<int32_t>(load<T>(source + i * sizeof(T)));
  });
}

void IndexedDataset::check_vocab(int64_t vocab_size) const {
  int64_t bad_position = -1;
  int64_t bad_value = 0;
  with_token_type(dtype_, [&]<typename T>(const T*) {
    const uint8_t* data = bin_.data();
    for (int64_t i = 0; i < num_tokens_; ++i) {
      const auto value = static_cast<int64_t>(load<T>(data + i * sizeof(T)));
      if (value < 0 || value >= vocab_size) {
        bad_position = i;
        bad_value = value;
        return;
      }
    }
  });
  if (bad_position < 0) return;
  // The document holding the token: the last one starting at or before it.
  int64_t low = 0, high = num_documents_;
  while (high - low > 1) {
    const int64_t middle = low + (high - low) / 2;
    (document_offset(middle) <= bad_position ? low : high) = middle;
  }
  TS_CHECK(false, DataError, bin_path(), ": token id ", bad_value, " at position ", bad_position, " (document ", low,
           ", token ", bad_position - document_offset(low), ") is outside the model's vocabulary [0, ", vocab_size,
           "); tokenize the data with the model's tokenizer, or set the model's vocab_size to at least ",
           (bad_value < 0 ? std::string("the tokenizer's") : std::to_string(bad_value + 1)));
}

}  // namespace tessera
