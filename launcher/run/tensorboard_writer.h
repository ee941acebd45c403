// TensorBoardWriter: a run's scalar metrics as a TensorBoard event file, RUN_DIR/tensorboard/events.out.tfevents.*,
// so that `tensorboard --logdir RUN_DIR` plots them while the run trains.
//
// The file is a TFRecord stream: each record is its length (u64, little-endian), the masked CRC-32C of those 8
// bytes, the data, and the masked CRC-32C of the data (launcher/common/crc32c.h). The data of each record is
// a serialized tensorboard::Event (proto/tensorboard.proto); the first is {wall_time, file_version:
// "brain.Event:2"}, then one Event{wall_time, step, summary{value{tag, simple_value}}} per metric and step.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace tessera {

class TensorBoardWriter {
 public:
  // Creates dir if missing and a new event file in it (a resumed run starts another file; TensorBoard reads
  // them all, in order). Throws ConfigError if it cannot. Written only by the process that owns it (rank 0).
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // Appends one scalar event; nothing reaches the file before flush().
  void add_scalar(const std::string& tag, double value, int64_t step, double wall_time);
  // Flushes what was added, so that TensorBoard sees every finished step.
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& data);

  std::string path_;
  std::FILE* file_ = nullptr;
};

// Unix time in seconds (wall clock, with its fraction), as metrics.jsonl's "time" and the events' wall_time.
double unix_seconds();

}  // namespace tessera
