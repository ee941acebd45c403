// AdamW and gradient norm.
#include "parallel/optimizer.h"

#include <cmath>
#include <utility>
#include <vector>

namespace tessera {

AdamW::AdamW(Model& model, Backend& backend, AdamWConfig config, std::vector<ProcessGroup*> norm_groups)
    : model_(model), backend_(backend), config_(config), norm_groups_(std::move(norm_groups)) {
  const int64_t n = model.flat_params().numel();
  m_buffer_ = backend.allocate(static_cast<size_t>(n) * sizeof(float));
  v_buffer_ = backend.allocate(static_cast<size_t>(n) * sizeof(float));
  m_ = m_buffer_.tensor(0, DType::kF32, {n});
  v_ = v_buffer_.tensor(0, DType::kF32, {n});
  backend.fill(m_, 0.0f);
  backend.fill(v_, 0.0f);
}

double AdamW::grad_norm() { return global_grad_norm(model_, backend_, norm_groups_); }

void AdamW::step(double lr, double grad_scale) {
  ++steps_;
  for (LocalParam& p : model_.params()) {
    const int64_t n = p.value.numel();
    AdamWStep s;
    s.lr = static_cast<float>(lr);
    s.beta1 = static_cast<float>(config_.beta1);
    s.beta2 = static_cast<float>(config_.beta2);
    s.eps = static_cast<float>(config_.eps);
    s.weight_decay = p.spec.weight_decay ? static_cast<float>(config_.weight_decay) : 0.0f;
    s.step = steps_;
    s.grad_scale = static_cast<float>(grad_scale);
    Tensor m(m_.f32() + p.offset, DType::kF32, m_.device(), {n});
    Tensor v(v_.f32() + p.offset, DType::kF32, v_.device(), {n});
    // With bf16 compute the fused update also writes the parameter's compute copy.
    backend_.adamw_update(p.value.view({n}), p.grad.view({n}), m, v, s,
                          model_.has_compute_copy() ? p.compute.view({n}) : Tensor());
  }
}

double global_grad_norm(Model& model, Backend& backend, const std::vector<ProcessGroup*>& groups) {
  std::vector<Tensor> counted;
  for (LocalParam& p : model.params())
    if (p.counted) counted.push_back(p.grad);
  std::vector<double> sums(counted.size());
  backend.sum_of_squares_many(counted.data(), static_cast<int>(counted.size()), sums.data());
  double local = 0;
  for (double s : sums) local += s;  // in parameter order, as before
  return std::sqrt(sum_over_groups(local, groups));
}

double sum_over_groups(double local, const std::vector<ProcessGroup*>& groups) {
  // Every rank of a group holds a disjoint share. Each rank's value travels as two floats, a high part
  // float(x) and a low part float(x - high) (about 48 significant bits together); every rank gathers all of
  // them and adds them up in double, in group-rank order. An all-reduce of the parts would round each partial
  // sum to float (a relative error of ~1e-7), and the order would be up to the MPI library; this way the sum
  // keeps nearly double precision and is bit-identical on every rank.
  double total = local;
  std::vector<float> gathered;
  for (ProcessGroup* group : groups) {
    if (group == nullptr || group->size() == 1) continue;
    float parts[2] = {static_cast<float>(total), 0.0f};
    parts[1] = static_cast<float>(total - static_cast<double>(parts[0]));
    gathered.assign(2 * static_cast<size_t>(group->size()), 0.0f);
    const Tensor out(gathered.data(), DType::kF32, Device::kCpu, {static_cast<int64_t>(gathered.size())});
    group->all_gather(out, Tensor(parts, DType::kF32, Device::kCpu, {2}))->wait();
    total = 0;
    for (size_t r = 0; r < gathered.size(); r += 2) {
      total += static_cast<double>(gathered[r]) + static_cast<double>(gathered[r + 1]);
    }
  }
  return total;
}

double clip_factor(double grad_norm, double max_norm) {
  if (max_norm <= 0) return 1.0;
  double factor = max_norm / (grad_norm + 1e-6);
  return factor < 1.0 ? factor : 1.0;
}

}  // namespace tessera
