// Size-bucketed caching of device memory (see the header's notes).
#include "kernels/cuda/caching_allocator.h"

#include <algorithm>

#include "core/check.h"
#include "kernels/cuda/cuda_check.h"

namespace tessera::cuda {

namespace {
constexpr size_t kSmallStep = 512;
constexpr size_t kLargeThreshold = size_t{1} << 20;
constexpr size_t kLargeStep = size_t{2} << 20;
constexpr double kMiB = 1024.0 * 1024.0;

size_t round_up(size_t bytes, size_t step) { return (bytes + step - 1) / step * step; }
}  // namespace

size_t CachingAllocator::bucket_size(size_t bytes) {
  if (bytes == 0) return kSmallStep;
  return bytes <= kLargeThreshold ? round_up(bytes, kSmallStep) : round_up(bytes, kLargeStep);
}

CachingAllocator::CachingAllocator(int device) : device_(device) {}

CachingAllocator::~CachingAllocator() {
  // Errors cannot be reported from a destructor; the process is usually ending anyway.
  for (const auto& [size, ptr] : free_blocks_) cudaFree(ptr);
  for (const auto& [ptr, size] : in_use_) cudaFree(ptr);
}

void* CachingAllocator::allocate(size_t bytes) {
  const size_t size = bucket_size(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  void* ptr = nullptr;
  if (auto it = free_blocks_.find(size); it != free_blocks_.end()) {
    ptr = it->second;
    free_blocks_.erase(it);
    stats_.cached_bytes -= size;
    ++stats_.cache_hits;
  } else {
    CUDA_CHECK(cudaSetDevice(device_));
    // No cudaFree of cached blocks to make room: it synchronizes the device, and with NCCL kernels in flight
    // that wait for a peer it can hang every rank (Note [No frees under communication] in the header).
    const cudaError_t status = cudaMalloc(&ptr, size);
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      throw CudaError(str_cat("out of GPU memory: could not allocate ", size / kMiB, " MiB on GPU ", device_, " (",
                              stats_.in_use_bytes / kMiB, " MiB in use by Tessera, ", stats_.cached_bytes / kMiB,
                              " MiB cached in free blocks of other sizes",
                              process_label().empty() ? "" : "; " + process_label(),
                              "); reduce train.global_batch (or raise parallel.micro_batches), train.seq_len or "
                              "the model, or spread it over more GPUs (parallel.tp, parallel.pp)"));
    }
    CUDA_CHECK(status);
    ++stats_.device_allocations;
  }
  in_use_.emplace(ptr, size);
  stats_.in_use_bytes += size;
  stats_.peak_in_use_bytes = std::max(stats_.peak_in_use_bytes, stats_.in_use_bytes);
  return ptr;
}

void CachingAllocator::free(void* ptr) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = in_use_.find(ptr);
  TS_ASSERT(it != in_use_.end(), "freeing device memory this allocator did not hand out");
  const size_t size = it->second;
  in_use_.erase(it);
  stats_.in_use_bytes -= size;
  free_blocks_.emplace(size, ptr);
  stats_.cached_bytes += size;
}

void CachingAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(mutex_);
  release_cached_locked();
}

void CachingAllocator::release_cached_locked() {
  CUDA_CHECK(cudaSetDevice(device_));
  while (!free_blocks_.empty()) {
    const auto [size, ptr] = *free_blocks_.begin();
    free_blocks_.erase(free_blocks_.begin());
    stats_.cached_bytes -= size;
    ++stats_.device_frees;
    CUDA_CHECK(cudaFree(ptr));
  }
}

CachingAllocator::Stats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

}  // namespace tessera::cuda
