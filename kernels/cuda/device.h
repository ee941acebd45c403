// GPU selection, RAII streams and events, and what Tessera knows about a GPU model (its name, its dense
// bf16 peak for MFU).
//
// Threads: CUDA's current device is per host thread. select_device() binds the calling thread; every other
// thread that issues work for the same GPU (a watchdog, for example) must call cudaSetDevice itself.
#pragma once

#include <cuda_runtime.h>

#include <string>
#include <string_view>

namespace tessera::cuda {

// GPUs this process can see. 0 when there is none, no driver, or a driver too old for this build: never throws
// for those, so tests and the launcher can ask before they decide.
int device_count();

// Binds the calling thread to GPU local_rank % device_count() and returns that index: ranks on one host share
// its GPUs round-robin. Throws ConfigError when no GPU is visible, CudaError when the device cannot be set.
int select_device(int local_rank);

// "NVIDIA H100 80GB HBM3", as the driver reports it. Throws CudaError for a device that does not exist.
std::string device_name(int device);

// The dense (no sparsity) bf16 tensor-core peak, in TFLOP/s, of the GPU model with this name (as
// device_name() reports it): the denominator of MFU. Returns 0 for a model not in the table — an unknown GPU is
// reported as unknown, never guessed. Pure function; needs no GPU.
double dense_bf16_peak_tflops(std::string_view device_name);

// A CUDA stream, destroyed with the object. Move-only. A default-constructed Stream holds none (get() is null,
// which CUDA reads as the legacy default stream: never pass it on).
class Stream {
 public:
  Stream() = default;
  // A new stream on the calling thread's current device that does not synchronize with the legacy default
  // stream (cudaStreamNonBlocking).
  static Stream create();
  ~Stream();
  Stream(Stream&& other) noexcept;
  Stream& operator=(Stream&& other) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  cudaStream_t get() const { return stream_; }
  // Blocks the host until everything issued to the stream so far has finished.
  void synchronize() const;

 private:
  explicit Stream(cudaStream_t stream) : stream_(stream) {}
  void reset();
  cudaStream_t stream_ = nullptr;
};

// A CUDA event without timing (the cheap kind, for ordering streams), destroyed with the object. Move-only.
class Event {
 public:
  Event() = default;
  // A new event on the calling thread's current device.
  static Event create();
  ~Event();
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  cudaEvent_t get() const { return event_; }
  bool valid() const { return event_ != nullptr; }
  // Captures the work issued to `stream` so far. Does not block.
  void record(cudaStream_t stream) const;
  // Makes `stream` wait (on the device, not the host) until the captured work has finished.
  void block(cudaStream_t stream) const;
  // True once the captured work has finished (or nothing was recorded). Never blocks; throws CudaError if
  // that work failed.
  bool query() const;
  // Blocks the host until the captured work has finished.
  void synchronize() const;

 private:
  explicit Event(cudaEvent_t event) : event_(event) {}
  void reset();
  cudaEvent_t event_ = nullptr;
};

}  // namespace tessera::cuda
