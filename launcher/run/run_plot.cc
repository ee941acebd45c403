// Drawing metrics.jsonl as SVG. Each panel maps its data range onto a plot area with "nice" ticks (1, 2, 2.5
// or 5 times a power of ten, about five per axis), so the labels read as round numbers whatever the run's scale.
#include "launcher/run/run_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/check.h"
#include "launcher/common/durable_file.h"
#include "launcher/common/human_format.h"
#include "launcher/common/json_io.h"

namespace tessera {

namespace {

constexpr double kWidth = 860, kPanelHeight = 230, kTop = 64, kLeft = 78, kRight = 24, kGap = 34;
constexpr const char* kTrainColor = "#1f77b4";
constexpr const char* kValColor = "#ff7f0e";
constexpr const char* kLrColor = "#2ca02c";
constexpr const char* kSpeedColor = "#9467bd";

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string fixed(double value, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, value);
  return buf;
}

struct Ticks {
  double lo = 0, hi = 1, step = 1;  // the axis spans [lo, hi]; ticks at lo, lo + step, ..., hi
};

// Round ticks covering [lo, hi] (about `target` of them). An empty range is widened around its value.
Ticks nice_ticks(double lo, double hi, int target) {
  if (!(hi > lo)) {
    const double pad = lo != 0 ? std::abs(lo) * 0.1 : 1.0;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = 10 * magnitude;
  for (double m : {1.0, 2.0, 2.5, 5.0}) {
    if (raw <= m * magnitude) {
      step = m * magnitude;
      break;
    }
  }
  Ticks t;
  t.step = step;
  t.lo = std::floor(lo / step + 1e-9) * step;
  t.hi = std::ceil(hi / step - 1e-9) * step;
  return t;
}

// A tick label on an axis whose largest tick is `largest` in magnitude: k/M suffixes for large values,
// scientific for small ones (learning rates), else just enough decimals for the tick step (one more for a step
// of 2.5 times a power of ten). Every label of an axis has the same number of digits.
std::string tick_label(double value, double step, double largest) {
  if (std::abs(value) < step * 1e-6) return "0";
  if (largest >= 1e4) return human_count(value);
  const int step_exponent = static_cast<int>(std::floor(std::log10(step) + 1e-9));
  const int extra = std::abs(step / std::pow(10.0, step_exponent) - 2.5) < 1e-6 ? 1 : 0;
  if (largest < 1e-2) {
    const int largest_exponent = static_cast<int>(std::floor(std::log10(largest) + 1e-9));
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.*e", std::clamp(largest_exponent - step_exponent + extra, 0, 3), value);
    return buf;
  }
  return fixed(value, std::max(0, extra - step_exponent));
}

struct Line {
  const RunSeries::Series* series;
  const char* id;     // data-series
  const char* label;  // legend
  const char* color;
  bool markers;  // a dot per point (sparse series such as val_loss)
};

// One panel at vertical offset top: frame, grid, ticks, labels, lines and legend.
void draw_panel(std::ostringstream& svg, double top, const char* y_label, const std::vector<Line>& lines,
                const Ticks& x, bool y_from_zero) {
  const double left = kLeft, right = kWidth - kRight, bottom = top + kPanelHeight - 40;
  double y_lo = INFINITY, y_hi = -INFINITY;
  for (const Line& line : lines) {
    for (double v : line.series->value) {
      y_lo = std::min(y_lo, v);
      y_hi = std::max(y_hi, v);
    }
  }
  if (!std::isfinite(y_lo)) y_lo = 0, y_hi = 1;
  if (y_from_zero) y_lo = std::min(0.0, y_lo);
  const Ticks y = nice_ticks(y_lo, y_hi, 5);
  auto px = [&](double step) { return left + (step - x.lo) / (x.hi - x.lo) * (right - left); };
  auto py = [&](double value) { return bottom - (value - y.lo) / (y.hi - y.lo) * (bottom - top); };

  svg << "<g class=\"panel\" data-panel=\"" << lines.front().id << "\">\n";
  svg << "<rect x=\"" << fixed(left, 1) << "\" y=\"" << fixed(top, 1) << "\" width=\"" << fixed(right - left, 1)
      << "\" height=\"" << fixed(bottom - top, 1) << "\" fill=\"#ffffff\" stroke=\"#444444\"/>\n";
  for (int i = 0; x.lo + i * x.step <= x.hi + x.step * 1e-6; ++i) {
    const double v = x.lo + i * x.step, at = px(v);
    svg << "<line x1=\"" << fixed(at, 1) << "\" y1=\"" << fixed(top, 1) << "\" x2=\"" << fixed(at, 1) << "\" y2=\""
        << fixed(bottom + 5, 1) << "\" stroke=\"#e3e3e3\"/>\n";
    svg << "<text class=\"tick\" x=\"" << fixed(at, 1) << "\" y=\"" << fixed(bottom + 18, 1)
        << "\" text-anchor=\"middle\">" << xml_escape(tick_label(v, x.step, std::max(std::abs(x.lo), std::abs(x.hi))))
        << "</text>\n";
  }
  for (int i = 0; y.lo + i * y.step <= y.hi + y.step * 1e-6; ++i) {
    const double v = y.lo + i * y.step, at = py(v);
    svg << "<line x1=\"" << fixed(left - 5, 1) << "\" y1=\"" << fixed(at, 1) << "\" x2=\"" << fixed(right, 1)
        << "\" y2=\"" << fixed(at, 1) << "\" stroke=\"#e3e3e3\"/>\n";
    svg << "<text class=\"tick\" x=\"" << fixed(left - 8, 1) << "\" y=\"" << fixed(at + 4, 1)
        << "\" text-anchor=\"end\">" << xml_escape(tick_label(v, y.step, std::max(std::abs(y.lo), std::abs(y.hi))))
        << "</text>\n";
  }
  svg << "<rect x=\"" << fixed(left, 1) << "\" y=\"" << fixed(top, 1) << "\" width=\"" << fixed(right - left, 1)
      << "\" height=\"" << fixed(bottom - top, 1) << "\" fill=\"none\" stroke=\"#444444\"/>\n";
  svg << "<text class=\"axis-label\" x=\"" << fixed((left + right) / 2, 1) << "\" y=\"" << fixed(bottom + 34, 1)
      << "\" text-anchor=\"middle\">step</text>\n";
  const double mid = (top + bottom) / 2;
  svg << "<text class=\"axis-label\" x=\"18\" y=\"" << fixed(mid, 1)
      << "\" text-anchor=\"middle\" transform=\"rotate(-90 18 " << fixed(mid, 1) << ")\">" << xml_escape(y_label)
      << "</text>\n";

  for (const Line& line : lines) {
    const RunSeries::Series& s = *line.series;
    svg << "<polyline class=\"series\" data-series=\"" << line.id << "\" fill=\"none\" stroke=\"" << line.color
        << "\" stroke-width=\"1.6\" stroke-linejoin=\"round\" points=\"";
    for (size_t i = 0; i < s.step.size(); ++i) {
      svg << (i ? " " : "") << fixed(px(s.step[i]), 2) << "," << fixed(py(s.value[i]), 2);
    }
    svg << "\"/>\n";
    if (line.markers) {
      for (size_t i = 0; i < s.step.size(); ++i) {
        svg << "<circle cx=\"" << fixed(px(s.step[i]), 2) << "\" cy=\"" << fixed(py(s.value[i]), 2)
            << "\" r=\"3\" fill=\"" << line.color << "\"/>\n";
      }
    }
  }
  // Legend: above the frame, right-aligned, one entry after the other.
  double legend_x = right;
  for (auto line = lines.rbegin(); line != lines.rend(); ++line) {
    const std::string label = str_cat(line->label, line->series->step.empty() ? " (none)" : "");
    legend_x -= 34 + 7.0 * static_cast<double>(label.size());
    svg << "<g class=\"legend\"><line x1=\"" << fixed(legend_x, 1) << "\" y1=\"" << fixed(top - 12, 1) << "\" x2=\""
        << fixed(legend_x + 20, 1) << "\" y2=\"" << fixed(top - 12, 1) << "\" stroke=\"" << line->color
        << "\" stroke-width=\"2.5\"/><text x=\"" << fixed(legend_x + 25, 1) << "\" y=\"" << fixed(top - 8, 1) << "\">"
        << xml_escape(label) << "</text></g>\n";
  }
  svg << "</g>\n";
}

// The value of key in row, if it is a finite number.
bool number_of(const Json& row, const char* key, double* value) {
  const auto v = row.find(key);
  if (v == row.end() || !v->is_number() || !std::isfinite(v->get<double>())) return false;
  *value = v->get<double>();
  return true;
}

}  // namespace

RunSeries read_run_series(const std::string& metrics_path) {
  std::ifstream in(metrics_path);
  TS_CHECK(in.good(), ConfigError, "cannot read '", metrics_path,
           "': give the directory of a training run (it holds metrics.jsonl once a step has run)");
  RunSeries series;
  std::string text;
  int line_number = 0;
  while (std::getline(in, text)) {
    ++line_number;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = str_cat(metrics_path, ":", line_number);
    const Json row = parse_json(text, where);
    double step = 0;
    TS_CHECK(row.is_object() && number_of(row, "step", &step), DataError, where,
             ": not a metrics row (a JSON object with a numeric \"step\")");
    ++series.rows;
    const std::pair<const char*, RunSeries::Series*> keys[] = {{"loss", &series.loss},
                                                               {"val_loss", &series.val_loss},
                                                               {"lr", &series.lr},
                                                               {"tokens_per_s", &series.tokens_per_s}};
    for (const auto& [key, target] : keys) {
      double value = 0;
      if (!number_of(row, key, &value)) continue;
      target->step.push_back(step);
      target->value.push_back(value);
    }
  }
  return series;
}

std::string run_plot_svg(const RunSeries& series, const std::string& title) {
  double first = INFINITY, last = -INFINITY;
  for (const RunSeries::Series* s : {&series.loss, &series.val_loss, &series.lr, &series.tokens_per_s}) {
    for (double step : s->step) {
      first = std::min(first, step);
      last = std::max(last, step);
    }
  }
  if (!std::isfinite(first)) first = 0, last = 1;
  const Ticks x = nice_ticks(std::min(first, 0.0), last, 8);
  const double height = kTop + 3 * kPanelHeight + 2 * kGap;
  std::ostringstream svg;
  svg << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << fixed(kWidth, 0) << "\" height=\"" << fixed(height, 0)
      << "\" viewBox=\"0 0 " << fixed(kWidth, 0) << " " << fixed(height, 0)
      << "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"#fafafa\"/>\n"
      << "<text x=\"" << fixed(kLeft, 0) << "\" y=\"26\" font-size=\"16\" font-weight=\"bold\">" << xml_escape(title)
      << "</text>\n";
  std::string summary = str_cat(series.rows, " steps");
  if (!series.loss.value.empty()) summary += ", final loss " + fixed(series.loss.value.back(), 4);
  if (!series.val_loss.value.empty()) summary += ", val loss " + fixed(series.val_loss.value.back(), 4);
  svg << "<text x=\"" << fixed(kWidth - kRight, 0) << "\" y=\"26\" text-anchor=\"end\" fill=\"#555555\">"
      << xml_escape(summary) << "</text>\n";
  double top = kTop;
  draw_panel(svg, top, "loss",
             {{&series.loss, "loss", "train loss", kTrainColor, false},
              {&series.val_loss, "val_loss", "validation loss", kValColor, true}},
             x, false);
  top += kPanelHeight + kGap;
  draw_panel(svg, top, "learning rate", {{&series.lr, "lr", "learning rate", kLrColor, false}}, x, true);
  top += kPanelHeight + kGap;
  draw_panel(svg, top, "tokens/s", {{&series.tokens_per_s, "tokens_per_s", "tokens/s", kSpeedColor, false}}, x, true);
  svg << "</svg>\n";
  return svg.str();
}

int write_run_plot(const std::string& run_dir, const std::string& out_path) {
  const RunSeries series = read_run_series(run_dir + "/metrics.jsonl");
  std::string title = run_dir;
  while (title.size() > 1 && title.back() == '/') title.pop_back();
  write_file_atomically(out_path, run_plot_svg(series, "tessera run: " + title));
  return series.rows;
}

}  // namespace tessera
