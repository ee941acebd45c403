// Device selection, streams, events and the bf16 peak table.
#include "kernels/cuda/device.h"

#include <array>
#include <utility>

#include "core/check.h"
#include "kernels/cuda/cuda_check.h"

namespace tessera::cuda {

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear it, so that it does not surface at the next check
    return 0;
  }
  return count;
}

int select_device(int local_rank) {
  const int count = device_count();
  TS_CHECK(count > 0, ConfigError,
           "train.device=CUDA, but no CUDA GPU is visible to this process (no device, no driver, or a driver older "
           "than this build's CUDA 13): run on a machine with a GPU, check CUDA_VISIBLE_DEVICES, or set "
           "train.device=CPU");
  TS_ASSERT(local_rank >= 0, "negative local rank ", local_rank);
  const int device = local_rank % count;
  CUDA_CHECK(cudaSetDevice(device));
  return device;
}

std::string device_name(int device) {
  cudaDeviceProp properties{};
  CUDA_CHECK(cudaGetDeviceProperties(&properties, device));
  return properties.name;
}

namespace {

struct PeakEntry {
  std::string_view model;     // a word of the name, exactly: "A100" matches "NVIDIA A100-SXM4-80GB", not "RTX A1000"
  std::string_view variant;   // another word the name must hold ("" = any)
  std::string_view excluded;  // a word that names a different product of the model ("" = none)
  double tflops;
};

// Dense bf16 (fp32 accumulate) tensor-core peaks from NVIDIA's data sheets, boost clock, no sparsity. Only
// models whose variant the name identifies are listed: the H100 NVL and H200 NVL, for example, run at other
// clocks and are left out (unknown) rather than guessed. First match wins.
constexpr std::array<PeakEntry, 9> kPeaks = {{
    {"GH200", "", "", 989.0},
    {"H200", "", "NVL", 989.0},
    {"H100", "HBM3", "NVL", 989.0},  // SXM5: "NVIDIA H100 80GB HBM3"
    {"H100", "SXM5", "NVL", 989.0},
    {"H100", "PCIe", "", 756.0},
    {"A100", "", "", 312.0},  // SXM4 and PCIe, 40 and 80 GB: the same tensor-core peak
    {"A30", "", "", 165.0},
    {"L40S", "", "", 362.0},
    {"L4", "", "", 121.0},
}};

// The words of a device name, split at spaces and dashes: "NVIDIA A100-SXM4-80GB" -> NVIDIA, A100, SXM4, 80GB.
bool has_word(std::string_view name, std::string_view word) {
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find_first_of(" -", start);
    if (end == std::string_view::npos) end = name.size();
    if (name.substr(start, end - start) == word) return true;
    start = end + 1;
  }
  return false;
}

}  // namespace

double dense_bf16_peak_tflops(std::string_view name) {
  for (const PeakEntry& entry : kPeaks) {
    if (!has_word(name, entry.model)) continue;
    if (!entry.variant.empty() && !has_word(name, entry.variant)) continue;
    if (!entry.excluded.empty() && has_word(name, entry.excluded)) continue;
    return entry.tflops;
  }
  return 0.0;
}

// ---- Stream ------------------------------------------------------------------------------------------------

Stream Stream::create() {
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return Stream(stream);
}

Stream::~Stream() { reset(); }

Stream::Stream(Stream&& other) noexcept : stream_(std::exchange(other.stream_, nullptr)) {}

Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    reset();
    stream_ = std::exchange(other.stream_, nullptr);
  }
  return *this;
}

void Stream::synchronize() const { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

void Stream::reset() {
  // A destructor cannot report an error; a failed destroy leaks only the handle.
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
  stream_ = nullptr;
}

// ---- Event -------------------------------------------------------------------------------------------------

Event Event::create() {
  cudaEvent_t event = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  return Event(event);
}

Event::~Event() { reset(); }

Event::Event(Event&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    reset();
    event_ = std::exchange(other.event_, nullptr);
  }
  return *this;
}

void Event::record(cudaStream_t stream) const { CUDA_CHECK(cudaEventRecord(event_, stream)); }

void Event::block(cudaStream_t stream) const { CUDA_CHECK(cudaStreamWaitEvent(stream, event_, 0)); }

bool Event::query() const {
  const cudaError_t status = cudaEventQuery(event_);
  if (status == cudaErrorNotReady) return false;
  CUDA_CHECK(status);
  return true;
}

void Event::synchronize() const { CUDA_CHECK(cudaEventSynchronize(event_)); }

void Event::reset() {
  if (event_ != nullptr) cudaEventDestroy(event_);
  event_ = nullptr;
}

}  // namespace tessera::cuda
