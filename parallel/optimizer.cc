// AdamW and gradient norm.
#include "parallel/optimizer.h"

#include <cmath>
#include <utility>

namespace tessera {

AdamW::AdamW(Gpt2Model& model, Backend& backend, AdamWConfig config, std::vector<ProcessGroup*> norm_groups)
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
    backend_.adamw_update(p.value.view({n}), p.grad.view({n}), m, v, s);
  }
}

double global_grad_norm(Gpt2Model& model, Backend& backend, const std::vector<ProcessGroup*>& groups) {
  double local = 0;
  for (LocalParam& p : model.params())
    if (p.counted) local += backend.sum_of_squares(p.grad);
  return std::sqrt(sum_over_groups(local, groups));
}

double sum_over_groups(double local, const std::vector<ProcessGroup*>& groups) {
  // Reduced as two floats (high and low parts) so the sum keeps double precision across ranks.
  float parts[2] = {static_cast<float>(local), 0.0f};
  parts[1] = static_cast<float>(local - static_cast<double>(parts[0]));
  bool reduced = false;
  for (ProcessGroup* group : groups) {
    if (group == nullptr || group->size() == 1) continue;
    // Every rank of a group holds a disjoint share; sum over the group.
    Tensor t(parts, DType::kF32, Device::kCpu, {2});
    group->all_reduce(t, ReduceOp::kSum)->wait();
    reduced = true;
  }
  return reduced ? static_cast<double>(parts[0]) + parts[1] : local;
}

double clip_factor(double grad_norm, double max_norm) {
  if (max_norm <= 0) return 1.0;
  double factor = max_norm / (grad_norm + 1e-6);
  return factor < 1.0 ? factor : 1.0;
}

}  // namespace tessera
