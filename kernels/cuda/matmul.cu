// Linear layer forward/backward: the products through Gemm (cuBLASLt), plus the small kernels of the
// fallbacks when an epilogue is not available (bias add, column sums).
//
// Row-major products, with Gemm's op(A) op(B):
//   forward   out[N,OC]    = inp[N,C] . W[OC,C]^T          (+ bias per column: BIAS or GELU_AUX_BIAS epilogue)
//   backward  d_inp[N,C]   = d_out[N,OC] . W[OC,C]
//             d_W[OC,C]   += d_out[N,OC]^T . inp[N,C]      (+ d_bias[OC] = rows of d_out^T summed: BGRADB)
// With bf16 T the products read bf16, accumulate in f32 and store bf16 (forward, d_inp) or f32 (d_W).
#include <type_traits>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gelu.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/matmul_kernels.cuh"

namespace tessera::cuda {

namespace {

// out[OC] += column sums of in[N, OC], deterministically.
template <typename T>
void accumulate_column_sums(float* out, const T* in, int64_t N, int64_t OC, const Context& ctx) {
  const ColumnSumChunks c = column_sum_chunks(N);
  const int64_t chunks = c.count, rows_per_chunk = c.rows;
  Scratch partial(ctx, static_cast<size_t>(chunks * OC) * sizeof(float));
  const dim3 grid(blocks_for(OC, kTileColumns), static_cast<unsigned>(chunks));
  column_sums_partial_kernel<<<grid, dim3(kTileColumns, kTileRows), 0, ctx.stream>>>(partial.f32(), in, N, OC,
                                                                                     rows_per_chunk);
  CUDA_CHECK_LAUNCH();
  accumulate_chunks_kernel<<<blocks_for(OC, 256), 256, 0, ctx.stream>>>(out, partial.f32(), chunks, OC);
  CUDA_CHECK_LAUNCH();
}

// The forward product out[N,OC] = inp W^T, no epilogue, into D of type D_T.
template <typename T>
GemmProblem forward_problem(const T* inp, const T* weight, int64_t N, int64_t C, int64_t OC) {
  GemmProblem p(linear_forward_geometry(N, C, OC));
  p.a = inp;
  p.a_type = gemm_type<T>();
  p.b = weight;
  p.b_type = gemm_type<T>();
  return p;
}

}  // namespace

template <typename T>
void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int64_t N, int64_t C, int64_t OC,
                    const Context& ctx) {
  if (N == 0 || OC == 0) return;
  GemmProblem p = forward_problem(inp, weight, N, C, OC);
  p.d = out;
  p.d_type = gemm_type<T>();
  if (bias == nullptr) {
    ctx.gemm->run(p, ctx.stream);
    return;
  }
  p.epilogue = GemmEpilogue::kBias;
  p.vector = const_cast<T*>(bias);  // read only: cuBLASLt takes one pointer for bias and bias gradient
  if (ctx.gemm->try_run(p, ctx.stream)) return;
  p.epilogue = GemmEpilogue::kNone;
  p.vector = nullptr;
  if constexpr (std::is_same_v<T, float>) {
    // out = bias in every row, then out += inp W^T: the CPU twin's order.
    broadcast_rows_kernel<<<grid_size(N * OC, 256), 256, 0, ctx.stream>>>(out, bias, N, OC);
    CUDA_CHECK_LAUNCH();
    p.beta = 1.0f;
    ctx.gemm->run(p, ctx.stream);
  } else {
    // The product in f32, then the bias added and the sum rounded once.
    Scratch product(ctx, static_cast<size_t>(N * OC) * sizeof(float));
    p.d = product.f32();
    p.d_type = CUDA_R_32F;
    ctx.gemm->run(p, ctx.stream);
    add_bias_kernel<<<grid_size(N * OC, 256), 256, 0, ctx.stream>>>(out, product.f32(), bias, N, OC);
    CUDA_CHECK_LAUNCH();
  }
}

template <typename T>
void matmul_gelu_forward(T* out_gelu, T* pre_gelu, const T* inp, const T* weight, const T* bias, int64_t N, int64_t C,
                         int64_t OC, const Context& ctx) {
  if (N == 0 || OC == 0) return;
  if (bias != nullptr) {
    GemmProblem p = forward_problem(inp, weight, N, C, OC);
    p.d = out_gelu;
    p.d_type = gemm_type<T>();
    p.epilogue = GemmEpilogue::kGeluBias;
    p.vector = const_cast<T*>(bias);  // read only
    p.aux = pre_gelu;
    p.ld_aux = OC;
    if (ctx.gemm->try_run(p, ctx.stream)) return;
  }
  matmul_forward(pre_gelu, inp, weight, bias, N, C, OC, ctx);
  gelu_forward(out_gelu, pre_gelu, N * OC, ctx);
}

template <typename T>
void matmul_backward(T* d_inp, float* d_weight, float* d_bias, const T* d_out, const T* inp, const T* weight, int64_t N,
                     int64_t C, int64_t OC, const Context& ctx) {
  if (OC == 0 || C == 0) return;
  if (d_inp != nullptr && N > 0) {
    GemmProblem p(linear_input_gradient_geometry(N, C, OC));
    p.a = d_out;
    p.a_type = gemm_type<T>();
    p.b = weight;
    p.b_type = gemm_type<T>();
    p.d = d_inp;
    p.d_type = gemm_type<T>();
    ctx.gemm->run(p, ctx.stream);
  }
  if (N == 0) return;
  GemmProblem p(linear_weight_gradient_geometry(N, C, OC));
  p.a = d_out;  // stored [N, OC]: op(A) = d_out^T
  p.a_type = gemm_type<T>();
  p.b = inp;
  p.b_type = gemm_type<T>();
  p.d = d_weight;
  p.d_type = CUDA_R_32F;
  p.beta = 1.0f;
  if (d_bias != nullptr) {
    // BGRADB writes the bias gradient (f32, D's type); the contract accumulates, so it goes to scratch and is
    // added after.
    Scratch column_sums(ctx, static_cast<size_t>(OC) * sizeof(float));
    p.epilogue = GemmEpilogue::kBiasGradient;
    p.vector = column_sums.f32();
    if (ctx.gemm->try_run(p, ctx.stream)) {
      add(d_bias, d_bias, column_sums.f32(), OC, ctx);
      return;
    }
    p.epilogue = GemmEpilogue::kNone;
    p.vector = nullptr;
    accumulate_column_sums(d_bias, d_out, N, OC, ctx);
  }
  ctx.gemm->run(p, ctx.stream);
}

template void matmul_forward<float>(float*, const float*, const float*, const float*, int64_t, int64_t, int64_t,
                                    const Context&);
template void matmul_forward<bf16>(bf16*, const bf16*, const bf16*, const bf16*, int64_t, int64_t, int64_t,
                                   const Context&);
template void matmul_gelu_forward<float>(float*, float*, const float*, const float*, const float*, int64_t, int64_t,
                                         int64_t, const Context&);
template void matmul_gelu_forward<bf16>(bf16*, bf16*, const bf16*, const bf16*, const bf16*, int64_t, int64_t, int64_t,
                                        const Context&);
template void matmul_backward<float>(float*, float*, float*, const float*, const float*, const float*, int64_t, int64_t,
                                     int64_t, const Context&);
template void matmul_backward<bf16>(bf16*, float*, float*, const bf16*, const bf16*, const bf16*, int64_t, int64_t,
                                    int64_t, const Context&);

}  // namespace tessera::cuda
