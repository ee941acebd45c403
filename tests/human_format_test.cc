// The text that logs and names are made of, now formatted with fmt: byte sizes and counts at each unit's
// boundaries, the throughput part of a step line, checkpoint directory names and hex digests.
#include "launcher/common/human_format.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "launcher/checkpoints/checkpoint_manifest.h"
#include "launcher/common/checksum.h"
#include "launcher/run/throughput.h"

namespace tessera {
namespace {

TEST(HumanFormat, BytesWithADecimalUnit) {
  EXPECT_EQ(human_bytes(0), "0 B");
  EXPECT_EQ(human_bytes(950), "950 B");
  EXPECT_EQ(human_bytes(999.4), "999 B");
  EXPECT_EQ(human_bytes(1000), "1.0 kB");
  EXPECT_EQ(human_bytes(444300), "444.3 kB");
  EXPECT_EQ(human_bytes(13e6), "13.0 MB");
  EXPECT_EQ(human_bytes(1.49e9), "1.49 GB");
  EXPECT_EQ(human_bytes(2.5e12), "2500.00 GB");
}

TEST(HumanFormat, CountsWithASuffixAboveTenThousand) {
  EXPECT_EQ(human_count(0), "0");
  EXPECT_EQ(human_count(9931), "9931");
  EXPECT_EQ(human_count(9999.6), "10000");
  EXPECT_EQ(human_count(10000), "10.0k");
  EXPECT_EQ(human_count(12345), "12.3k");
  EXPECT_EQ(human_count(1.07e6), "1.07M");
  EXPECT_EQ(human_count(3.2e9), "3.20G");
}

TEST(HumanFormat, LinesSplitAndJoin) {
  EXPECT_EQ(split_lines("a\nb\n"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(split_lines("a\n\nb"), (std::vector<std::string>{"a", "", "b"}));
  EXPECT_TRUE(split_lines("").empty());
  EXPECT_EQ(join_lines({"a", "b"}, "  - "), "\n  - a\n  - b");
  EXPECT_EQ(join_lines({}, "  - "), "");
}

TEST(HumanFormat, ThroughputNamesMfuOnlyWithAKnownPeak) {
  Throughput t;
  t.tflops_per_device = 0.000245487976;
  EXPECT_EQ(format_throughput(t), "0.000245 TFLOP/s/rank");
  t.tflops_per_device = 123.456;
  EXPECT_EQ(format_throughput(t), "123 TFLOP/s/rank");
  t.mfu = 0.4567;
  EXPECT_EQ(format_throughput(t), "MFU 45.7%");
}

TEST(HumanFormat, StepDirectoriesAndDigests) {
  EXPECT_EQ(step_dir_name(0), "step_00000000");
  EXPECT_EQ(step_dir_name(450), "step_00000450");
  EXPECT_EQ(step_dir_name(123456789), "step_123456789");
  EXPECT_EQ(step_of_dir_name(step_dir_name(450)), 450);
  EXPECT_EQ(hex64(0), "0000000000000000");
  EXPECT_EQ(hex64(0xEF46DB3751D8E999ULL), "ef46db3751d8e999");
}

}  // namespace
}  // namespace tessera
