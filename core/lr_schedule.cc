// Learning-rate schedules.
#include "core/lr_schedule.h"

#include <cmath>

namespace tessera {

double LrSchedule::at(int step) const {
  if (step < warmup_steps) return lr * (step + 1) / warmup_steps;
  if (decay == LrDecay::kConstant || decay_steps <= 0) return lr;
  double progress = static_cast<double>(step - warmup_steps) / decay_steps;
  if (progress >= 1.0) return min_lr;
  double factor = decay == LrDecay::kCosine ? 0.5 * (1.0 + std::cos(M_PI * progress)) : 1.0 - progress;
  return min_lr + (lr - min_lr) * factor;
}

}  // namespace tessera
