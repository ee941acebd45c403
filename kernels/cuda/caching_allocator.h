// CachingAllocator: device memory of one GPU, kept for reuse instead of being given back to the driver.
//
// cudaMalloc is slow and cudaFree synchronizes the whole device, so once a training step has run once (warm),
// later steps must call neither. Requests are rounded up to a size bucket (multiples of 512 bytes up to 1 MiB,
// of 2 MiB above); a freed block goes onto its bucket's free list and the next request for that bucket takes
// it back. Blocks are never split or merged: model and optimizer storage is planned once (TensorArena) and the
// scratch space of the ops asks for the same sizes every step, so exact buckets hit.
//
// Note [Stream-ordered reuse]: a freed block is handed out again at once, without waiting for the GPU. That is
// safe because all work on a CudaBackend's memory is issued to the backend's one stream: whatever read the
// block before it was freed was issued before the free, and whatever its next owner issues runs after that on
// the same stream. Memory that another stream uses (a NCCL stream, say) must not be freed until that stream's
// work is ordered before the compute stream again (the process groups do that with events).
//
// Note [No frees under communication]: cudaFree synchronizes the device. While a NCCL kernel waits for a peer,
// that synchronization waits for it, and the peer may wait for this rank: a hang. So nothing here frees device
// memory behind the caller's back: a full GPU is an out-of-memory error that says how much is cached, and
// release_cached() is for points where no communication is in flight.
//
// Thread-safe: one mutex guards the free lists and statistics.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>

namespace tessera::cuda {

class CachingAllocator {
 public:
  struct Stats {
    size_t in_use_bytes = 0;         // handed out, in bucket sizes
    size_t peak_in_use_bytes = 0;    // the most ever in use at once
    size_t cached_bytes = 0;         // free blocks kept for reuse
    int64_t device_allocations = 0;  // cudaMalloc calls
    int64_t device_frees = 0;        // cudaFree calls
    int64_t cache_hits = 0;          // requests served from a free list
  };

  // Memory of GPU `device`; allocate() and release_cached() make it current on the calling thread.
  explicit CachingAllocator(int device);
  // Gives every block back to the driver (cudaFree, which waits for the device). Blocks still handed out are
  // freed too: the allocator must outlive all of its memory's users.
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // A block of at least `bytes` (at least 256-byte aligned; 0 bytes gives a valid smallest block). Served from
  // the free list of its bucket when possible; otherwise cudaMalloc. Throws CudaError saying how much was asked
  // for, in use and cached when the GPU is full (cached blocks are not freed to make room: Note [No frees under
  // communication]).
  void* allocate(size_t bytes);
  // Returns a block from allocate() to its free list (see Note [Stream-ordered reuse]). Null is ignored.
  void free(void* ptr);
  // Gives the free blocks back to the driver. Synchronizes the device (cudaFree does).
  void release_cached();
  Stats stats() const;

  // The bucket a request of `bytes` falls into: the size actually allocated.
  static size_t bucket_size(size_t bytes);

 private:
  void release_cached_locked();

  int device_;
  mutable std::mutex mutex_;
  std::multimap<size_t, void*> free_blocks_;  // bucket size -> block
  std::unordered_map<void*, size_t> in_use_;  // block -> bucket size
  Stats stats_;
};

}  // namespace tessera::cuda
