// Learning-rate schedules: linear warm-up, then cosine (or linear, or constant) decay to min_lr.
#pragma once

namespace tessera {

enum class LrDecay { kCosine, kLinear, kConstant };

struct LrSchedule {
  double lr = 0;
  double min_lr = 0;
  int warmup_steps = 0;
  int decay_steps = 0;  // steps after warm-up over which lr decays to min_lr; then it stays at min_lr
  LrDecay decay = LrDecay::kCosine;

  // Learning rate for 0-based optimizer step `step`. Warm-up ramps (step+1)/warmup_steps * lr.
  double at(int step) const;
};

}  // namespace tessera
