// Reading HDF5 files: RAII handles and typed reads with errors that name the file and the object.
// HDF5's own error stack printing is turned off; failures become the given error type with a message.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

// An HDF5 identifier closed by the given function on destruction. Move-only.
class H5Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  H5Handle() = default;
  H5Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  H5Handle(H5Handle&& other) noexcept : id_(other.id_), closer_(other.closer_) { other.id_ = H5I_INVALID_HID; }
  H5Handle& operator=(H5Handle&& other) noexcept;
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  ~H5Handle();
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes the identifier now and returns the closer's status (negative on failure: for a file written to,
  // the final flush failed); the handle is then empty. 0 if it was already empty.
  herr_t close();

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

// A read-only HDF5 file. Errors are DataError naming the file.
class H5Reader {
 public:
  // Throws DataError if the file is missing or not HDF5.
  explicit H5Reader(const std::string& path);
  const std::string& path() const { return path_; }

  bool has_attribute(const std::string& name) const;
  int64_t attribute_int(const std::string& name) const;
  double attribute_double(const std::string& name) const;
  std::string attribute_string(const std::string& name) const;
  std::vector<std::string> attribute_strings(const std::string& name) const;

  bool has_dataset(const std::string& name) const;
  std::vector<int64_t> dataset_shape(const std::string& name) const;
  // Whole dataset converted to the requested type; the shape is returned through `shape` if not null.
  std::vector<float> read_f32(const std::string& name, std::vector<int64_t>* shape = nullptr) const;
  std::vector<double> read_f64(const std::string& name, std::vector<int64_t>* shape = nullptr) const;
  std::vector<int32_t> read_i32(const std::string& name, std::vector<int64_t>* shape = nullptr) const;

 private:
  H5Handle open_attribute(const std::string& name) const;
  H5Handle open_dataset(const std::string& name) const;
  void read_dataset(const std::string& name, hid_t mem_type, void* out, size_t count,
                    std::vector<int64_t>* shape) const;
  std::string path_;
  H5Handle file_;
};

// Turns off HDF5's automatic error-stack printing for this process (idempotent).
void silence_hdf5_errors();

}  // namespace tessera
