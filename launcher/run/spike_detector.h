// SpikeDetector: whether a value (a step's loss or gradient norm) is a spike — more than z standard deviations
// above the mean of the recent values — for the loss-spike guard of the training loop (train.spike_zscore).
// Pure: no communication; every rank sees the same values and so decides the same.
#pragma once

#include <cstddef>
#include <deque>

namespace tessera {

class SpikeDetector {
 public:
  // The window: the last kWindow values added. Nothing is a spike before kWarmup values are known (the loss
  // falls fastest and the gradient norm moves most in the first steps).
  static constexpr size_t kWindow = 100;
  static constexpr size_t kWarmup = 10;

  // z: the threshold in standard deviations (> 0).
  explicit SpikeDetector(double z) : z_(z) {}

  // Whether value > mean + z * std over the window (population std; never when the window is constant).
  bool is_spike(double value) const;
  // Adds a value of an accepted step to the window (spikes are not added, so a spike cannot raise the bar).
  void add(double value);

 private:
  double z_;
  std::deque<double> values_;
};

}  // namespace tessera
