// safetensors: the header checks (every way a header can lie is refused before any tensor is read) and the
// streaming writer (one tensor in memory at a time).
#include "launcher/interop/safetensors.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>

#include "core/bf16.h"
#include "core/check.h"
#include "launcher/common/json_io.h"

namespace tessera {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; so must the host be");

namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // as the safetensors library

bool parse_dtype(const std::string& name, TensorDType* dtype) {
  for (TensorDType d : {TensorDType::kF32, TensorDType::kBF16, TensorDType::kF16}) {
    if (name == safetensors_dtype_name(d)) {
      *dtype = d;
      return true;
    }
  }
  return false;
}

}  // namespace

const char* safetensors_dtype_name(TensorDType dtype) {
  switch (dtype) {
    case TensorDType::kF32:
      return "F32";
    case TensorDType::kBF16:
      return "BF16";
    case TensorDType::kF16:
      return "F16";
  }
  return "?";
}

size_t dtype_bytes(TensorDType dtype) { return dtype == TensorDType::kF32 ? 4 : 2; }

int64_t SafetensorsEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf, NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {
    // Subnormal: mantissa * 2^-24, exact in f32.
    const float value = static_cast<float>(mantissa) * 0x1p-24f;
    std::memcpy(&bits, &value, sizeof(bits));
    bits |= sign;
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

SafetensorsReader::SafetensorsReader(const std::string& path) : file_(MappedFile::open(path)) {
  auto fail = [&](const std::string& what) { return DataError(str_cat("safetensors file '", path, "': ", what)); };
  const uint64_t size = file_.size();
  if (size < 8) throw fail(str_cat("it has ", size, " bytes, fewer than the 8 of its header length"));
  uint64_t header_bytes;
  std::memcpy(&header_bytes, file_.data(), 8);
  if (header_bytes > size - 8 || header_bytes > kMaxHeaderBytes) {
    throw fail(str_cat("its header length (", header_bytes, " bytes) is past the end of the file (", size,
                       " bytes) or above 100 MB: it is not a safetensors file, or it is truncated"));
  }
  if (header_bytes < 2 || file_.data()[8] != '{') throw fail("its header is not a JSON object");
  data_start_ = 8 + header_bytes;
  const uint64_t data_bytes = size - data_start_;
  const std::string_view header_text(reinterpret_cast<const char*>(file_.data()) + 8, header_bytes);
  const Json header = parse_json(header_text, str_cat("safetensors file '", path, "': header"));
  if (!header.is_object()) throw fail("its header is not a JSON object");

  // nlohmann reads an integer written without a sign as number_unsigned: that is what a size or offset must be.
  const auto non_negative = [](const Json& v, uint64_t limit) {
    return v.is_number_unsigned() && v.get<uint64_t>() <= limit;
  };
  constexpr auto kInt64Max = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      bool strings = value.is_object();
      if (strings) {
        for (const Json& member : value) strings = strings && member.is_string();
      }
      if (!strings) throw fail("\"__metadata__\" must be an object of strings");
      continue;
    }
    auto bad = [&](const std::string& what) { return fail(str_cat("tensor \"", name, "\": ", what)); };
    if (!value.is_object()) throw bad("its entry is not an object");
    SafetensorsEntry entry;
    entry.name = name;
    const auto dtype = value.find("dtype");
    if (dtype == value.end() || !dtype->is_string()) throw bad("no \"dtype\" string");
    if (!parse_dtype(dtype->get<std::string>(), &entry.dtype)) {
      throw bad(str_cat("dtype \"", dtype->get<std::string>(), "\" is not one Tessera reads (F32, BF16, F16)"));
    }
    const auto shape = value.find("shape");
    if (shape == value.end() || !shape->is_array()) throw bad("no \"shape\" array");
    uint64_t numel = 1;
    for (const Json& d : *shape) {
      if (!non_negative(d, kInt64Max)) throw bad("its shape has an entry that is not a non-negative integer");
      const uint64_t extent = d.get<uint64_t>();
      if (extent != 0 && numel > std::numeric_limits<uint64_t>::max() / 8 / extent) throw bad("its shape is too large");
      numel *= extent;
      entry.shape.push_back(static_cast<int64_t>(extent));
    }
    const auto offsets = value.find("data_offsets");
    if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2 ||
        !non_negative((*offsets)[0], kInt64Max) || !non_negative((*offsets)[1], kInt64Max)) {
      throw bad("\"data_offsets\" is not two non-negative integers [begin, end]");
    }
    entry.begin = (*offsets)[0].get<uint64_t>();
    entry.end = (*offsets)[1].get<uint64_t>();
    if (entry.begin > entry.end || entry.end > data_bytes) {
      throw bad(str_cat("data_offsets [", entry.begin, ", ", entry.end, "] are out of range: the data holds ",
                        data_bytes, " bytes"));
    }
    const uint64_t expected = numel * dtype_bytes(entry.dtype);
    if (entry.end - entry.begin != expected) {
      throw bad(str_cat("data_offsets [", entry.begin, ", ", entry.end, "] span ", entry.end - entry.begin,
                        " bytes, its shape and dtype need ", expected));
    }
    entries_.push_back(std::move(entry));
  }

  std::vector<const SafetensorsEntry*> by_offset;
  for (const SafetensorsEntry& e : entries_) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const SafetensorsEntry& previous = *by_offset[i - 1];
    const SafetensorsEntry& next = *by_offset[i];
    if (next.begin < previous.end) {
      throw fail(str_cat("tensors \"", previous.name, "\" [", previous.begin, ", ", previous.end, ") and \"", next.name,
                         "\" [", next.begin, ", ", next.end, ") overlap"));
    }
  }
}

const SafetensorsEntry* SafetensorsReader::find(const std::string& name) const {
  for (const SafetensorsEntry& e : entries_) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

std::vector<float> SafetensorsReader::read_f32(const SafetensorsEntry& entry) const {
  const size_t n = static_cast<size_t>(entry.numel());
  std::vector<float> out(n);
  const uint8_t* data = file_.data() + data_start_ + entry.begin;
  switch (entry.dtype) {
    case TensorDType::kF32:
      if (n > 0) std::memcpy(out.data(), data, n * sizeof(float));
      break;
    case TensorDType::kBF16:
    case TensorDType::kF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, data + 2 * i, 2);
        out[i] = entry.dtype == TensorDType::kBF16 ? bf16_to_f32(h) : f16_to_f32(h);
      }
      break;
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                       const std::function<std::vector<float>(size_t i)>& values,
                       const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const SafetensorsEntry& e : entries) {
    TS_ASSERT(e.name != "__metadata__" && !header.contains(e.name), "tensor name ", e.name, " twice");
    const uint64_t bytes = static_cast<uint64_t>(e.numel()) * dtype_bytes(e.dtype);
    header[e.name] = {
        {"dtype", safetensors_dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = dump_json(header);
  // The data starts 8-byte aligned, as the safetensors library writes it.
  text.append((8 - text.size() % 8) % 8, ' ');

  const auto closer = [](std::FILE* f) { std::fclose(f); };
  std::unique_ptr<std::FILE, decltype(closer)> file(std::fopen(path.c_str(), "wb"), closer);
  auto fail = [&](const char* what) {
    return CheckpointError(str_cat("cannot write '", path, "': ", what, ": ", std::strerror(errno)));
  };
  if (file == nullptr) throw fail("cannot create it");
  const uint64_t header_bytes = text.size();
  if (std::fwrite(&header_bytes, 8, 1, file.get()) != 1 ||
      std::fwrite(text.data(), 1, text.size(), file.get()) != text.size()) {
    throw fail("write failed");
  }
  std::vector<uint16_t> half;
  for (size_t i = 0; i < entries.size(); ++i) {
    const std::vector<float> v = values(i);
    TS_ASSERT(static_cast<int64_t>(v.size()) == entries[i].numel(), "tensor ", entries[i].name, " has ", v.size(),
              " values for its shape");
    size_t written;
    if (entries[i].dtype == TensorDType::kF32) {
      written = std::fwrite(v.data(), sizeof(float), v.size(), file.get());
    } else {
      TS_ASSERT(entries[i].dtype == TensorDType::kBF16, "Tessera writes F32 or BF16");
      half.resize(v.size());
      for (size_t k = 0; k < v.size(); ++k) half[k] = f32_to_bf16(v[k]);
      written = std::fwrite(half.data(), sizeof(uint16_t), half.size(), file.get());
    }
    if (written != v.size()) throw fail("write failed");
  }
  std::FILE* raw = file.release();
  const bool flushed = std::fflush(raw) == 0;
  const bool closed = std::fclose(raw) == 0;
  if (!flushed || !closed) throw fail("write failed");
}

}  // namespace tessera
