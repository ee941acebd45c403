// Shard files and the virtual-dataset file of a checkpoint, through the HDF5 C API.
#include "launcher/checkpoints/checkpoint_shard.h"

#include <cstring>
#include <map>
#include <optional>
#include <utility>

#include "core/check.h"
#include "launcher/common/durable_file.h"
#include "launcher/common/regular_file.h"

namespace tessera {

namespace {

herr_t record_innermost(unsigned n, const H5E_error2_t* error, void* data) {
  if (n == 0 && error->desc != nullptr) *static_cast<std::string*>(data) = error->desc;
  return 0;
}

// ": <HDF5's reason>" or "".
std::string reason() {
  const std::string detail = hdf5_error_detail();
  return detail.empty() ? std::string() : " (HDF5: " + detail + ")";
}

std::vector<hsize_t> dims_of(const std::vector<int64_t>& shape) { return {shape.begin(), shape.end()}; }

template <typename Repeated>
std::vector<int64_t> to_vector(const Repeated& values) {
  return {values.begin(), values.end()};
}

class WriteContext {
 public:
  explicit WriteContext(std::string path) : path_(std::move(path)) {}

  void check(bool ok, const std::string& what) const {
    TS_CHECK(ok, CheckpointError, "cannot write checkpoint file '", path_, "': ", what, reason(),
             ". Check that the disk is not full and the run directory is writable.");
  }

  void string_attribute(hid_t object, const char* name, const std::string& value) const {
    H5Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
    check(type.valid() && H5Tset_size(type.get(), value.size() + 1) >= 0, "string type");
    H5Handle space(H5Screate(H5S_SCALAR), H5Sclose);
    H5Handle attribute(H5Acreate2(object, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    check(attribute.valid() && H5Awrite(attribute.get(), type.get(), value.c_str()) >= 0,
          std::string("attribute ") + name);
  }

  void int_attribute(hid_t object, const char* name, const std::vector<int64_t>& values) const {
    const hsize_t n = values.size();
    H5Handle space(n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, nullptr), H5Sclose);
    H5Handle attribute(H5Acreate2(object, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    check(attribute.valid() && H5Awrite(attribute.get(), H5T_NATIVE_INT64, values.data()) >= 0,
          std::string("attribute ") + name);
  }

  // Link creation that makes missing groups on the way ("optim/exp_avg/...").
  H5Handle intermediate_groups() const {
    H5Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
    check(lcpl.valid() && H5Pset_create_intermediate_group(lcpl.get(), 1) >= 0, "link properties");
    return lcpl;
  }

 private:
  std::string path_;
};

}  // namespace

std::string hdf5_error_detail() {
  std::string detail;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, record_innermost, &detail);
  return detail;
}

checkpoint::Shard write_shard_file(const std::string& path, const std::string& file_name,
                                   const std::vector<ShardWriteItem>& items, int64_t step,
                                   const std::function<void(int64_t items, int64_t bytes)>& after_item) {
  silence_hdf5_errors();
  const WriteContext context(path);
  checkpoint::Shard shard;
  {
    H5Handle file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    context.check(file.valid(), "cannot create it");
    context.string_attribute(file.get(), "format", kShardFormat);
    context.int_attribute(file.get(), "step", {step});
    H5Handle lcpl = context.intermediate_groups();
    // Contiguous storage, never pre-filled: every element is written once, straight from memory.
    H5Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    context.check(dcpl.valid() && H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER) >= 0, "dataset properties");
    int64_t written_bytes = 0;
    for (const ShardWriteItem& item : items) {
      const checkpoint::TensorSlice& slice = item.slice;
      const std::vector<hsize_t> count = dims_of(to_vector(slice.count()));
      H5Handle file_space(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr), H5Sclose);
      H5Handle dataset(H5Dcreate2(file.get(), slice.dataset().c_str(), H5T_IEEE_F32LE, file_space.get(), lcpl.get(),
                                  dcpl.get(), H5P_DEFAULT),
                       H5Dclose);
      context.check(dataset.valid(), "cannot create dataset '" + slice.dataset() + "'");
      // The box's elements in memory: item.runs.rows runs of cols floats, stride apart. Contiguous runs are
      // written straight from memory; strided ones (column-split shards) through a hyperslab of memory.
      const MemoryRuns& runs = item.runs;
      const bool contiguous = runs.rows == 1 || runs.stride == runs.cols;
      const hsize_t extent =
          static_cast<hsize_t>(contiguous ? runs.rows * runs.cols : (runs.rows - 1) * runs.stride + runs.cols);
      H5Handle memory_space(H5Screate_simple(1, &extent, nullptr), H5Sclose);
      if (!contiguous) {
        const hsize_t start = 0, stride = runs.stride, count = runs.rows, block = runs.cols;
        context.check(H5Sselect_hyperslab(memory_space.get(), H5S_SELECT_SET, &start, &stride, &count, &block) >= 0,
                      "memory selection of '" + slice.dataset() + "'");
      }
      context.check(H5Dwrite(dataset.get(), H5T_NATIVE_FLOAT, memory_space.get(), H5S_ALL, H5P_DEFAULT,
                             item.host + runs.start) >= 0,
                    "cannot write dataset '" + slice.dataset() + "'");
      context.string_attribute(dataset.get(), "global_name", slice.name());
      context.string_attribute(dataset.get(), "kind", state_kind_group(from_proto(slice.kind())));
      context.int_attribute(dataset.get(), "global_shape", to_vector(slice.global_shape()));
      context.int_attribute(dataset.get(), "offset", to_vector(slice.offset()));
      *shard.add_tensors() = slice;
      written_bytes += static_cast<int64_t>(runs.rows * runs.cols * sizeof(float));
      if (after_item) after_item(shard.tensors_size(), written_bytes);
    }
    context.check(file.close() >= 0, "cannot finish it (flush failed)");
  }
  uint64_t size = 0;
  const uint64_t hash = hash_and_sync_file(path, &size);
  shard.mutable_file()->set_file(file_name);
  shard.mutable_file()->set_size_bytes(size);
  shard.mutable_file()->set_xxh64(hash);
  return shard;
}

ShardReader::ShardReader(const std::string& path) : path_(path) {
  silence_hdf5_errors();
  const std::string problem = regular_file_problem(path);
  TS_CHECK(problem.empty(), CheckpointError, "checkpoint file '", path, "' ", problem);
  TS_CHECK(H5Fis_hdf5(path.c_str()) > 0, CheckpointError, "checkpoint file '", path, "' is missing or not an HDF5 file",
           reason());
  file_ = H5Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  TS_CHECK(file_.valid(), CheckpointError, "cannot open checkpoint file '", path, "'", reason());
}

namespace {

// The dataset's attribute `name` as a string, or nothing when it is missing or not a string.
std::optional<std::string> string_attribute(hid_t object, const char* name) {
  if (H5Aexists(object, name) <= 0) return std::nullopt;
  H5Handle attribute(H5Aopen(object, name, H5P_DEFAULT), H5Aclose);
  if (!attribute.valid()) return std::nullopt;
  H5Handle type(H5Aget_type(attribute.get()), H5Tclose);
  if (!type.valid() || H5Tget_class(type.get()) != H5T_STRING || H5Tis_variable_str(type.get()) > 0) {
    return std::nullopt;
  }
  const size_t size = H5Tget_size(type.get());
  std::string value(size, '\0');
  if (size == 0 || H5Aread(attribute.get(), type.get(), value.data()) < 0) return std::nullopt;
  value.resize(std::strlen(value.c_str()));
  return value;
}

// The dataset's integer attribute `name` (a scalar or a vector), or nothing.
std::optional<std::vector<int64_t>> int_attribute(hid_t object, const char* name) {
  if (H5Aexists(object, name) <= 0) return std::nullopt;
  H5Handle attribute(H5Aopen(object, name, H5P_DEFAULT), H5Aclose);
  if (!attribute.valid()) return std::nullopt;
  H5Handle space(H5Aget_space(attribute.get()), H5Sclose);
  const hssize_t n = space.valid() ? H5Sget_simple_extent_npoints(space.get()) : -1;
  if (n < 0 || n > 64) return std::nullopt;
  std::vector<int64_t> values(static_cast<size_t>(n));
  if (n > 0 && H5Aread(attribute.get(), H5T_NATIVE_INT64, values.data()) < 0) return std::nullopt;
  return values;
}

}  // namespace

void ShardReader::read(const checkpoint::TensorSlice& slice, const Box& within, float* host, int64_t host_count,
                       const MemoryRuns& runs) {
  const std::string& dataset_path = slice.dataset();
  auto fail = [&](const std::string& what) {
    return CheckpointError(str_cat("checkpoint file '", path_, "', dataset '", dataset_path, "': ", what, reason(),
                                   ". The file does not match its manifest: the checkpoint is damaged."));
  };
  H5Handle dataset(H5Dopen2(file_.get(), dataset_path.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dataset.valid()) throw fail("missing");
  H5Handle file_space(H5Dget_space(dataset.get()), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(file_space.get());
  std::vector<hsize_t> dims(rank > 0 ? rank : 0);
  if (rank >= 0) H5Sget_simple_extent_dims(file_space.get(), dims.data(), nullptr);
  if (rank < 0 || dims != dims_of(to_vector(slice.count()))) throw fail("its shape differs from the manifest's");
  if (string_attribute(dataset.get(), "global_name") != slice.name() ||
      string_attribute(dataset.get(), "kind") != std::string(state_kind_group(from_proto(slice.kind())))) {
    throw fail(str_cat("its attributes do not name ", state_kind_group(from_proto(slice.kind())), "/", slice.name()));
  }
  if (int_attribute(dataset.get(), "global_shape") != to_vector(slice.global_shape()) ||
      int_attribute(dataset.get(), "offset") != to_vector(slice.offset())) {
    throw fail("its global_shape or offset attribute differs from the manifest's");
  }
  const std::vector<hsize_t> start = dims_of(within.offset), count = dims_of(within.count);
  if (H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr) < 0) {
    throw fail("bad selection");
  }
  TS_ASSERT(runs.start + (runs.rows - 1) * runs.stride + runs.cols <= host_count, "read past the piece");
  const hsize_t extent = static_cast<hsize_t>(host_count);
  H5Handle memory_space(H5Screate_simple(1, &extent, nullptr), H5Sclose);
  const hsize_t memory_start = runs.start, stride = std::max(runs.stride, runs.cols);
  const hsize_t rows = runs.rows, block = runs.cols;
  if (H5Sselect_hyperslab(memory_space.get(), H5S_SELECT_SET, &memory_start, &stride, &rows, &block) < 0) {
    throw fail("bad memory selection");
  }
  if (H5Dread(dataset.get(), H5T_NATIVE_FLOAT, memory_space.get(), file_space.get(), H5P_DEFAULT, host) < 0) {
    throw fail("cannot read it");
  }
}

void write_virtual_file(const std::string& path, const checkpoint::Manifest& manifest) {
  silence_hdf5_errors();
  const WriteContext context(path);
  // The slices of each (kind, name), in the manifest's order of first appearance.
  std::vector<std::pair<int, std::string>> order;
  std::map<std::pair<int, std::string>,
           std::vector<std::pair<const checkpoint::Shard*, const checkpoint::TensorSlice*>>>
      slices;
  for (const checkpoint::Shard& shard : manifest.shards()) {
    for (const checkpoint::TensorSlice& slice : shard.tensors()) {
      const std::pair<int, std::string> key{static_cast<int>(slice.kind()), slice.name()};
      if (slices.count(key) == 0) order.push_back(key);
      slices[key].push_back({&shard, &slice});
    }
  }
  H5Handle file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  context.check(file.valid(), "cannot create it");
  context.string_attribute(file.get(), "format", kVirtualFormat);
  context.int_attribute(file.get(), "step", {manifest.step()});
  H5Handle lcpl = context.intermediate_groups();
  for (const auto& key : order) {
    const auto& parts = slices.at(key);
    const StateKind kind = from_proto(static_cast<checkpoint::TensorKind>(key.first));
    const std::string name = std::string(state_kind_group(kind)) + "/" + key.second;
    const std::vector<hsize_t> shape = dims_of(to_vector(parts.front().second->global_shape()));
    const int rank = static_cast<int>(shape.size());
    H5Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    context.check(dcpl.valid(), "dataset properties");
    for (const auto& [shard, slice] : parts) {
      H5Handle virtual_space(H5Screate_simple(rank, shape.data(), nullptr), H5Sclose);
      const std::vector<hsize_t> offset = dims_of(to_vector(slice->offset()));
      const std::vector<hsize_t> count = dims_of(to_vector(slice->count()));
      H5Handle source_space(H5Screate_simple(rank, count.data(), nullptr), H5Sclose);
      context.check(H5Sselect_hyperslab(virtual_space.get(), H5S_SELECT_SET, offset.data(), nullptr, count.data(),
                                        nullptr) >= 0 &&
                        H5Pset_virtual(dcpl.get(), virtual_space.get(), shard->file().file().c_str(),
                                       slice->dataset().c_str(), source_space.get()) >= 0,
                    "cannot map '" + name + "' onto " + shard->file().file());
    }
    H5Handle space(H5Screate_simple(rank, shape.data(), nullptr), H5Sclose);
    H5Handle dataset(
        H5Dcreate2(file.get(), name.c_str(), H5T_IEEE_F32LE, space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT),
        H5Dclose);
    context.check(dataset.valid(), "cannot create virtual dataset '" + name + "'");
    context.string_attribute(dataset.get(), "global_name", key.second);
    context.string_attribute(dataset.get(), "kind", state_kind_group(kind));
  }
  context.check(file.close() >= 0, "cannot finish it (flush failed)");
}

}  // namespace tessera
