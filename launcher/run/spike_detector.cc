// The loss-spike test: a z-score against the recent window.
#include "launcher/run/spike_detector.h"

#include <cmath>

namespace tessera {

bool SpikeDetector::is_spike(double value) const {
  if (values_.size() < kWarmup) return false;
  double mean = 0;
  for (double v : values_) mean += v;
  mean /= static_cast<double>(values_.size());
  double variance = 0;
  for (double v : values_) variance += (v - mean) * (v - mean);
  const double std = std::sqrt(variance / static_cast<double>(values_.size()));
  return std > 0 && value > mean + z_ * std;
}

void SpikeDetector::add(double value) {
  values_.push_back(value);
  if (values_.size() > kWindow) values_.pop_front();
}

}  // namespace tessera
