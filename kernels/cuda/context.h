// Context: what a CUDA op launcher needs besides its operands — the stream to issue to, device scratch memory
// and the cuBLASLt runner.
//
// Every launcher in kernels/cuda has the name and the parameters of its CPU twin in kernels/cpu, followed by one
// `const Context&`. It issues its work to ctx.stream and returns without waiting for it (unless its comment
// says it synchronizes).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "kernels/cuda/caching_allocator.h"

namespace tessera::cuda {

class Gemm;

struct Context {
  cudaStream_t stream = nullptr;
  CachingAllocator* allocator = nullptr;
  Gemm* gemm = nullptr;
};

// Device scratch memory for the duration of one launcher call: freed when the object dies, which is safe
// while the launched work may still be running (Note [Stream-ordered reuse] in caching_allocator.h) as long as
// all of it was issued to ctx.stream.
class Scratch {
 public:
  Scratch(const Context& ctx, size_t bytes) : allocator_(ctx.allocator), data_(ctx.allocator->allocate(bytes)) {}
  ~Scratch() { allocator_->free(data_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  void* data() const { return data_; }
  float* f32() const { return static_cast<float*>(data_); }
  double* f64() const { return static_cast<double*>(data_); }

 private:
  CachingAllocator* allocator_;
  void* data_;
};

}  // namespace tessera::cuda
