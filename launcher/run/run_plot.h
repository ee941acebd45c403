// A picture of a run: RUN_DIR/metrics.jsonl drawn as one self-contained SVG file that a browser opens — the
// training and validation loss, the learning rate and the throughput over steps, one panel each, with axes,
// ticks, labels and a legend. Written by `tessera plot RUN_DIR` and by `tessera train` at the end of every run
// (RUN_DIR/plot.svg). The SVG is drawn by hand (no plotting library): every series is one <polyline> with one
// point per row that has the value, marked data-series="loss" (val_loss, lr, tokens_per_s), so tests and
// scripts can read the data back.
#pragma once

#include <string>
#include <vector>

namespace tessera {

// The series of a run, by step. A row without a value (val_loss off the evaluation steps; a non-finite loss,
// which metrics.jsonl writes as the string "nan") adds no point to that series.
struct RunSeries {
  struct Series {
    std::vector<double> step, value;
  };
  Series loss, val_loss, lr, tokens_per_s;
  int rows = 0;
};

// Reads metrics.jsonl (one JSON object per line, as MetricsWriter writes it). Throws DataError naming the file
// and line when a line is not a JSON object with a numeric "step", and ConfigError when the file is missing.
RunSeries read_run_series(const std::string& metrics_path);

// The SVG document of a run's series; title goes on top (escaped). Pure.
std::string run_plot_svg(const RunSeries& series, const std::string& title);

// Reads RUN_DIR/metrics.jsonl and writes its SVG to out_path (atomically: a reader never sees half a file).
// Returns the number of rows drawn. Throws as read_run_series, and CheckpointError (durable_file.h) when out_path
// cannot be written.
int write_run_plot(const std::string& run_dir, const std::string& out_path);

}  // namespace tessera
