// The safetensors format (Hugging Face's weights files), read and written:
//
//   u64 N (little-endian) | N bytes of a JSON object | the data
//
// The JSON maps each tensor's name to {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, the
// offsets in bytes from the first byte after the header, plus an optional "__metadata__" object of strings.
// Data is little-endian, row-major. Tessera writes F32 or BF16 and reads F32, BF16 and F16 (into f32).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "launcher/common/mapped_file.h"

namespace tessera {

enum class TensorDType { kF32, kBF16, kF16 };
// "F32", "BF16", "F16".
const char* safetensors_dtype_name(TensorDType dtype);
size_t dtype_bytes(TensorDType dtype);

struct SafetensorsEntry {
  std::string name;
  TensorDType dtype = TensorDType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // data_offsets (set by the reader; the writer computes them)
  int64_t numel() const;
};

// One safetensors file, mapped read-only; its header is checked on opening.
class SafetensorsReader {
 public:
  // Throws DataError naming the file for: a file shorter than 8 bytes, a header length past the end of the
  // file (or above 100 MB), a header that is not a JSON object (or not UTF-8), an entry without a valid dtype,
  // shape or data_offsets, a dtype other than F32, BF16 and F16, offsets past the data or not matching the
  // shape's size, and tensors whose bytes overlap.
  explicit SafetensorsReader(const std::string& path);

  const std::string& path() const { return file_.path(); }
  // In the header's order.
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  // The entry named name, or nullptr.
  const SafetensorsEntry* find(const std::string& name) const;
  // The tensor's values converted to f32, row-major. Precondition: entry is one of entries().
  std::vector<float> read_f32(const SafetensorsEntry& entry) const;

 private:
  MappedFile file_;
  uint64_t data_start_ = 0;
  std::vector<SafetensorsEntry> entries_;
};

// Writes path: the header (its "__metadata__" from metadata, then the entries in order, padded with spaces to
// a multiple of 8 bytes), then each entry's data, values(i) (f32, entries[i].numel() of them, row-major)
// converted to entries[i].dtype (bf16 rounded to nearest even). Entries' offsets are computed. Throws
// CheckpointError naming the file when it cannot be written.
void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                       const std::function<std::vector<float>(size_t i)>& values,
                       const std::map<std::string, std::string>& metadata);

// IEEE half precision to f32 (exact).
float f16_to_f32(uint16_t h);

}  // namespace tessera
