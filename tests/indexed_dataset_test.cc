// Megatron indexed datasets: round trips, the exact byte layout, and a clear DataError for every kind of
// damaged or missing file.
#include "launcher/data/indexed_dataset.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "core/check.h"
#include "tests/temp_dir.h"

namespace tessera {
namespace {

using testing::error_message;
using testing::TempDir;
using Documents = std::vector<std::vector<int32_t>>;

void write_dataset(const std::string& prefix, const Documents& documents, IndexedDType dtype) {
  IndexedDatasetWriter writer(prefix, dtype);
  for (const auto& document : documents) writer.add_document(document.data(), document.size());
  writer.finalize();
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

template <typename T>
void put(std::vector<uint8_t>& bytes, T value) {
  const auto* p = reinterpret_cast<const uint8_t*>(&value);
  bytes.insert(bytes.end(), p, p + sizeof(T));
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

void expect_round_trip(const std::string& prefix, const Documents& documents, IndexedDType dtype) {
  write_dataset(prefix, documents, dtype);
  const IndexedDataset ds = IndexedDataset::open(prefix);
  EXPECT_EQ(ds.dtype(), dtype);
  ASSERT_EQ(ds.num_documents(), static_cast<int64_t>(documents.size()));
  std::vector<int32_t> stream;
  for (size_t i = 0; i < documents.size(); ++i) {
    EXPECT_EQ(ds.document(static_cast<int64_t>(i)), documents[i]) << "document " << i;
    EXPECT_EQ(ds.document_offset(static_cast<int64_t>(i)), static_cast<int64_t>(stream.size()));
    stream.insert(stream.end(), documents[i].begin(), documents[i].end());
  }
  ASSERT_EQ(ds.num_tokens(), static_cast<int64_t>(stream.size()));
  // Every sub-range of the concatenated stream, across document boundaries.
  for (int64_t start = 0; start <= ds.num_tokens(); ++start) {
    for (int64_t count = 0; start + count <= ds.num_tokens(); ++count) {
      std::vector<int32_t> out(static_cast<size_t>(count), -7);
      ds.read_tokens(start, count, out.data());
      EXPECT_TRUE(std::equal(out.begin(), out.end(), stream.begin() + start)) << start << "+" << count;
    }
  }
}

TEST(IndexedDatasetTest, ChoosesNarrowestTokenType) {
  EXPECT_EQ(choose_token_dtype(2048), IndexedDType::kUInt16);
  EXPECT_EQ(choose_token_dtype(65535), IndexedDType::kUInt16);
  EXPECT_EQ(choose_token_dtype(65536), IndexedDType::kInt32);
  EXPECT_EQ(choose_token_dtype(128256), IndexedDType::kInt32);
}

TEST(IndexedDatasetTest, RoundTripUInt16) {
  TempDir dir;
  expect_round_trip(dir.file("u16"), {{1, 2, 3}, {}, {65535, 0}, {7}, {40000, 5, 6, 7, 8}}, IndexedDType::kUInt16);
}

TEST(IndexedDatasetTest, RoundTripInt32) {
  TempDir dir;
  expect_round_trip(dir.file("i32"), {{100000, 2}, {3}, {}, {2147483647, 0, 65536}}, IndexedDType::kInt32);
}

TEST(IndexedDatasetTest, EmptyDataset) {
  TempDir dir;
  write_dataset(dir.file("empty"), {}, IndexedDType::kUInt16);
  const IndexedDataset ds = IndexedDataset::open(dir.file("empty"));
  EXPECT_EQ(ds.num_documents(), 0);
  EXPECT_EQ(ds.num_tokens(), 0);
  ds.check_vocab(10);
}

// The bytes Megatron's _IndexWriter produces for the same documents, written out field by field.
TEST(IndexedDatasetTest, WritesMegatronLayout) {
  TempDir dir;
  write_dataset(dir.file("m"), {{5, 6, 7}, {8}}, IndexedDType::kUInt16);
  std::vector<uint8_t> idx = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};
  put<uint64_t>(idx, 1);  // version
  put<uint8_t>(idx, 8);   // uint16
  put<uint64_t>(idx, 2);  // sequences
  put<uint64_t>(idx, 3);  // document index entries
  put<int32_t>(idx, 3);   // lengths
  put<int32_t>(idx, 1);
  put<int64_t>(idx, 0);  // pointers in bytes
  put<int64_t>(idx, 6);
  put<int64_t>(idx, 0);  // document index
  put<int64_t>(idx, 1);
  put<int64_t>(idx, 2);
  EXPECT_EQ(read_bytes(dir.file("m.idx")), idx);
  EXPECT_EQ(read_bytes(dir.file("m.bin")), (std::vector<uint8_t>{5, 0, 6, 0, 7, 0, 8, 0}));
  EXPECT_FALSE(std::filesystem::exists(dir.file("m.bin.tmp")));
}

// Megatron datasets may group several sequences (e.g. sentences) into one document, and may be int64.
TEST(IndexedDatasetTest, ReadsMultiSequenceDocuments) {
  TempDir dir;
  std::vector<uint8_t> idx = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};
  put<uint64_t>(idx, 1);
  put<uint8_t>(idx, 5);  // int64
  put<uint64_t>(idx, 3);
  put<uint64_t>(idx, 3);
  for (int32_t length : {2, 1, 2}) put<int32_t>(idx, length);
  for (int64_t pointer : {0, 16, 24}) put<int64_t>(idx, pointer);
  for (int64_t start : {0, 2, 3}) put<int64_t>(idx, start);
  std::vector<uint8_t> bin;
  for (int64_t token : {10, 11, 12, 13, 14}) put<int64_t>(bin, token);
  write_bytes(dir.file("meg.idx"), idx);
  write_bytes(dir.file("meg.bin"), bin);
  const IndexedDataset ds = IndexedDataset::open(dir.file("meg"));
  EXPECT_EQ(ds.num_documents(), 2);
  EXPECT_EQ(ds.num_tokens(), 5);
  EXPECT_EQ(ds.document(0), (std::vector<int32_t>{10, 11, 12}));
  EXPECT_EQ(ds.document(1), (std::vector<int32_t>{13, 14}));
}

class DamagedDatasetTest : public ::testing::Test {
 protected:
  void SetUp() override { write_dataset(prefix_, {{1, 2, 3}, {4, 5}, {6}}, IndexedDType::kUInt16); }
  std::string open_error() {
    return error_message<DataError>([&] { IndexedDataset::open(prefix_); });
  }
  void patch_idx(size_t offset, const void* data, size_t size) {
    auto bytes = read_bytes(idx_);
    std::memcpy(bytes.data() + offset, data, size);
    write_bytes(idx_, bytes);
  }

  TempDir dir_;
  std::string prefix_ = dir_.file("x");
  std::string idx_ = prefix_ + ".idx";
  std::string bin_ = prefix_ + ".bin";
};

TEST_F(DamagedDatasetTest, WrongMagic) {
  patch_idx(0, "XXIDIDX", 7);
  const std::string message = open_error();
  EXPECT_TRUE(contains(message, idx_ + ": wrong magic")) << message;
  EXPECT_TRUE(contains(message, "tessera prepare")) << message;
}

TEST_F(DamagedDatasetTest, NotAnIndexAtAll) {
  write_bytes(idx_, {'h', 'i'});
  EXPECT_TRUE(contains(open_error(), "wrong magic"));
}

TEST_F(DamagedDatasetTest, WrongVersion) {
  const uint64_t version = 2;
  patch_idx(9, &version, sizeof(version));
  EXPECT_TRUE(contains(open_error(), "version 2"));
}

TEST_F(DamagedDatasetTest, UnknownOrFloatTokenType) {
  const uint8_t unknown = 42;
  patch_idx(17, &unknown, 1);
  EXPECT_TRUE(contains(open_error(), "unknown token type code 42"));
  const uint8_t float32 = 7;
  patch_idx(17, &float32, 1);
  EXPECT_TRUE(contains(open_error(), "float32"));
}

TEST_F(DamagedDatasetTest, TruncatedBin) {
  std::filesystem::resize_file(bin_, 8);
  const std::string message = open_error();
  EXPECT_TRUE(contains(message, bin_ + " is 8 bytes but the index describes 12: the file is truncated")) << message;
}

TEST_F(DamagedDatasetTest, BinTooLong) {
  std::filesystem::resize_file(bin_, 20);
  EXPECT_TRUE(contains(open_error(), "do not belong together"));
}

TEST_F(DamagedDatasetTest, TruncatedIdx) {
  std::filesystem::resize_file(idx_, std::filesystem::file_size(idx_) - 8);
  const std::string message = open_error();
  EXPECT_TRUE(contains(message, idx_)) << message;
  EXPECT_TRUE(contains(message, "truncated")) << message;
  std::filesystem::resize_file(idx_, 20);
  EXPECT_TRUE(contains(open_error(), "shorter than the 34-byte header"));
}

TEST_F(DamagedDatasetTest, AbsurdCounts) {
  const uint64_t huge = uint64_t{1} << 62;
  patch_idx(18, &huge, sizeof(huge));
  EXPECT_TRUE(contains(open_error(), "truncated or damaged"));
}

TEST_F(DamagedDatasetTest, InconsistentPointers) {
  const int64_t pointer = 4;  // sequence 1 should start at byte 6
  patch_idx(34 + 3 * 4 + 1 * 8, &pointer, sizeof(pointer));
  const std::string message = open_error();
  EXPECT_TRUE(contains(message, idx_ + ": sequence 1 starts at byte 4")) << message;
  EXPECT_TRUE(contains(message, "inconsistent")) << message;
}

TEST_F(DamagedDatasetTest, NegativeLength) {
  const int32_t length = -1;
  patch_idx(34 + 4, &length, sizeof(length));
  EXPECT_TRUE(contains(open_error(), "negative length"));
}

TEST_F(DamagedDatasetTest, BadDocumentIndex) {
  const int64_t start = 5;
  patch_idx(34 + 3 * 12 + 8, &start, sizeof(start));
  EXPECT_TRUE(contains(open_error(), "document index entry 1 is 5"));
}

TEST_F(DamagedDatasetTest, MissingFiles) {
  std::filesystem::remove(bin_);
  std::string message = open_error();
  EXPECT_TRUE(contains(message, bin_ + ": does not exist")) << message;
  std::filesystem::remove(idx_);
  message = open_error();
  EXPECT_TRUE(contains(message, idx_ + ": does not exist")) << message;
  EXPECT_TRUE(contains(message, "tessera prepare")) << message;
}

TEST_F(DamagedDatasetTest, NonRegularFilesAreRefusedWithoutBlocking) {
  // A FIFO would block open(2) until a writer came: it must be refused before opening.
  std::filesystem::remove(bin_);
  ASSERT_EQ(::mkfifo(bin_.c_str(), 0600), 0);
  EXPECT_TRUE(contains(open_error(), bin_ + ": is a FIFO (named pipe), not a regular file")) << open_error();
  std::filesystem::remove(bin_);
  std::filesystem::create_directory(bin_);
  EXPECT_TRUE(contains(open_error(), bin_ + ": is a directory, not a file")) << open_error();
  std::filesystem::remove(bin_);
  std::filesystem::create_symlink("/dev/zero", bin_);
  EXPECT_TRUE(contains(open_error(), bin_ + ": is a symbolic link to '/dev/zero', which is a character device"))
      << open_error();
  std::filesystem::remove(bin_);
  std::filesystem::create_symlink("/nonexistent/file", bin_);
  EXPECT_TRUE(contains(open_error(), "which does not exist")) << open_error();
}

TEST(IndexedDatasetTest, CheckVocabNamesFirstBadToken) {
  TempDir dir;
  write_dataset(dir.file("v"), {{1, 2}, {3, 70, 4, 80}}, IndexedDType::kUInt16);
  const IndexedDataset ds = IndexedDataset::open(dir.file("v"));
  ds.check_vocab(81);
  const std::string message = error_message<DataError>([&] { ds.check_vocab(64); });
  EXPECT_TRUE(contains(message, dir.file("v.bin") + ": token id 70 at position 3 (document 1, token 1)")) << message;
  EXPECT_TRUE(contains(message, "vocab_size to at least 71")) << message;
}

TEST(IndexedDatasetTest, CheckVocabRejectsNegativeIds) {
  TempDir dir;
  write_dataset(dir.file("n"), {{1, 5, 2}}, IndexedDType::kInt32);
  // The writer refuses negative ids, so they can only come from a foreign or damaged file; patch one in.
  auto bin = read_bytes(dir.file("n.bin"));
  const int32_t negative = -5;
  std::memcpy(bin.data() + 4, &negative, sizeof(negative));
  write_bytes(dir.file("n.bin"), bin);
  const IndexedDataset ds = IndexedDataset::open(dir.file("n"));
  EXPECT_TRUE(contains(error_message<DataError>([&] { ds.check_vocab(10); }), "token id -5 at position 1"));
}

TEST(IndexedDatasetTest, WriterRejectsTokensOutsideType) {
  TempDir dir;
  IndexedDatasetWriter writer(dir.file("w"), IndexedDType::kUInt16);
  const int32_t tokens[] = {1, 70000};
  const std::string message = error_message<DataError>([&] { writer.add_document(tokens, 2); });
  EXPECT_TRUE(contains(message, "token id 70000")) << message;
}

TEST(IndexedDatasetTest, UnfinishedWriterLeavesNoFiles) {
  TempDir dir;
  {
    IndexedDatasetWriter writer(dir.file("w"), IndexedDType::kUInt16);
    const int32_t tokens[] = {1, 2};
    writer.add_document(tokens, 2);
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(IndexedDatasetTest, WriterNeedsWritableDirectory) {
  TempDir dir;
  const std::string message =
      error_message<DataError>([&] { IndexedDatasetWriter writer(dir.file("missing/w"), IndexedDType::kUInt16); });
  EXPECT_TRUE(contains(message, dir.file("missing/w.bin"))) << message;
}

TEST(IndexedDatasetTest, MoveKeepsMappings) {
  TempDir dir;
  write_dataset(dir.file("mv"), {{9, 8, 7}}, IndexedDType::kUInt16);
  IndexedDataset a = IndexedDataset::open(dir.file("mv"));
  IndexedDataset b = std::move(a);
  EXPECT_EQ(b.document(0), (std::vector<int32_t>{9, 8, 7}));
}

}  // namespace
}  // namespace tessera
