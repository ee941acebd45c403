// Token datasets in Megatron-LM's indexed format: PREFIX.bin holds the raw tokens of every document back to
// back, PREFIX.idx describes where each one starts. Files written here load in Megatron-LM
// (megatron/core/datasets/indexed_dataset.py) and Megatron's files load here.
//
// Note [Indexed dataset layout]. PREFIX.idx, all integers little-endian:
//   magic     9 bytes  "MMIDIDX\0\0"
//   version   uint64   1
//   dtype     uint8    token type code of .bin: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64,
//                      7 float32, 8 uint16
//   S         uint64   number of sequences
//   D         uint64   length of the document index (documents + 1)
//   lengths   int32[S] tokens per sequence
//   pointers  int64[S] byte offset of each sequence in .bin
//   doc_index int64[D] sequence index where each document starts, from 0 up to S
// Megatron may append int8[S] sequence modes (multimodal datasets); they are accepted and ignored.
// Tessera writes one sequence per document, so doc_index is 0, 1, ..., S. Reading accepts documents made of
// several sequences; the sequences must lie back to back in .bin, which every Megatron writer guarantees.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "launcher/common/mapped_file.h"

namespace tessera {

// Token type codes of the .idx header (Megatron's DType enum).
enum class IndexedDType : uint8_t {
  kUInt8 = 1,
  kInt8 = 2,
  kInt16 = 3,
  kInt32 = 4,
  kInt64 = 5,
  kFloat64 = 6,
  kFloat32 = 7,
  kUInt16 = 8,
};

// Bytes per token of dtype.
int indexed_dtype_size(IndexedDType dtype);
// "uint16", "int32", ...
const char* indexed_dtype_name(IndexedDType dtype);
// The narrowest type Tessera writes for a vocabulary: uint16 when vocab_size < 65536, else int32.
IndexedDType choose_token_dtype(int64_t vocab_size);

// Writes PREFIX.bin and PREFIX.idx. Until finalize() the data goes to PREFIX.bin.tmp and PREFIX.idx.tmp, which
// are renamed into place at the end, so an interrupted run never leaves a pair that looks complete.
// Not thread-safe; move-only.
class IndexedDatasetWriter {
 public:
  // Precondition: dtype is kUInt8 (loss masks), kUInt16 or kInt32 (the types Tessera writes). The parent directory must
  // exist. Throws DataError naming the file if it cannot be created.
  IndexedDatasetWriter(std::string prefix, IndexedDType dtype);
  // Without finalize(), removes the temporary files.
  ~IndexedDatasetWriter();
  IndexedDatasetWriter(IndexedDatasetWriter&&) noexcept;
  IndexedDatasetWriter& operator=(IndexedDatasetWriter&&) noexcept;
  IndexedDatasetWriter(const IndexedDatasetWriter&) = delete;
  IndexedDatasetWriter& operator=(const IndexedDatasetWriter&) = delete;

  // Appends one document of n tokens (n may be 0). Throws DataError if a token does not fit the dtype or
  // the file cannot be written.
  void add_document(const int32_t* tokens, size_t n);
  // Writes the index and moves both files into place. No add_document() afterwards.
  void finalize();

  int64_t num_documents() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t num_tokens() const { return num_tokens_; }

 private:
  struct FileCloser {
    void operator()(std::FILE* file) const;
  };
  void remove_temporaries();

  std::string prefix_;
  IndexedDType dtype_;
  std::unique_ptr<std::FILE, FileCloser> bin_;
  std::vector<int32_t> lengths_;
  int64_t num_tokens_ = 0;
  bool finalized_ = false;
  std::vector<uint8_t> buffer_;
};

// A read-only view of PREFIX.bin/.idx through memory mappings. Every accessor is const and thread-safe.
// Move-only.
class IndexedDataset {
 public:
  // Maps and validates both files: magic, version, dtype, counts against the .idx size, lengths, pointers and
  // document index against each other and against the .bin size. Throws DataError naming the file, the
  // problem and what to do.
  static IndexedDataset open(const std::string& prefix);

  const std::string& prefix() const { return prefix_; }
  const std::string& bin_path() const { return bin_.path(); }
  IndexedDType dtype() const { return dtype_; }
  int64_t num_documents() const { return num_documents_; }
  // Tokens in all documents together: the length of the concatenated stream.
  int64_t num_tokens() const { return num_tokens_; }

  // Position of document i's first token in the concatenated stream. Precondition: 0 <= i <= num_documents()
  // (i == num_documents() gives num_tokens()).
  int64_t document_offset(int64_t i) const;
  // Tokens in document i. Precondition: 0 <= i < num_documents().
  int64_t document_length(int64_t i) const { return document_offset(i + 1) - document_offset(i); }
  // The tokens of document i.
  std::vector<int32_t> document(int64_t i) const;

  // Copies tokens [start, start + count) of the concatenated stream of all documents into out.
  // Precondition: 0 <= start, 0 <= count, start + count <= num_tokens() (else InternalError).
  // Values are converted to int32; run check_vocab() once to know they are valid token ids.
  void read_tokens(int64_t start, int64_t count, int32_t* out) const;

  // Throws DataError naming the first token id outside [0, vocab_size), its position and its document.
  // Reads every token once.
  void check_vocab(int64_t vocab_size) const;

 private:
  IndexedDataset() = default;
  int64_t sequence_pointer(int64_t s) const;
  int64_t document_start_sequence(int64_t d) const;

  std::string prefix_;
  MappedFile idx_;
  MappedFile bin_;
  IndexedDType dtype_ = IndexedDType::kUInt16;
  int item_size_ = 2;
  int64_t num_sequences_ = 0;
  int64_t num_documents_ = 0;
  int64_t num_tokens_ = 0;
  size_t pointers_offset_ = 0;   // byte offset of the pointer array in .idx
  size_t doc_index_offset_ = 0;  // byte offset of the document index in .idx
};

}  // namespace tessera
