// What a person watching a run reads, checked through the tessera command: metrics.jsonl's "time" and
// "tokens", train.log (rank 0's console, appended on resume), and the TensorBoard event file, decoded here by
// hand from its wire format (TFRecord framing, protobuf fields by number) and compared with metrics.jsonl.
// Also CRC-32C against published vectors, and the loss-spike guard (train.spike_zscore, train.max_skipped).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "core/check.h"
#include "launcher/common/crc32c.h"
#include "launcher/common/json_io.h"
#include "launcher/run/spike_detector.h"
#include "launcher/run/tensorboard_writer.h"
#include "tests/cli_command.h"
#include "tests/run_command.h"
#include "tests/temp_dir.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using testing::run_command;
using testing::TempDir;

const std::string kTessera = TESSERA_BINARY;
const std::string& kEnvironment = testing::kCliEnvironment;

TEST(Crc32c, MatchesPublishedVectors) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
  // RFC 3720 (iSCSI), appendix B.4.
  std::vector<unsigned char> bytes(32, 0x00);
  EXPECT_EQ(crc32c(bytes.data(), bytes.size()), 0x8A9136AAu);
  bytes.assign(32, 0xFF);
  EXPECT_EQ(crc32c(bytes.data(), bytes.size()), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) bytes[static_cast<size_t>(i)] = static_cast<unsigned char>(i);
  EXPECT_EQ(crc32c(bytes.data(), bytes.size()), 0x46DD794Eu);
  const uint32_t crc = 0xE3069283u;
  EXPECT_EQ(masked_crc32c("123456789", 9), ((crc >> 15) | (crc << 17)) + 0xA282EAD8u);
}

// ---- an independent reader of the event file's wire format ----

uint64_t little_endian(const std::string& bytes, size_t at, int size) {
  uint64_t value = 0;
  for (int i = size - 1; i >= 0; --i)
    value = (value << 8) | static_cast<unsigned char>(bytes[at + static_cast<size_t>(i)]);
  return value;
}

// TFRecord: u64 length, masked CRC of the length, data, masked CRC of the data.
std::vector<std::string> read_records(const std::string& file) {
  std::vector<std::string> records;
  size_t at = 0;
  while (at < file.size()) {
    EXPECT_LE(at + 12, file.size()) << "a truncated record header";
    const uint64_t length = little_endian(file, at, 8);
    EXPECT_EQ(little_endian(file, at + 8, 4), masked_crc32c(file.data() + at, 8)) << "length CRC at " << at;
    EXPECT_LE(at + 12 + length + 4, file.size()) << "a truncated record";
    const std::string data = file.substr(at + 12, length);
    EXPECT_EQ(little_endian(file, at + 12 + length, 4), masked_crc32c(data.data(), data.size())) << "data CRC";
    records.push_back(data);
    at += 12 + length + 4;
  }
  return records;
}

uint64_t read_varint(const std::string& bytes, size_t& at) {
  uint64_t value = 0;
  for (int shift = 0; at < bytes.size(); shift += 7) {
    const auto byte = static_cast<unsigned char>(bytes[at++]);
    value |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) break;
  }
  return value;
}

// A message's fields: number -> raw value (varint or fixed as integer bits, or the bytes of a length-delimited
// field). Every field the writer uses appears once per message.
struct Fields {
  std::map<int, uint64_t> numbers;
  std::map<int, std::string> bytes;
};
Fields parse(const std::string& message) {
  Fields fields;
  size_t at = 0;
  while (at < message.size()) {
    const uint64_t key = read_varint(message, at);
    const int number = static_cast<int>(key >> 3);
    switch (key & 7) {
      case 0:
        fields.numbers[number] = read_varint(message, at);
        break;
      case 1:
        fields.numbers[number] = little_endian(message, at, 8);
        at += 8;
        break;
      case 5:
        fields.numbers[number] = little_endian(message, at, 4);
        at += 4;
        break;
      case 2: {
        const uint64_t length = read_varint(message, at);
        fields.bytes[number] = message.substr(at, length);
        at += length;
        break;
      }
      default:
        ADD_FAILURE() << "wire type " << (key & 7);
        return fields;
    }
  }
  return fields;
}

struct Scalar {
  double wall_time;
  int64_t step;
  std::string tag;
  float value;
};

std::vector<Scalar> read_events(const std::string& path, std::string* file_version) {
  std::vector<Scalar> scalars;
  const std::vector<std::string> records = read_records(testing::read_text_file(path));
  for (size_t i = 0; i < records.size(); ++i) {
    const Fields event = parse(records[i]);
    double wall_time;
    const uint64_t bits = event.numbers.at(1);  // Event.wall_time, double
    std::memcpy(&wall_time, &bits, sizeof(wall_time));
    if (i == 0) {
      *file_version = event.bytes.count(3) ? event.bytes.at(3) : "";  // Event.file_version
      continue;
    }
    const Fields summary = parse(event.bytes.at(5));                     // Event.summary
    const Fields value = parse(summary.bytes.at(1));                     // Summary.value
    const auto value_bits = static_cast<uint32_t>(value.numbers.at(2));  // Summary.Value.simple_value, float
    float simple_value;
    std::memcpy(&simple_value, &value_bits, sizeof(simple_value));
    scalars.push_back({wall_time, static_cast<int64_t>(event.numbers.at(2)), value.bytes.at(1), simple_value});
  }
  return scalars;
}

std::vector<Json> read_metrics(const std::string& path) {
  std::vector<Json> rows;
  std::istringstream in(testing::read_text_file(path));
  std::string line;
  while (std::getline(in, line)) rows.push_back(parse_json(line, path));
  return rows;
}

double number(const Json& row, const std::string& key) {
  const auto value = row.find(key);
  EXPECT_NE(value, row.end()) << key << " missing in " << row.dump();
  return value == row.end() ? NAN : value->get<double>();
}

std::vector<std::string> event_files(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir)) files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

TEST(RunLogs, MetricsTrainLogAndTensorBoardEventsAgree) {
  TempDir dir;
  const std::string job = dir.file("job.textproto");
  testing::write_text_file(job,
                           "model { vocab_size: 64 n_layer: 1 n_head: 2 n_embd: 16 max_seq_len: 16 }\n"
                           "train { steps: 6 global_batch: 8 seq_len: 16 threads: 1 }\n"
                           "optimizer { lr: 1e-2 warmup_steps: 2 }\n"
                           "data { mock: true }\n"
                           "checkpoint { every_steps: 3 }\n"
                           "logging { log_every: 2 eval_every: 3 eval_batches: 1 }\n");
  const std::string run = dir.file("run");
  const double started = unix_seconds();
  const auto r = run_command(str_cat(kEnvironment, TESSERA_MPIEXEC, " --oversubscribe -np 2 ", kTessera,
                                     " train --config ", job, " --set parallel.dp=2 --run-dir ", run));
  const double finished = unix_seconds();
  ASSERT_EQ(r.exit_code, 0) << r.output;

  // metrics.jsonl: wall-clock time in order within the run, tokens = step * global batch * seq_len.
  const std::vector<Json> rows = read_metrics(run + "/metrics.jsonl");
  ASSERT_EQ(rows.size(), 6u);
  double previous = started;
  for (size_t i = 0; i < rows.size(); ++i) {
    const double time = number(rows[i], "time");
    EXPECT_GE(time, previous - 1e-3);
    EXPECT_LE(time, finished);
    previous = time;
    EXPECT_EQ(number(rows[i], "tokens"), static_cast<double>((i + 1) * 8 * 16));
  }

  // train.log: rank 0's console, line for line what the run printed on stdout.
  const std::string train_log = testing::read_text_file(run + "/train.log");
  for (const char* part : {"tessera train: ", "step     2/6 | loss", "step     3/6 | val loss", "done: 6 steps"}) {
    EXPECT_NE(train_log.find(part), std::string::npos) << part << "\n" << train_log;
  }
  std::istringstream lines(train_log);
  for (std::string line; std::getline(lines, line);) EXPECT_NE(r.output.find(line), std::string::npos) << line;

  // The event file: a file_version event, then one scalar event per metric and step, equal to metrics.jsonl.
  const std::vector<std::string> files = event_files(run + "/tensorboard");
  ASSERT_EQ(files.size(), 1u);
  EXPECT_NE(files[0].find("events.out.tfevents."), std::string::npos);
  std::string file_version;
  const std::vector<Scalar> scalars = read_events(files[0], &file_version);
  EXPECT_EQ(file_version, "brain.Event:2");
  std::map<std::pair<int64_t, std::string>, Scalar> by_step;
  for (const Scalar& s : scalars) {
    EXPECT_TRUE(by_step.emplace(std::make_pair(s.step, s.tag), s).second) << s.tag << " twice at " << s.step;
  }
  size_t expected = 0;
  for (const Json& row : rows) {
    const auto step = static_cast<int64_t>(number(row, "step"));
    for (const char* tag : {"loss", "val_loss", "lr", "grad_norm", "tokens_per_s", "mfu"}) {
      const auto found = by_step.find({step, tag});
      if (!row.contains(tag)) {
        EXPECT_EQ(found, by_step.end()) << tag << " at step " << step << " is not in metrics.jsonl";
        continue;
      }
      ++expected;
      ASSERT_NE(found, by_step.end()) << tag << " at step " << step;
      // simple_value is a float; metrics.jsonl has the double.
      const double want = number(row, tag);
      EXPECT_NEAR(found->second.value, want, 1e-6 * std::fabs(want)) << tag << " at step " << step;
      EXPECT_NEAR(found->second.wall_time, number(row, "time"), 1e-3);
    }
  }
  EXPECT_EQ(scalars.size(), expected);
  EXPECT_EQ(expected, 6u * 4 + 2) << "loss, lr, grad_norm, tokens_per_s per step; val_loss at steps 3 and 6";

  // Resumed: train.log is appended to, and the new attempt writes a second event file.
  const auto resumed = run_command(str_cat(kEnvironment, kTessera, " train --config ", job, " --run-dir ", run,
                                           " --resume auto --set train.steps=8"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  const std::string appended = testing::read_text_file(run + "/train.log");
  EXPECT_EQ(appended.compare(0, train_log.size(), train_log), 0) << "the first attempt's lines are kept";
  EXPECT_NE(appended.find("resumed from " + run + "/checkpoints/step_00000006", train_log.size()), std::string::npos)
      << appended;
  EXPECT_NE(appended.find("done: 2 steps", train_log.size()), std::string::npos) << appended;
  const std::vector<std::string> after = event_files(run + "/tensorboard");
  ASSERT_EQ(after.size(), 2u);
  std::string second_version;
  const std::vector<Scalar> more = read_events(after[0] == files[0] ? after[1] : after[0], &second_version);
  EXPECT_EQ(second_version, "brain.Event:2");
  ASSERT_FALSE(more.empty());
  EXPECT_EQ(more.front().step, 7);
  EXPECT_EQ(more.back().step, 8);
}

TEST(SpikeDetector, FlagsValuesFarAboveTheWindowAfterItsWarmup) {
  SpikeDetector detector(6);
  for (size_t i = 0; i + 1 < SpikeDetector::kWarmup; ++i) {
    EXPECT_FALSE(detector.is_spike(1e9)) << "warm-up";
    detector.add(i % 2 ? 1.0 : 3.0);  // mean 2, std 1
  }
  detector.add(2.0);
  EXPECT_FALSE(detector.is_spike(7.5));
  EXPECT_TRUE(detector.is_spike(9.0));
  SpikeDetector constant(6);
  for (size_t i = 0; i < SpikeDetector::kWindow + 5; ++i) constant.add(4.0);
  EXPECT_FALSE(constant.is_spike(100.0)) << "no spread, no z-score";
}

// A pathological batch (the hook multiplies a step's loss by 1000) skips its update and the run continues; the
// guard off (the default) changes no number; max_skipped consecutive spikes stop the run with exit 1.
TEST(LossSpikes, ASpikeSkipsItsUpdateAndConsecutiveSpikesStopTheRun) {
  TempDir dir;
  const std::string job = dir.file("job.textproto");
  testing::write_text_file(job,
                           "model { vocab_size: 64 n_layer: 1 n_head: 2 n_embd: 16 max_seq_len: 16 }\n"
                           "train { steps: 20 global_batch: 8 seq_len: 16 threads: 1 }\n"
                           "optimizer { lr: 1e-2 warmup_steps: 2 }\n"
                           "data { mock: true }\n"
                           "checkpoint { every_steps: 0 save_on_exit: false }\n"
                           "logging { log_every: 100 }\n");
  auto train = [&](const std::string& name, const std::string& extra) {
    return run_command(
        str_cat(kEnvironment, kTessera, " train --config ", job, " --run-dir ", dir.file(name), " ", extra));
  };
  auto rows_of = [&](const std::string& name) { return read_metrics(dir.file(name) + "/metrics.jsonl"); };
  auto loss = [](const Json& row) { return row.at("loss").dump(); };  // as written

  auto r = train("reference", "");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = train("guarded", "--set train.spike_zscore=6");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = train("injected_off", "--debug-inject-loss-spike 15:1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = train("spike", "--set train.spike_zscore=6 --debug-inject-loss-spike 15:1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("step    15/20 | loss"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("| spike: update skipped"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("1 step(s) skipped"), std::string::npos) << r.output;

  const std::vector<Json> reference = rows_of("reference"), guarded = rows_of("guarded"),
                          injected_off = rows_of("injected_off"), spike = rows_of("spike");
  ASSERT_EQ(reference.size(), 20u);
  ASSERT_EQ(guarded.size(), 20u);
  ASSERT_EQ(injected_off.size(), 20u);
  ASSERT_EQ(spike.size(), 20u);
  for (size_t i = 0; i < 20; ++i) {
    SCOPED_TRACE(str_cat("step ", i + 1));
    // The guard finds no spike in a normal run, and the hook alone only changes the reported loss of step 15.
    EXPECT_EQ(loss(guarded[i]), loss(reference[i]));
    EXPECT_FALSE(guarded[i].contains("skipped"));
    if (i != 14) {
      EXPECT_EQ(loss(injected_off[i]), loss(reference[i]));
    }
    // With the guard, step 15 is flagged and not applied: everything after it differs from the reference.
    if (i < 14) {
      EXPECT_EQ(loss(spike[i]), loss(reference[i]));
    }
    if (i == 14) {
      ASSERT_TRUE(spike[i].contains("spike"));
      EXPECT_EQ(spike[i].at("spike").get<double>(), 1);
      EXPECT_EQ(spike[i].at("skipped").get<double>(), 1);
      EXPECT_NEAR(number(spike[i], "loss"), 1000 * number(reference[i], "loss"), 1e-3 * number(spike[i], "loss"));
    } else {
      EXPECT_FALSE(spike[i].contains("spike"));
    }
    if (i > 14) {
      EXPECT_NE(loss(spike[i]), loss(reference[i]));
    }
  }

  // Three spikes in a row with train.max_skipped=3: the run stops after the third, its row written, exit 1.
  r = train("stopped", "--set train.spike_zscore=6 --set train.max_skipped=3 --debug-inject-loss-spike 12:3");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("the update was skipped for 3 consecutive steps (train.max_skipped; last: step 14"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("a spike above train.spike_zscore"), std::string::npos) << r.output;
  const std::vector<Json> stopped = rows_of("stopped");
  ASSERT_EQ(stopped.size(), 14u);
  for (size_t i = 11; i < 14; ++i) EXPECT_TRUE(stopped[i].contains("spike")) << "step " << i + 1;
  // Two in a row stay below it.
  r = train("two", "--set train.spike_zscore=6 --set train.max_skipped=3 --debug-inject-loss-spike 12:2");
  EXPECT_EQ(r.exit_code, 0) << r.output;

  r = train("bad", "--set train.spike_zscore=-1 --set train.max_skipped=0");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("train.spike_zscore"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("train.max_skipped (0) must be >= 1"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace tessera
