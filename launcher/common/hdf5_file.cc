// HDF5 reading helpers.
#include "launcher/common/hdf5_file.h"

#include <filesystem>

#include "core/check.h"
#include "launcher/common/regular_file.h"

namespace tessera {

H5Handle& H5Handle::operator=(H5Handle&& other) noexcept {
  if (this != &other) {
    if (id_ >= 0 && closer_) closer_(id_);
    id_ = other.id_;
    closer_ = other.closer_;
    other.id_ = H5I_INVALID_HID;
  }
  return *this;
}

herr_t H5Handle::close() {
  herr_t status = 0;
  if (id_ >= 0 && closer_) status = closer_(id_);
  id_ = H5I_INVALID_HID;
  return status;
}

H5Handle::~H5Handle() {
  if (id_ >= 0 && closer_) closer_(id_);
}

void silence_hdf5_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

H5Reader::H5Reader(const std::string& path) : path_(path) {
  silence_hdf5_errors();
  const std::string problem = regular_file_problem(path);
  TS_CHECK(problem.empty(), DataError, "'", path, "' ", problem == "does not exist" ? "does not exist" : problem);
  TS_CHECK(H5Fis_hdf5(path.c_str()) > 0, DataError, "'", path, "' is not an HDF5 file");
  file_ = H5Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  TS_CHECK(file_.valid(), DataError, "cannot open HDF5 file '", path, "'");
}

bool H5Reader::has_attribute(const std::string& name) const { return H5Aexists(file_.get(), name.c_str()) > 0; }

H5Handle H5Reader::open_attribute(const std::string& name) const {
  TS_CHECK(has_attribute(name), DataError, path_, ": missing attribute '", name, "'");
  H5Handle attr(H5Aopen(file_.get(), name.c_str(), H5P_DEFAULT), H5Aclose);
  TS_CHECK(attr.valid(), DataError, path_, ": cannot open attribute '", name, "'");
  return attr;
}

int64_t H5Reader::attribute_int(const std::string& name) const {
  H5Handle attr = open_attribute(name);
  int64_t value = 0;
  TS_CHECK(H5Aread(attr.get(), H5T_NATIVE_INT64, &value) >= 0, DataError, path_, ": attribute '", name,
           "' is not an integer");
  return value;
}

double H5Reader::attribute_double(const std::string& name) const {
  H5Handle attr = open_attribute(name);
  double value = 0;
  TS_CHECK(H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &value) >= 0, DataError, path_, ": attribute '", name,
           "' is not a number");
  return value;
}

std::vector<std::string> H5Reader::attribute_strings(const std::string& name) const {
  H5Handle attr = open_attribute(name);
  H5Handle type(H5Aget_type(attr.get()), H5Tclose);
  TS_CHECK(H5Tget_class(type.get()) == H5T_STRING, DataError, path_, ": attribute '", name, "' is not a string");
  H5Handle space(H5Aget_space(attr.get()), H5Sclose);
  hssize_t n = H5Sget_simple_extent_npoints(space.get());
  std::vector<std::string> out;
  if (H5Tis_variable_str(type.get()) > 0) {
    H5Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
    std::vector<char*> raw(static_cast<size_t>(n), nullptr);
    TS_CHECK(H5Aread(attr.get(), mem.get(), raw.data()) >= 0, DataError, path_, ": cannot read attribute '", name, "'");
    for (char* s : raw) out.emplace_back(s ? s : "");
    H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, raw.data());
  } else {
    size_t size = H5Tget_size(type.get());
    std::vector<char> raw(size * static_cast<size_t>(n) + 1, '\0');
    H5Handle mem(H5Tcopy(type.get()), H5Tclose);
    TS_CHECK(H5Aread(attr.get(), mem.get(), raw.data()) >= 0, DataError, path_, ": cannot read attribute '", name, "'");
    for (hssize_t i = 0; i < n; ++i) {
      std::string s(raw.data() + i * size, size);
      out.emplace_back(s.c_str());
    }
  }
  return out;
}

std::string H5Reader::attribute_string(const std::string& name) const {
  std::vector<std::string> all = attribute_strings(name);
  TS_CHECK(all.size() == 1, DataError, path_, ": attribute '", name, "' is not a single string");
  return all[0];
}

bool H5Reader::has_dataset(const std::string& name) const {
  // Check each path component so a missing group is "no" rather than an error.
  std::string prefix;
  size_t start = 0;
  while (true) {
    size_t slash = name.find('/', start);
    prefix = name.substr(0, slash);
    if (H5Lexists(file_.get(), prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  H5Handle object(H5Oopen(file_.get(), name.c_str(), H5P_DEFAULT), H5Oclose);
  return object.valid() && H5Iget_type(object.get()) == H5I_DATASET;
}

H5Handle H5Reader::open_dataset(const std::string& name) const {
  TS_CHECK(has_dataset(name), DataError, path_, ": missing dataset '", name, "'");
  H5Handle dataset(H5Dopen2(file_.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
  TS_CHECK(dataset.valid(), DataError, path_, ": cannot open dataset '", name, "'");
  return dataset;
}

std::vector<int64_t> H5Reader::dataset_shape(const std::string& name) const {
  H5Handle dataset = open_dataset(name);
  H5Handle space(H5Dget_space(dataset.get()), H5Sclose);
  int rank = H5Sget_simple_extent_ndims(space.get());
  TS_CHECK(rank >= 0, DataError, path_, ": cannot read the shape of '", name, "'");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

void H5Reader::read_dataset(const std::string& name, hid_t mem_type, void* out, size_t count,
                            std::vector<int64_t>* shape) const {
  H5Handle dataset = open_dataset(name);
  (void)count;
  TS_CHECK(H5Dread(dataset.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0, DataError, path_,
           ": cannot read dataset '", name, "' (wrong type?)");
  if (shape) *shape = dataset_shape(name);
}

namespace {
size_t element_count(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}
}  // namespace

std::vector<float> H5Reader::read_f32(const std::string& name, std::vector<int64_t>* shape) const {
  std::vector<float> out(element_count(dataset_shape(name)));
  read_dataset(name, H5T_NATIVE_FLOAT, out.data(), out.size(), shape);
  return out;
}

std::vector<double> H5Reader::read_f64(const std::string& name, std::vector<int64_t>* shape) const {
  std::vector<double> out(element_count(dataset_shape(name)));
  read_dataset(name, H5T_NATIVE_DOUBLE, out.data(), out.size(), shape);
  return out;
}

std::vector<int32_t> H5Reader::read_i32(const std::string& name, std::vector<int64_t>* shape) const {
  std::vector<int32_t> out(element_count(dataset_shape(name)));
  read_dataset(name, H5T_NATIVE_INT32, out.data(), out.size(), shape);
  return out;
}

}  // namespace tessera
