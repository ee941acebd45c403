// Causal grouped-query self-attention through cuDNN's fused flash attention, described with the cuDNN backend graph
// API (tensor and operation descriptors, an operation graph, engine heuristics, an execution plan, variant packs).
//
// cuDNN 9.19 also has dedicated SDPA_FWD/SDPA_BWD operations, but they have no attribute for a causal mask
// (cudnn-frontend combines them with masks only from cuDNN 9.21). Attention is instead described as a graph of
// matmul, pointwise, reduction and reshape operations in the pattern cuDNN's flash-attention engines recognize
// (the composite graph cudnn-frontend builds for causal bf16 attention on cuDNN 9.x); cuDNN fuses the graph
// into one kernel, so the tensors marked virtual below never reach memory.
//
// Layout: no transposes, no copies. Every tensor is 4-d, [b, h, row, column], described by strides into the
// caller's buffers. With H query heads, KV key/value heads (KV divides H), C = H*hs and W = (H + 2*KV)*hs the
// width of a qkv row [Q heads | K heads | V heads], element (b, t, h, d) of Q is at b*T*W + t*W + h*hs + d, so
//   Q          = qkv + 0, dims [B,H,T,hs], strides [T*W, hs, W, 1]
//   K, V       = qkv + C, C + KV*hs elements, dims [B,KV,T,hs], the same strides
//   K^T, V^T   = the same memory with the last two dims and strides swapped: dims [B,KV,hs,T], strides
//                [T*W, hs, 1, W] (what the products Q K^T and dO V^T take; cuDNN's matmul lets query head h use
//                key/value head h / (H/KV) when the second operand has fewer heads)
//   dQ, dK, dV = d_qkv + the same offsets, like Q, K, V
//   O, dO      = dims [B,H,T,hs], strides [T*C, hs, C, 1]
//   Stats      = lse: dims [B,H,T,1], strides [H*T, T, 1, 1], f32
// With KV == H this is the multi-head layout [Q | K | V] of 3C columns, and the graphs are the ones multi-head
// attention has always used.
// 16-byte alignment is declared for every tensor: hs % 8 == 0 puts K and V 16 bytes apart from Q.
//
// Forward. s = 1/sqrt(hs) and the mask value (-inf; the most negative float before cuDNN 9.10, as cudnn-frontend
// uses) are by-value f32 scalars. Virtual tensors are f32 unless marked.
//   S   = Q K^T                          matmul                          [B,H,T,T] virtual
//   S   = S * s                          pointwise MUL
//   S   = row >= column ? S : -inf       GEN_INDEX axis 2 and axis 3 (int32), CMP_GE (bool), BINARY_SELECT
//   M   = max over columns of S          reduction MAX                   [B,H,T,1] virtual
//   E   = exp(S - M)                     SUB, EXP
//   Z   = sum over columns of E          reduction ADD                   [B,H,T,1] virtual
//   lse = M + log Z                      LOG, ADD                        -> Stats
//   P   = E / Z                          DIV, bf16 (the engine takes the second product's A in the I/O type)
//   O   = P V                            matmul                          -> O
// Backward, recomputing P from lse:
//   D   = (sum over d of dO * O) * 1     MUL, reduction ADD, MUL by 1.0  [B,H,T,1] f32, non-virtual scratch
//   S   = Q K^T * s - lse, causally masked as above; P = exp(S)          (no max and sum: lse normalizes)
//   dV  = P^T dO                         RESHAPE P to its transpose [B,H,T(key),T(query)] bf16, matmul -> dV
//   dP  = dO V^T                         matmul
//   dS  = P * (dP - D) * s               SUB, MUL, MUL
//   dK  = dS^T Q                         RESHAPE (bf16), matmul -> dK
//   (with KV < H, dV and dK are first computed per query head, [B,H,T,hs] bf16 virtual, and then summed over
//   the query heads of each group by a reduction ADD into dV and dK [B,KV,T,hs], as cudnn-frontend does)
//   dQ  = dS K                           RESHAPE K^T back to [B,KV,T,hs] (an f32 view, as cudnn-frontend leaves
//                                        it); matmul into a zeroed f32 accumulator [B,H,T,hs] (non-virtual
//                                        scratch, summed into across key blocks); IDENTITY -> dQ (bf16)
// D and the dQ accumulator are the two non-virtual intermediates the backward pattern requires; the op order,
// data types and the "* 1" follow cudnn-frontend's graph, which is what cuDNN's pattern matcher is tested on.
//
// One path describes both graphs (build_attention_graphs): CudnnAttention builds execution plans from them for
// the current GPU, and check_attention_graphs_for_device asks cuDNN's engine heuristics about a GPU that is only
// described, without a GPU at all (Note [Checking the graphs without a GPU]).
#include "kernels/cuda/cudnn_attention.h"

#include <cudnn.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <utility>
#include <vector>

#include "core/check.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/cuda_check.h"

namespace tessera::cuda {

namespace {

constexpr int64_t kBf16Bytes = 2;
constexpr int64_t kTensorAlignment = 16;  // bytes, declared for every tensor
constexpr size_t kScratchAlignment = 256;
// cuDNN 9.8 added graphs bound to no handle and heuristics for a described GPU (Note [Checking the graphs
// without a GPU]): the version of the library loaded, and of the headers (which decide what compiles).
constexpr size_t kFirstVersionDescribingDevices = 90800;
#define TS_CUDNN_DESCRIBES_DEVICES (CUDNN_VERSION >= 90800)

// Unique ids of the tensors in the variant packs. Virtual tensors are numbered from kFirstVirtualUid.
enum Uid : int64_t {
  kUidQ = 1,
  kUidK,
  kUidV,
  kUidO,
  kUidStats,
  kUidDO,
  kUidDQ,
  kUidDK,
  kUidDV,
  kUidScale,
  kUidMaskValue,
  kUidOne,
  kUidSoftmaxSum,
  kUidDQAccumulator,
  kFirstVirtualUid = 100,
};

// cuDNN's own account of the last failure on this thread (cudnnGetLastErrorString), which for a rejected graph
// names the operation or attribute: the status alone is usually just BAD_PARAM or NOT_SUPPORTED.
std::string last_cudnn_message() {
  std::array<char, 1024> message{};
  cudnnGetLastErrorString(message.data(), message.size());
  return std::string(message.data());
}

// cuDNN's text for `status`, then last_cudnn_message(). Valid until the next call on this thread.
const char* cudnn_error_text(cudnnStatus_t status) {
  thread_local std::string text;
  const std::string last = last_cudnn_message();
  text = cudnnGetErrorString(status);
  if (!last.empty()) text += str_cat("; cuDNN's last message: ", last);
  return text.c_str();
}

// CUDNN_CHECK with cudnn_error_text for the text.
#define CUDNN_CHECK_DETAILED(call) \
  TS_GPU_CHECK(call, CUDNN_STATUS_SUCCESS, cudnn_error_text, ::tessera::cuda::throw_cuda_error, "cuDNN")

void set_attribute(cudnnBackendDescriptor_t descriptor, cudnnBackendAttributeName_t name,
                   cudnnBackendAttributeType_t type, int64_t count, const void* values) {
  // Checked like CUDNN_CHECK, with the attribute's number in the statement: the call site alone does not say
  // which of the many attributes cuDNN refused.
  const cudnnStatus_t status = cudnnBackendSetAttribute(descriptor, name, type, count, values);
  if (status != CUDNN_STATUS_SUCCESS) {
    const std::string statement = str_cat("cudnnBackendSetAttribute(attribute ", static_cast<int>(name), ")");
    throw_cuda_error("cuDNN", static_cast<int>(status), cudnn_error_text(status), statement.c_str(), __FILE__,
                     __LINE__);
  }
}

void finalize(cudnnBackendDescriptor_t descriptor) { CUDNN_CHECK_DETAILED(cudnnBackendFinalize(descriptor)); }

// One backend descriptor, destroyed with the object. Move-only.
class Descriptor {
 public:
  explicit Descriptor(cudnnBackendDescriptorType_t type) {
    CUDNN_CHECK_DETAILED(cudnnBackendCreateDescriptor(type, &descriptor_));
  }
  ~Descriptor() {
    if (descriptor_ != nullptr) cudnnBackendDestroyDescriptor(descriptor_);
  }
  Descriptor(Descriptor&& other) noexcept : descriptor_(std::exchange(other.descriptor_, nullptr)) {}
  Descriptor& operator=(Descriptor&& other) noexcept {
    if (this != &other) {
      if (descriptor_ != nullptr) cudnnBackendDestroyDescriptor(descriptor_);
      descriptor_ = std::exchange(other.descriptor_, nullptr);
    }
    return *this;
  }
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;

  cudnnBackendDescriptor_t get() const { return descriptor_; }

 private:
  cudnnBackendDescriptor_t descriptor_ = nullptr;
};

using Dims = std::array<int64_t, 4>;

// The dims and strides of one shape's tensors (see the top of this file).
struct Layout {
  Layout(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs) {
    const int64_t C = H * hs, W = (H + 2 * KV) * hs;
    grouped = KV != H;
    heads = {B, H, T, hs};
    heads_in_qkv = {T * W, hs, W, 1};
    kv_heads = {B, KV, T, hs};
    kv_heads_transposed = {B, KV, hs, T};
    kv_heads_transposed_in_qkv = {T * W, hs, 1, W};
    heads_in_out = {T * C, hs, C, 1};
    heads_packed = {H * T * hs, T * hs, hs, 1};
    scores = {B, H, T, T};
    scores_packed = {H * T * T, T * T, T, 1};
    scores_transposed = {H * T * T, T * T, 1, T};
    rows = {B, H, T, 1};
    rows_packed = {H * T, T, 1, 1};
  }
  bool grouped;  // fewer key/value heads than query heads
  Dims heads, heads_in_qkv, kv_heads, kv_heads_transposed, kv_heads_transposed_in_qkv, heads_in_out, heads_packed;
  Dims scores, scores_packed, scores_transposed;
  Dims rows, rows_packed;
};

// A finalized execution plan and every descriptor it was built from, which stay alive with it as they do in
// cudnn-frontend. Destroyed in reverse order of creation.
struct PlanGraph {
  PlanGraph() = default;
  ~PlanGraph() {
    while (!descriptors.empty()) descriptors.pop_back();
  }
  PlanGraph(const PlanGraph&) = delete;
  PlanGraph& operator=(const PlanGraph&) = delete;

  std::vector<Descriptor> descriptors;
  cudnnBackendDescriptor_t plan = nullptr;  // owned by `descriptors`
  int64_t workspace_bytes = 0;
};

}  // namespace

struct CudnnAttention::Plans {
  bool supported = false;
  std::string reason;  // why not, when !supported
  PlanGraph forward;
  PlanGraph backward;
  // The by-value scalars. Variant packs point at these host values, so they live as long as the plans.
  float scale = 0.0f;
  float mask_value = 0.0f;
  float one = 1.0f;
};

namespace {

// Builds one operation graph into a PlanGraph. Each method describes one operation; `step` names it for the
// error message if cuDNN refuses it.
class GraphBuilder {
 public:
  explicit GraphBuilder(PlanGraph& graph) : graph_(graph) {}

  const std::string& step() const { return step_; }

  // A tensor of the variant pack, found by `uid` at execution.
  cudnnBackendDescriptor_t tensor(int64_t uid, cudnnDataType_t type, const Dims& dims, const Dims& strides) {
    return make_tensor(uid, type, dims, strides, /*is_virtual=*/false, /*is_by_value=*/false);
  }
  // An intermediate that stays inside the fused kernel.
  cudnnBackendDescriptor_t virtual_tensor(cudnnDataType_t type, const Dims& dims, const Dims& strides) {
    return make_tensor(next_virtual_uid_++, type, dims, strides, /*is_virtual=*/true, /*is_by_value=*/false);
  }
  // An f32 scalar passed by value: its variant-pack pointer is a host address, read at execution.
  cudnnBackendDescriptor_t scalar(int64_t uid) {
    const Dims one = {1, 1, 1, 1};
    return make_tensor(uid, CUDNN_DATA_FLOAT, one, one, /*is_virtual=*/false, /*is_by_value=*/true);
  }

  // y = mode(x) elementwise.
  void unary(const char* step, cudnnPointwiseMode_t mode, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    pointwise(step, mode, CUDNN_DATA_FLOAT, -1, x, nullptr, nullptr, y);
  }
  // y = mode(x, b) elementwise, b broadcast over its size-1 dims; the math in `precision`.
  void binary(const char* step, cudnnPointwiseMode_t mode, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t b,
              cudnnBackendDescriptor_t y, cudnnDataType_t precision = CUDNN_DATA_FLOAT) {
    pointwise(step, mode, precision, -1, x, b, nullptr, y);
  }
  // y = keep ? x : b (BINARY_SELECT; `keep` is boolean).
  void select(const char* step, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t keep,
              cudnnBackendDescriptor_t y) {
    pointwise(step, CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, -1, x, b, keep, y);
  }
  // y = the index of each element of x along `axis`.
  void index(const char* step, int64_t axis, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    pointwise(step, CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_FLOAT, axis, x, nullptr, nullptr, y);
  }

  // c = a b over the last two dims, batched over the first two; f32 accumulation.
  void matmul(const char* step, cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c) {
    step_ = step;
    const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    cudnnBackendDescriptor_t desc = create(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    set_attribute(desc, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute);
    finalize(desc);
    cudnnBackendDescriptor_t op = create(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    set_attribute(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a);
    set_attribute(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b);
    set_attribute(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c);
    set_attribute(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &desc);
    finalize(op);
    operations_.push_back(op);
  }

  // y = reduction of x over the dims where y has size 1; f32.
  void reduction(const char* step, cudnnReduceTensorOp_t reduce, cudnnBackendDescriptor_t x,
                 cudnnBackendDescriptor_t y) {
    step_ = step;
    const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    cudnnBackendDescriptor_t desc = create(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    set_attribute(desc, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute);
    set_attribute(desc, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &reduce);
    finalize(desc);
    cudnnBackendDescriptor_t op = create(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    set_attribute(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &desc);
    set_attribute(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    set_attribute(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    finalize(op);
    operations_.push_back(op);
  }

  // y = x seen through y's dims and strides (here: a transpose that moves no data).
  void reshape(const char* step, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    step_ = step;
    cudnnBackendDescriptor_t op = create(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    set_attribute(op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    set_attribute(op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    finalize(op);
    operations_.push_back(op);
  }

  // Finalizes the operation graph for the handle's GPU, asks the heuristics (mode A, then the fallback list) for
  // engine configurations and keeps the first whose execution plan finalizes. Throws CudaError listing every
  // refusal when none does.
  void build_plan(cudnnHandle_t handle) { choose_engine(handle, nullptr); }

  // Finalizes the operation graph bound to no GPU and asks the heuristics (mode A, then the fallback list) for
  // engine configurations for the GPU `device_properties` describes; builds no plan. Throws CudaError listing
  // every refusal when neither mode gives one. See Note [Checking the graphs without a GPU].
  void check_engines(cudnnBackendDescriptor_t device_properties) { choose_engine(nullptr, device_properties); }

 private:
  // build_plan() when `handle` is set, check_engines() when `device_properties` is (exactly one of the two).
  void choose_engine(cudnnHandle_t handle, cudnnBackendDescriptor_t device_properties) {
    step_ = "operation graph";
    cudnnBackendDescriptor_t operation_graph = create(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    set_attribute(operation_graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                  static_cast<int64_t>(operations_.size()), operations_.data());
    // From cuDNN 9.8 the handle is optional; a graph without one is what heuristics for a described GPU take.
    if (handle != nullptr) {
      set_attribute(operation_graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    }
    finalize(operation_graph);

    std::string refusals;
    for (const cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
      std::string refused;
      if (try_engines(operation_graph, mode, handle, device_properties, refused)) return;
      refusals += str_cat(refusals.empty() ? "" : "; ", "heuristics mode ", static_cast<int>(mode), ": ", refused,
                          " (cuDNN's last message: ", last_cudnn_message(), ")");
    }
    throw CudaError(str_cat("cuDNN has no engine for this graph: ", refusals));
  }

  // Asks the heuristics in `mode` for engine configurations, for `device_properties` if set and the handle's GPU
  // otherwise. With a handle, keeps the first configuration whose execution plan finalizes (returns true);
  // without one, returns true when there is any configuration. Otherwise returns false with what the
  // heuristics, or each configuration, answered in `refused`.
  bool try_engines(cudnnBackendDescriptor_t operation_graph, cudnnBackendHeurMode_t mode, cudnnHandle_t handle,
                   cudnnBackendDescriptor_t device_properties, std::string& refused) {
    step_ = str_cat("engine heuristics, mode ", static_cast<int>(mode));
    cudnnBackendDescriptor_t heuristics = create(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    set_attribute(heuristics, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                  &operation_graph);
    set_attribute(heuristics, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    if (device_properties != nullptr) {
#if TS_CUDNN_DESCRIBES_DEVICES
      set_attribute(heuristics, CUDNN_ATTR_ENGINEHEUR_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &device_properties);
#else
      TS_ASSERT(false, "a described GPU needs cuDNN 9.8 headers");
#endif
    }
    const cudnnStatus_t heuristics_status = cudnnBackendFinalize(heuristics);
    if (heuristics_status != CUDNN_STATUS_SUCCESS) {
      refused = cudnnGetErrorString(heuristics_status);
      return false;
    }
    int64_t available = 0;
    CUDNN_CHECK_DETAILED(cudnnBackendGetAttribute(heuristics, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                                  CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &available, nullptr));
    if (available <= 0) {
      refused = "no engine configuration";
      return false;
    }
    // cuDNN fills descriptors the caller created, keeping only the configurations whose engine supports the
    // graph on that GPU (and whose runtime prerequisites, such as libcuda for runtime-compiled engines, load).
    std::vector<cudnnBackendDescriptor_t> configs;
    for (int64_t i = 0; i < available; ++i) configs.push_back(create(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
    int64_t returned = 0;
    CUDNN_CHECK_DETAILED(cudnnBackendGetAttribute(heuristics, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                                  CUDNN_TYPE_BACKEND_DESCRIPTOR, available, &returned, configs.data()));
    if (returned <= 0) {
      refused = str_cat("none of ", available, " engine configurations applies");
      return false;
    }
    if (handle == nullptr) return true;  // a described GPU: plans are built where it runs
    for (int64_t i = 0; i < returned && i < available; ++i) {
      step_ = str_cat("execution plan for engine configuration ", i, " of heuristics mode ", static_cast<int>(mode));
      Descriptor plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      set_attribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
      set_attribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                    &configs[static_cast<size_t>(i)]);
      const cudnnStatus_t plan_status = cudnnBackendFinalize(plan.get());
      if (plan_status != CUDNN_STATUS_SUCCESS) {
        refused += str_cat(i == 0 ? "" : ", ", "configuration ", i, ": ", cudnnGetErrorString(plan_status));
        continue;  // this engine cannot run the graph; its plan is destroyed here
      }
      int64_t workspace_bytes = 0;
      int64_t count = 0;
      CUDNN_CHECK_DETAILED(cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                                    CUDNN_TYPE_INT64, 1, &count, &workspace_bytes));
      TS_CHECK(workspace_bytes >= 0, CudaError, "cuDNN reported a workspace of ", workspace_bytes, " bytes");
      graph_.plan = plan.get();
      graph_.workspace_bytes = workspace_bytes;
      graph_.descriptors.push_back(std::move(plan));
      return true;
    }
    return false;
  }

  cudnnBackendDescriptor_t create(cudnnBackendDescriptorType_t type) {
    graph_.descriptors.emplace_back(type);
    return graph_.descriptors.back().get();
  }

  cudnnBackendDescriptor_t make_tensor(int64_t uid, cudnnDataType_t type, const Dims& dims, const Dims& strides,
                                       bool is_virtual, bool is_by_value) {
    step_ = str_cat("tensor ", uid);
    cudnnBackendDescriptor_t tensor = create(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    set_attribute(tensor, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
    set_attribute(tensor, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, static_cast<int64_t>(dims.size()),
                  dims.data());
    set_attribute(tensor, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, static_cast<int64_t>(strides.size()),
                  strides.data());
    set_attribute(tensor, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    set_attribute(tensor, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &kTensorAlignment);
    if (is_virtual) set_attribute(tensor, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual);
    if (is_by_value) set_attribute(tensor, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &is_by_value);
    finalize(tensor);
    return tensor;
  }

  // b and t are null for operations that do not take them; axis is set for GEN_INDEX only.
  void pointwise(const char* step, cudnnPointwiseMode_t mode, cudnnDataType_t precision, int64_t axis,
                 cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t t,
                 cudnnBackendDescriptor_t y) {
    step_ = step;
    cudnnBackendDescriptor_t desc = create(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    set_attribute(desc, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    set_attribute(desc, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &precision);
    if (mode == CUDNN_POINTWISE_GEN_INDEX) set_attribute(desc, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
    finalize(desc);
    cudnnBackendDescriptor_t op = create(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    set_attribute(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &desc);
    set_attribute(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    set_attribute(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    if (b != nullptr) set_attribute(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b);
    if (t != nullptr) set_attribute(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t);
    finalize(op);
    operations_.push_back(op);
  }

  PlanGraph& graph_;
  std::vector<cudnnBackendDescriptor_t> operations_;  // in the order they were described (a topological order)
  int64_t next_virtual_uid_ = kFirstVirtualUid;
  std::string step_;
};

// scores with every entry above the diagonal (column > row, a key after its query) replaced by mask_value.
cudnnBackendDescriptor_t causal_mask(GraphBuilder& graph, const Layout& layout, cudnnBackendDescriptor_t scores,
                                     cudnnBackendDescriptor_t mask_value) {
  cudnnBackendDescriptor_t row = graph.virtual_tensor(CUDNN_DATA_INT32, layout.scores, layout.scores_packed);
  graph.index("row index", 2, scores, row);
  cudnnBackendDescriptor_t column = graph.virtual_tensor(CUDNN_DATA_INT32, layout.scores, layout.scores_packed);
  graph.index("column index", 3, scores, column);
  cudnnBackendDescriptor_t keep = graph.virtual_tensor(CUDNN_DATA_BOOLEAN, layout.scores, layout.scores_packed);
  graph.binary("row >= column", CUDNN_POINTWISE_CMP_GE, row, column, keep, CUDNN_DATA_BOOLEAN);
  cudnnBackendDescriptor_t masked = graph.virtual_tensor(CUDNN_DATA_FLOAT, layout.scores, layout.scores_packed);
  graph.select("causal mask", scores, mask_value, keep, masked);
  return masked;
}

// Describes the forward graph (top of this file) into `graph`, which the caller then plans or checks.
void build_forward(GraphBuilder& graph, const Layout& l) {
  cudnnBackendDescriptor_t q = graph.tensor(kUidQ, CUDNN_DATA_BFLOAT16, l.heads, l.heads_in_qkv);
  cudnnBackendDescriptor_t k_t =
      graph.tensor(kUidK, CUDNN_DATA_BFLOAT16, l.kv_heads_transposed, l.kv_heads_transposed_in_qkv);
  cudnnBackendDescriptor_t v = graph.tensor(kUidV, CUDNN_DATA_BFLOAT16, l.kv_heads, l.heads_in_qkv);
  cudnnBackendDescriptor_t scale = graph.scalar(kUidScale);
  cudnnBackendDescriptor_t mask_value = graph.scalar(kUidMaskValue);
  cudnnBackendDescriptor_t o = graph.tensor(kUidO, CUDNN_DATA_BFLOAT16, l.heads, l.heads_in_out);
  cudnnBackendDescriptor_t stats = graph.tensor(kUidStats, CUDNN_DATA_FLOAT, l.rows, l.rows_packed);

  cudnnBackendDescriptor_t scores = graph.virtual_tensor(CUDNN_DATA_FLOAT, l.scores, l.scores_packed);
  graph.matmul("S = Q K^T", q, k_t, scores);
  cudnnBackendDescriptor_t scaled = graph.virtual_tensor(CUDNN_DATA_FLOAT, l.scores, l.scores_packed);
  graph.binary("S * scale", CUDNN_POINTWISE_MUL, scores, scale, scaled);
  cudnnBackendDescriptor_t masked = causal_mask(graph, l, scaled, mask_value);

  cudnnBackendDescriptor_t row_max = graph.virtual_tensor(CUDNN_DATA_FLOAT, l.rows, l.rows_packed);
  graph.reduction("M = row max", CUDNN_REDUCE_TENSOR_MAX, masked, row_max);
  cudnnBackendDescriptor_t shifted = graph.virtual_tensor(CUDNN_DATA_FLOAT, l.scores, l.scores_packed);
  graph.binary("S - M", CUDNN_POINTWISE_SUB, masked, row_max, shifted);
  cudnnBackendDescriptor_t exps = graph.virtual_tensor(CUDNN_DATA_FLOAT, l.scores, l.scores_packed);
  graph.unary("E = exp(S - M)", CUDNN_POINTWISE_EXP, shifted, exps);
  cudnnBackendDescriptor_t row_sum = graph.virtual_tensor(CUDNN_DATA_FLOAT, l.rows, l.rows_packed);
  graph.reduction("Z = row sum of E", CUDNN_REDUCE_TENSOR_ADD, exps, row_sum);
  cudnnBackendDescriptor_t log_sum = graph.virtual_tensor(CUDNN_DATA_FLOAT, l.rows, l.rows_packed);
  graph.unary("log Z", CUDNN_POINTWISE_LOG, row_sum, log_sum);
  graph.binary("lse = M + log Z", CUDNN_POINTWISE_ADD, row_max, log_sum, stats);
  cudnnBackendDescriptor_t probs = graph.virtual_tensor(CUDNN_DATA_BFLOAT16, l.scores, l.scores_packed);
  graph.binary("P = E / Z", CUDNN_POINTWISE_DIV, exps, row_sum, probs);
  graph.matmul("O = P V", probs, v, o);
}

// Describes the backward graph (top of this file) into `graph`, which the caller then plans or checks.
void build_backward(GraphBuilder& graph, const Layout& l) {
  cudnnBackendDescriptor_t q = graph.tensor(kUidQ, CUDNN_DATA_BFLOAT16, l.heads, l.heads_in_qkv);
  cudnnBackendDescriptor_t k_t =
      graph.tensor(kUidK, CUDNN_DATA_BFLOAT16, l.kv_heads_transposed, l.kv_heads_transposed_in_qkv);
  cudnnBackendDescriptor_t v_t =
      graph.tensor(kUidV, CUDNN_DATA_BFLOAT16, l.kv_heads_transposed, l.kv_heads_transposed_in_qkv);
  cudnnBackendDescriptor_t o = graph.tensor(kUidO, CUDNN_DATA_BFLOAT16, l.heads, l.heads_in_out);
  cudnnBackendDescriptor_t d_o = graph.tensor(kUidDO, CUDNN_DATA_BFLOAT16, l.heads, l.heads_in_out);
  cudnnBackendDescriptor_t stats = graph.tensor(kUidStats, CUDNN_DATA_FLOAT, l.rows, l.rows_packed);
  cudnnBackendDescriptor_t scale = graph.scalar(kUidScale);
  cudnnBackendDescriptor_t mask_value = graph.scalar(kUidMaskValue);
  cudnnBackendDescriptor_t one = graph.scalar(kUidOne);
  cudnnBackendDescriptor_t d_q = graph.tensor(kUidDQ, CUDNN_DATA_BFLOAT16, l.heads, l.heads_in_qkv);
  cudnnBackendDescriptor_t d_k = graph.tensor(kUidDK, CUDNN_DATA_BFLOAT16, l.kv_heads, l.heads_in_qkv);
  cudnnBackendDescriptor_t d_v = graph.tensor(kUidDV, CUDNN_DATA_BFLOAT16, l.kv_heads, l.heads_in_qkv);
  cudnnBackendDescriptor_t softmax_sum = graph.tensor(kUidSoftmaxSum, CUDNN_DATA_FLOAT, l.rows, l.rows_packed);
  cudnnBackendDescriptor_t d_q_accumulator = graph.tensor(kUidDQAccumulator, CUDNN_DATA_FLOAT, l.heads, l.heads_packed);

  // D = sum over d of dO * O (= sum over keys of P * dP): the softmax backward's row term.
  cudnnBackendDescriptor_t d_o_times_o = graph.virtual_tensor(CUDNN_DATA_FLOAT, l.heads, l.heads_in_out);
  graph.binary("dO * O", CUDNN_POINTWISE_MUL, d_o, o, d_o_times_o);
  cudnnBackendDescriptor_t row_dot = graph.virtual_tensor(CUDNN_DATA_FLOAT, l.rows, l.rows_packed);
  graph.reduction("row sum of dO * O", CUDNN_REDUCE_TENSOR_ADD, d_o_times_o, row_dot);
  graph.binary("D = row sum * 1", CUDNN_POINTWISE_MUL, row_dot, one, softmax_sum);

  // P = exp(Q K^T * scale - lse), causally masked.
  cudnnBackendDescriptor_t scores = graph.virtual_tensor(CUDNN_DATA_FLOAT, l.scores, l.scores_packed);
  graph.matmul("S = Q K^T", q, k_t, scores);
  cudnnBackendDescriptor_t scaled = graph.virtual_tensor(CUDNN_DATA_FLOAT, l.scores, l.scores_packed);
  graph.binary("S * scale", CUDNN_POINTWISE_MUL, scores, scale, scaled);
  cudnnBackendDescriptor_t shifted = graph.virtual_tensor(CUDNN_DATA_FLOAT, l.scores, l.scores_packed);
  graph.binary("S - lse", CUDNN_POINTWISE_SUB, scaled, stats, shifted);
  cudnnBackendDescriptor_t masked = causal_mask(graph, l, shifted, mask_value);
  cudnnBackendDescriptor_t probs = graph.virtual_tensor(CUDNN_DATA_FLOAT, l.scores, l.scores_packed);
  graph.unary("P = exp(S - lse)", CUDNN_POINTWISE_EXP, masked, probs);

  // dV = P^T dO.
  cudnnBackendDescriptor_t probs_t = graph.virtual_tensor(CUDNN_DATA_BFLOAT16, l.scores, l.scores_transposed);
  graph.reshape("P^T", probs, probs_t);
  if (l.grouped) {
    cudnnBackendDescriptor_t d_v_per_query_head = graph.virtual_tensor(CUDNN_DATA_BFLOAT16, l.heads, l.heads_packed);
    graph.matmul("dV per query head = P^T dO", probs_t, d_o, d_v_per_query_head);
    graph.reduction("dV = sum over the group's query heads", CUDNN_REDUCE_TENSOR_ADD, d_v_per_query_head, d_v);
  } else {
    graph.matmul("dV = P^T dO", probs_t, d_o, d_v);
  }

  // dS = P * (dO V^T - D) * scale.
  cudnnBackendDescriptor_t d_probs = graph.virtual_tensor(CUDNN_DATA_FLOAT, l.scores, l.scores_packed);
  graph.matmul("dP = dO V^T", d_o, v_t, d_probs);
  cudnnBackendDescriptor_t d_probs_centered = graph.virtual_tensor(CUDNN_DATA_FLOAT, l.scores, l.scores_packed);
  graph.binary("dP - D", CUDNN_POINTWISE_SUB, d_probs, softmax_sum, d_probs_centered);
  cudnnBackendDescriptor_t d_scaled = graph.virtual_tensor(CUDNN_DATA_FLOAT, l.scores, l.scores_packed);
  graph.binary("(dP - D) * P", CUDNN_POINTWISE_MUL, d_probs_centered, probs, d_scaled);
  cudnnBackendDescriptor_t d_scores = graph.virtual_tensor(CUDNN_DATA_FLOAT, l.scores, l.scores_packed);
  graph.binary("dS = (dP - D) * P * scale", CUDNN_POINTWISE_MUL, d_scaled, scale, d_scores);

  // dK = dS^T Q.
  cudnnBackendDescriptor_t d_scores_t = graph.virtual_tensor(CUDNN_DATA_BFLOAT16, l.scores, l.scores_transposed);
  graph.reshape("dS^T", d_scores, d_scores_t);
  if (l.grouped) {
    cudnnBackendDescriptor_t d_k_per_query_head = graph.virtual_tensor(CUDNN_DATA_BFLOAT16, l.heads, l.heads_packed);
    graph.matmul("dK per query head = dS^T Q", d_scores_t, q, d_k_per_query_head);
    graph.reduction("dK = sum over the group's query heads", CUDNN_REDUCE_TENSOR_ADD, d_k_per_query_head, d_k);
  } else {
    graph.matmul("dK = dS^T Q", d_scores_t, q, d_k);
  }

  // dQ = dS K, accumulated in f32, then rounded to bf16.
  cudnnBackendDescriptor_t k = graph.virtual_tensor(CUDNN_DATA_FLOAT, l.kv_heads, l.heads_in_qkv);
  graph.reshape("K = (K^T)^T", k_t, k);
  graph.matmul("dQ accumulator = dS K", d_scores, k, d_q_accumulator);
  graph.unary("dQ = accumulator", CUDNN_POINTWISE_IDENTITY, d_q_accumulator, d_q);
}

// Why Tessera does not ask cuDNN about this shape at all, or "": limits of cuDNN's fused attention engines that
// are checked here for a clear message (cuDNN would only say it has no engine).
std::string shape_refusal(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs) {
  if (B < 1 || T < 1 || H < 1 || KV < 1 || hs < 1) {
    return str_cat("empty attention shape B=", B, " T=", T, " H=", H, " KV=", KV, " hs=", hs);
  }
  if (H % KV != 0) return str_cat(KV, " key/value heads do not divide ", H, " query heads");
  if (hs % 8 != 0 || hs > 128) return str_cat("head size ", hs, " is not a multiple of 8 up to 128");
  if (T == 1) return "cuDNN's attention backward does not take a single token (T = 1)";
  return "";
}

// Describes the forward and then the backward graph of a shape into `forward` and `backward`, handing each to
// `finish` (GraphBuilder::build_plan or check_engines) as soon as it is described: the one path by which both
// CudnnAttention and check_attention_graphs_for_device build the graphs. Returns "" or why cuDNN refused,
// naming the graph and the step; the partial graphs are left for the caller to drop.
template <typename Finish>
std::string build_attention_graphs(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs, PlanGraph& forward,
                                   PlanGraph& backward, const Finish& finish) {
  const Layout layout(B, T, H, KV, hs);
  const char* which = "forward";
  GraphBuilder forward_builder(forward);
  GraphBuilder backward_builder(backward);
  const GraphBuilder* current = &forward_builder;
  try {
    build_forward(forward_builder, layout);
    finish(forward_builder);
    which = "backward";
    current = &backward_builder;
    build_backward(backward_builder, layout);
    finish(backward_builder);
  } catch (const CudaError& error) {
    return str_cat("cuDNN cannot build the attention ", which, " graph for B=", B, " T=", T, " H=", H,
                   KV == H ? std::string() : str_cat(" KV=", KV), " hs=", hs, " (at ", current->step(),
                   "): ", error.what());
  }
  return "";
}

// Runs `plan` on `stream` with the tensors `uids[i]` at `pointers[i]`.
template <size_t N>
void execute(cudnnHandle_t handle, const PlanGraph& plan, const std::array<int64_t, N>& uids,
             const std::array<void*, N>& pointers, void* workspace, cudaStream_t stream) {
  CUDNN_CHECK_DETAILED(cudnnSetStream(handle, stream));
  Descriptor variant_pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  set_attribute(variant_pack.get(), CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, static_cast<int64_t>(N),
                uids.data());
  set_attribute(variant_pack.get(), CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, static_cast<int64_t>(N),
                pointers.data());
  set_attribute(variant_pack.get(), CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
  finalize(variant_pack.get());
  CUDNN_CHECK_DETAILED(cudnnBackendExecute(handle, plan.plan, variant_pack.get()));
}

size_t round_up(size_t bytes, size_t multiple) { return (bytes + multiple - 1) / multiple * multiple; }

bool aligned(const void* pointer) { return reinterpret_cast<uintptr_t>(pointer) % kTensorAlignment == 0; }

// The element `elements` bf16 values after `base`.
void* bf16_offset(const void* base, int64_t elements) {
  return static_cast<char*>(const_cast<void*>(base)) + elements * kBf16Bytes;
}

}  // namespace

std::string describe_cudnn() {
  const size_t version = cudnnGetVersion();
  return str_cat("cuDNN ", version / 10000, ".", version % 10000 / 100, ".", version % 100, " (built against ",
                 CUDNN_MAJOR, ".", CUDNN_MINOR, ".", CUDNN_PATCHLEVEL, ")");
}

// Note [Checking the graphs without a GPU]
// From cuDNN 9.8 an operation graph need not be bound to a handle, and the engine heuristics can be asked about a
// GPU that a CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR describes (CUDNN_ATTR_ENGINEHEUR_DEVICEPROP) instead of the
// handle's: this is the first step of cuDNN's documented deviceless ahead-of-time compilation. The heuristics
// return only configurations whose engine's support check accepts the graph on that GPU, so an attention graph
// that cuDNN's fused-attention engines do not recognize gets none. check_attention_graphs_for_device stops
// there: an execution plan would compile the engine's kernels (about half a second per configuration on the
// build machine, and the last step needs a driver). The support check is coarser than compiling: a graph
// refused here would be refused on the GPU, but one accepted may still fail to compile there (seen with a
// backward graph whose Q was fp16 and everything else bf16: configurations returned, the first one's kernels
// failed to compile).
//
// The runtime-compiled engines that run these graphs count libcuda among their prerequisites: cuDNN dlopens
// libcuda.so.1 while it filters the configurations and drops every one of them, whatever the graph, when that
// fails. No driver function is called on this path, so without a GPU the CUDA toolkit's stub libcuda.so (which
// answers every call with an error) is enough; the test loads it, production code never does.
std::string described_gpu_json(int sm, int multiprocessors, int64_t shared_memory_per_block_optin,
                               const std::string& name) {
  // Fixed for every described GPU: limits that sm80 and sm90 data-center GPUs share, and sizes and clocks of an
  // H100 SXM, which the heuristics may use to rank engines but which did not change which graphs get one.
  constexpr int64_t kL2CacheBytes = 50 << 20;
  constexpr int64_t kMemoryBytes = 80LL << 30;
  constexpr int kSmClockKhz = 1980000;
  constexpr int kMemoryClockKhz = 2619000;
  TS_CHECK(name.find_first_of("\"\\") == std::string::npos, ConfigError, "GPU name ", name,
           " must not contain quotes or backslashes");
  return str_cat("{\"deviceName\":\"", name, "\",\"deviceVer\":", sm * 10, ",\"multiProcessorCount\":", multiprocessors,
                 ",\"maxSharedMemoryPerBlockOptin\":", shared_memory_per_block_optin,
                 ",\"maxSharedMemoryPerBlock\":49152,\"reservedSharedMemoryPerBlock\":1024,"
                 "\"regsPerBlock\":65536,\"maxRegistersPerSM\":65536,\"maxThreadsPerBlock\":1024,"
                 "\"maxThreadsPerSM\":2048,\"maxCtasPerSM\":32,\"warpSize\":32,"
                 "\"maxGridSize\":[2147483647,65535,65535],\"maxBlockSize\":[1024,1024,64],"
                 "\"supportCoopLaunch\":1,\"isTccDriver\":0,\"l2CacheSize\":",
                 kL2CacheBytes, ",\"totalGlobalMem\":", kMemoryBytes, ",\"smClockRateKHz\":", kSmClockKhz,
                 ",\"memClockRateKHz\":", kMemoryClockKhz, ",\"driverVer\":", CUDART_VERSION,
                 ",\"pciDeviceId\":0,\"cudaDeviceId\":0}");
}

std::string h100_sxm_json() { return described_gpu_json(90, 132, 232448, "NVIDIA H100 80GB HBM3"); }

std::string a100_sxm_json() { return described_gpu_json(80, 108, 166912, "NVIDIA A100-SXM4-80GB"); }

std::string check_attention_graphs_for_device(const std::string& device_json, int64_t B, int64_t T, int64_t H,
                                              int64_t KV, int64_t hs) {
#if TS_CUDNN_DESCRIBES_DEVICES
  if (cudnnGetVersion() < kFirstVersionDescribingDevices) {
    return str_cat(describe_cudnn(), " cannot describe a GPU it does not see: that needs cuDNN 9.8 or newer");
  }
  if (std::string refused = shape_refusal(B, T, H, KV, hs); !refused.empty()) return refused;
  Descriptor device_properties(CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR);
  try {
    set_attribute(device_properties.get(), CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION, CUDNN_TYPE_CHAR,
                  static_cast<int64_t>(device_json.size()), device_json.data());
    finalize(device_properties.get());
  } catch (const CudaError& error) {
    return str_cat("cuDNN does not take the GPU description ", device_json, ": ", error.what());
  }
  PlanGraph forward;
  PlanGraph backward;
  return build_attention_graphs(B, T, H, KV, hs, forward, backward,
                                [&](GraphBuilder& graph) { graph.check_engines(device_properties.get()); });
#else
  (void)device_json, (void)B, (void)T, (void)H, (void)KV, (void)hs;
  return str_cat(describe_cudnn(), ": headers older than cuDNN 9.8 cannot describe a GPU this process does not see");
#endif
}

CudnnAttention::CudnnAttention(CachingAllocator& allocator) : allocator_(allocator) {
  CUDA_CHECK(cudaGetDevice(&device_));
  CUDA_CHECK(cudaDeviceGetAttribute(&compute_capability_major_, cudaDevAttrComputeCapabilityMajor, device_));
  CUDA_CHECK(cudaDeviceGetAttribute(&compute_capability_minor_, cudaDevAttrComputeCapabilityMinor, device_));
  cudnnHandle_t handle = nullptr;
  CUDNN_CHECK_DETAILED(cudnnCreate(&handle));
  handle_ = handle;
}

CudnnAttention::~CudnnAttention() {
  plans_.clear();  // every descriptor before the handle they were built with
  if (handle_ != nullptr) cudnnDestroy(handle_);
}

bool CudnnAttention::supported(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs) {
  const Plans& plans = plans_for(B, T, H, KV, hs);
  reason_ = plans.supported ? std::string() : plans.reason;
  return plans.supported;
}

CudnnAttention::Plans& CudnnAttention::plans_for(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs) {
  const Shape shape{B, T, H, KV, hs};
  if (auto it = plans_.find(shape); it != plans_.end()) return *it->second;

  auto plans = std::make_unique<Plans>();
  const size_t version = cudnnGetVersion();
  const std::string shape_refused = shape_refusal(B, T, H, KV, hs);
  if (version < 90000) {
    plans->reason = str_cat(describe_cudnn(), " is older than 9.0, the first with these attention graphs");
  } else if (compute_capability_major_ < 8) {
    plans->reason = str_cat("GPU ", device_, " has compute capability ", compute_capability_major_, ".",
                            compute_capability_minor_, "; cuDNN's fused attention needs 8.0 or newer");
  } else if (!shape_refused.empty()) {
    plans->reason = shape_refused;
  } else {
    plans->scale = 1.0f / std::sqrt(static_cast<float>(hs));
    plans->mask_value =
        version < 91000 ? std::numeric_limits<float>::lowest() : -std::numeric_limits<float>::infinity();
    const std::string reason = build_attention_graphs(B, T, H, KV, hs, plans->forward, plans->backward,
                                                      [&](GraphBuilder& graph) { graph.build_plan(handle_); });
    if (reason.empty()) {
      plans->supported = true;
    } else {
      plans = std::make_unique<Plans>();  // drops the partial graphs
      plans->reason = reason;
    }
  }
  return *plans_.emplace(shape, std::move(plans)).first->second;
}

CudnnAttention::Plans& CudnnAttention::runnable_plans(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs) {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  TS_ASSERT(device == device_, "CudnnAttention made on GPU ", device_, " used with GPU ", device, " current");
  Plans& plans = plans_for(B, T, H, KV, hs);
  TS_CHECK(plans.supported, CudaError, plans.reason);
  return plans;
}

void CudnnAttention::forward(void* out, float* lse, const void* qkv, int64_t B, int64_t T, int64_t H, int64_t KV,
                             int64_t hs, cudaStream_t stream) {
  Plans& plans = runnable_plans(B, T, H, KV, hs);
  TS_ASSERT(aligned(out) && aligned(lse) && aligned(qkv), "cuDNN attention buffers must be 16-byte aligned");
  const int64_t C = H * hs;

  const Context context{stream, &allocator_, nullptr};
  Scratch workspace(context, static_cast<size_t>(plans.forward.workspace_bytes));
  const std::array<int64_t, 7> uids = {kUidQ, kUidK, kUidV, kUidScale, kUidMaskValue, kUidO, kUidStats};
  const std::array<void*, 7> pointers = {const_cast<void*>(qkv),
                                         bf16_offset(qkv, C),
                                         bf16_offset(qkv, C + KV * hs),
                                         &plans.scale,
                                         &plans.mask_value,
                                         out,
                                         lse};
  execute(handle_, plans.forward, uids, pointers, workspace.f32(), stream);
}

void CudnnAttention::backward(void* d_qkv, const void* d_out, const void* qkv, const void* out, const float* lse,
                              int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs, cudaStream_t stream) {
  Plans& plans = runnable_plans(B, T, H, KV, hs);
  TS_ASSERT(aligned(d_qkv) && aligned(d_out) && aligned(qkv) && aligned(out) && aligned(lse),
            "cuDNN attention buffers must be 16-byte aligned");
  const int64_t C = H * hs;

  // One scratch block: [cuDNN workspace | dQ accumulator, f32 [B,H,T,hs] | D, f32 [B,H,T]].
  const size_t workspace_bytes = round_up(static_cast<size_t>(plans.backward.workspace_bytes), kScratchAlignment);
  const size_t accumulator_bytes = static_cast<size_t>(B * H * T * hs) * sizeof(float);
  const size_t softmax_sum_bytes = static_cast<size_t>(B * H * T) * sizeof(float);
  const Context context{stream, &allocator_, nullptr};
  Scratch scratch(context, workspace_bytes + round_up(accumulator_bytes, kScratchAlignment) + softmax_sum_bytes);
  char* workspace = reinterpret_cast<char*>(scratch.f32());
  char* accumulator = workspace + workspace_bytes;
  char* softmax_sum = accumulator + round_up(accumulator_bytes, kScratchAlignment);
  // cuDNN from 9.6 clears the accumulator itself; earlier versions need it zeroed (as cudnn-frontend does).
  CUDA_CHECK(cudaMemsetAsync(accumulator, 0, accumulator_bytes, stream));

  const std::array<int64_t, 14> uids = {
      kUidQ,         kUidK,   kUidV,  kUidO,  kUidDO, kUidStats,      kUidScale,
      kUidMaskValue, kUidOne, kUidDQ, kUidDK, kUidDV, kUidSoftmaxSum, kUidDQAccumulator};
  const std::array<void*, 14> pointers = {const_cast<void*>(qkv),
                                          bf16_offset(qkv, C),
                                          bf16_offset(qkv, C + KV * hs),
                                          const_cast<void*>(out),
                                          const_cast<void*>(d_out),
                                          const_cast<float*>(lse),
                                          &plans.scale,
                                          &plans.mask_value,
                                          &plans.one,
                                          d_qkv,
                                          bf16_offset(d_qkv, C),
                                          bf16_offset(d_qkv, C + KV * hs),
                                          softmax_sum,
                                          accumulator};
  execute(handle_, plans.backward, uids, pointers, workspace, stream);
}

}  // namespace tessera::cuda
