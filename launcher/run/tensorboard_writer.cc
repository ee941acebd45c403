// TensorBoard event files: TFRecord framing around serialized Event messages.
#include "launcher/run/tensorboard_writer.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "core/check.h"
#include "launcher/common/crc32c.h"
#include "launcher/run/run_dir.h"
#include "proto/tensorboard.pb.h"

namespace tessera {

double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  make_directories(dir);
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0) std::strcpy(host, "localhost");
  const double now = unix_seconds();
  // TensorBoard finds its files by "tfevents" in the name; the pid keeps two runs started in one second apart.
  path_ = str_cat(dir, "/events.out.tfevents.", static_cast<long long>(now), ".", host, ".", ::getpid());
  file_ = std::fopen(path_.c_str(), "wb");
  TS_CHECK(file_ != nullptr, ConfigError, "cannot write '", path_, "': ", std::strerror(errno));
  tensorboard::Event event;
  event.set_wall_time(now);
  event.set_file_version("brain.Event:2");
  write_record(event.SerializeAsString());
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step, double wall_time) {
  tensorboard::Event event;
  event.set_wall_time(wall_time);
  event.set_step(step);
  tensorboard::SummaryValue* summary_value = event.mutable_summary()->add_value();
  summary_value->set_tag(tag);
  summary_value->set_simple_value(static_cast<float>(value));
  write_record(event.SerializeAsString());
}

void TensorBoardWriter::flush() {
  TS_CHECK(std::fflush(file_) == 0, Error, "cannot write '", path_, "': ", std::strerror(errno));
}

void TensorBoardWriter::write_record(const std::string& data) {
  unsigned char header[12];
  const uint64_t length = data.size();
  for (int i = 0; i < 8; ++i) header[i] = static_cast<unsigned char>(length >> (8 * i));
  const uint32_t length_crc = masked_crc32c(header, 8);
  const uint32_t data_crc = masked_crc32c(data.data(), data.size());
  for (int i = 0; i < 4; ++i) header[8 + i] = static_cast<unsigned char>(length_crc >> (8 * i));
  unsigned char footer[4];
  for (int i = 0; i < 4; ++i) footer[i] = static_cast<unsigned char>(data_crc >> (8 * i));
  const bool ok = std::fwrite(header, 1, sizeof(header), file_) == sizeof(header) &&
                  std::fwrite(data.data(), 1, data.size(), file_) == data.size() &&
                  std::fwrite(footer, 1, sizeof(footer), file_) == sizeof(footer);
  TS_CHECK(ok, Error, "cannot write '", path_, "': ", std::strerror(errno));
}

}  // namespace tessera
