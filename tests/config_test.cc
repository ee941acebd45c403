// Tests of launcher/config: the shipped configs, text-format errors, `--set` overrides of every field type,
// every validation rule, layout resolution on 1..8 ranks, and the explicit text form written to run dirs.
#include "launcher/common/config.h"

#include <google/protobuf/text_format.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/check.h"
#include "models/registry.h"

namespace tessera {
namespace {

using google::protobuf::util::MessageDifferencer;

// A small valid job that leaves every block with defaults (parallel, optimizer, logging) out.
constexpr const char* kSmallJob = R"(
model { vocab_size: 64 n_layer: 4 n_head: 4 n_embd: 32 max_seq_len: 16 }
train { steps: 10 global_batch: 8 seq_len: 16 }
data { mock: true }
)";

config::JobConfig small_job() { return parse_job_config(kSmallJob, "small.textproto"); }

std::string shipped_config(const std::string& name) { return std::string(TESSERA_SOURCE_DIR) + "/configs/" + name; }

// The message of the ConfigError that f throws; a test failure (and "") if it throws none.
std::string config_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected a ConfigError";
  return "";
}

// A file under the test's temporary directory holding text; removed when the object goes.
class TempFile {
 public:
  explicit TempFile(const std::string& text) {
    const auto* info = testing::UnitTest::GetInstance()->current_test_info();
    path_ =
        (std::filesystem::temp_directory_path() / (std::string("tessera_config_test_") + info->name() + ".textproto"))
            .string();
    std::ofstream(path_) << text;
  }
  ~TempFile() { std::filesystem::remove(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// ---- shipped configs --------------------------------------------------------------------------------------

TEST(ShippedConfigs, TinyLoadsAndValidates) {
  const config::JobConfig job = load_job_config(shipped_config("tiny.textproto"), {});
  EXPECT_EQ(job.model().vocab_size(), 2048);
  EXPECT_EQ(job.model().n_layer(), 4);
  EXPECT_EQ(job.model().n_head(), 4);
  EXPECT_EQ(job.model().n_embd(), 128);
  EXPECT_EQ(job.model().max_seq_len(), 128);
  EXPECT_EQ(job.train().steps(), 400);
  EXPECT_EQ(job.train().global_batch(), 16);
  EXPECT_EQ(job.train().seq_len(), 128);
  EXPECT_DOUBLE_EQ(job.train().grad_clip(), 1.0);
  EXPECT_DOUBLE_EQ(job.optimizer().lr(), 3e-3);
  EXPECT_DOUBLE_EQ(job.optimizer().min_lr(), 3e-4);
  EXPECT_EQ(job.optimizer().warmup_steps(), 40);
  EXPECT_DOUBLE_EQ(job.optimizer().weight_decay(), 0.1);
  EXPECT_FALSE(job.data().mock());
  EXPECT_EQ(job.data().train_prefix(), "data/fortunes_train");
  EXPECT_EQ(job.data().valid_prefix(), "data/fortunes_valid");
  EXPECT_EQ(job.data().tokenizer(), "data/fortunes.model");
  EXPECT_EQ(job.logging().log_every(), 10);
  EXPECT_EQ(job.logging().eval_every(), 50);
  EXPECT_EQ(job.logging().eval_batches(), 4);
  EXPECT_EQ(job.logging().run_dir(), "runs/tiny");
  for (int world_size : {1, 2, 4, 8}) {
    const Layout layout = resolve_layout(job, world_size);
    EXPECT_EQ(layout.dp, world_size);
    EXPECT_EQ(layout.micro_batch_size, 16 / world_size);
  }
}

TEST(ShippedConfigs, Gpt2SmallLoadsAndValidates) {
  const config::JobConfig job = load_job_config(shipped_config("gpt2-124m.textproto"), {});
  EXPECT_EQ(job.model().vocab_size(), 50304);
  EXPECT_EQ(job.model().n_layer(), 12);
  EXPECT_EQ(job.model().n_head(), 12);
  EXPECT_EQ(job.model().n_embd(), 768);
  EXPECT_EQ(job.model().max_seq_len(), 1024);
  EXPECT_EQ(job.train().seq_len(), 1024);
  EXPECT_DOUBLE_EQ(job.optimizer().lr(), 6e-4);
  EXPECT_DOUBLE_EQ(job.optimizer().min_lr(), 6e-5);
  EXPECT_EQ(job.optimizer().warmup_steps(), 700);
  EXPECT_TRUE(job.data().mock());
  EXPECT_EQ(resolve_layout(job, 1).dp, 1);
}

TEST(ShippedConfigs, Gpt2SmallRunsInTheReadmeLayout) {
  // mpirun -np 8 tessera train --config configs/gpt2-124m.textproto --set parallel.tp=2 --set parallel.pp=2
  const config::JobConfig job =
      load_job_config(shipped_config("gpt2-124m.textproto"), {"parallel.tp=2", "parallel.pp=2"});
  const Layout layout = resolve_layout(job, 8);
  EXPECT_EQ(layout.tp, 2);
  EXPECT_EQ(layout.pp, 2);
  EXPECT_EQ(layout.dp, 2);
  EXPECT_EQ(layout.micro_batches, 1);
  EXPECT_EQ(layout.micro_batch_size, 4);
}

TEST(ShippedConfigs, Gpt2SmallOnGpusRunsTheFullBatchOnEightRanks) {
  // mpirun -np 8 tessera train --config configs/gpt2-124m-gpu.textproto
  const config::JobConfig job = load_job_config(shipped_config("gpt2-124m-gpu.textproto"), {});
  EXPECT_EQ(job.train().device(), config::CUDA);
  EXPECT_EQ(job.model().dtype(), config::BF16);
  EXPECT_EQ(job.train().global_batch() * job.train().seq_len(), 524288);
  const Layout layout = resolve_layout(job, 8);
  EXPECT_EQ(layout.dp, 8);
  EXPECT_EQ(layout.micro_batches, 2);
  EXPECT_EQ(layout.micro_batch_size, 32);
}

TEST(ShippedConfigs, LlamaTinyRunsAtTp2Pp2OnFourRanks) {
  // mpirun -np 4 tessera train --config configs/llama-tiny.textproto --set parallel.tp=2 --set parallel.pp=2
  const config::JobConfig job =
      load_job_config(shipped_config("llama-tiny.textproto"), {"parallel.tp=2", "parallel.pp=2"});
  const ModelConfig model = model_config_from(job.model());
  EXPECT_EQ(model.arch, "llama");
  EXPECT_EQ(model.n_kv_head, 2);
  EXPECT_FALSE(model.tie_embeddings);
  const Layout layout = resolve_layout(job, 4);
  EXPECT_EQ(layout.dp, 1);
  EXPECT_EQ(layout.micro_batch_size, 16);
}

TEST(ShippedConfigs, Llama1bHasTheLlama3Shape) {
  // mpirun -np 8 tessera train --config configs/llama-1b.textproto --set parallel.tp=2
  const config::JobConfig job = load_job_config(shipped_config("llama-1b.textproto"), {"parallel.tp=2"});
  const ModelConfig model = model_config_from(job.model());
  EXPECT_EQ(model.arch, "llama");
  EXPECT_EQ(model.n_layer, 16);
  EXPECT_EQ(model.n_embd, 2048);
  EXPECT_EQ(model.n_head, 32);
  EXPECT_EQ(model.n_kv_head, 8);
  EXPECT_EQ(model.ffn_hidden, 8192);
  EXPECT_EQ(model.vocab_size, 128256);
  EXPECT_FLOAT_EQ(model.rope_theta, 500000.0f);
  EXPECT_FALSE(model.tie_embeddings);
  EXPECT_EQ(model.dtype, DType::kBF16);
  // Llama 3.2 1B without its tied head: 1.236B with the embedding shared, plus a second 128256 x 2048 table.
  EXPECT_EQ(num_parameters(model), 1498482688);
  const Layout layout = resolve_layout(job, 8);
  EXPECT_EQ(layout.dp, 4);
  EXPECT_EQ(layout.micro_batch_size, 8);
  // tp=16 does not divide the 8 kv heads.
  EXPECT_THROW(resolve_layout(load_job_config(shipped_config("llama-1b.textproto"), {"parallel.tp=16"}), 16),
               ConfigError);
}

TEST(ShippedConfigs, TextFormIsEquivalentAndStable) {
  for (const char* name : {"tiny.textproto", "gpt2-124m.textproto", "gpt2-124m-gpu.textproto", "llama-tiny.textproto",
                           "llama-1b.textproto"}) {
    SCOPED_TRACE(name);
    const config::JobConfig job = load_job_config(shipped_config(name), {});
    const std::string text = job_config_to_text(job);
    const config::JobConfig reparsed = parse_job_config(text, "resolved.textproto");
    EXPECT_TRUE(MessageDifferencer::Equivalent(job, reparsed)) << text;
    EXPECT_EQ(job_config_to_text(reparsed), text);
  }
}

// ---- text format errors -----------------------------------------------------------------------------------

TEST(ParseJobConfig, UnknownFieldNamesPositionMessageTypeAndSuggestion) {
  const std::string message = config_error([] { parse_job_config("model {\n  n_embed: 128\n}\n", "job.textproto"); });
  // The position is that of the field name.
  EXPECT_EQ(message.rfind("job.textproto:2:3: unknown field 'n_embed' in tessera.config.ModelConfig", 0), 0u)
      << message;
  EXPECT_NE(message.find("did you mean 'n_embd'?"), std::string::npos) << message;
  EXPECT_NE(message.find("vocab_size, n_layer, n_head, n_embd"), std::string::npos) << message;
  EXPECT_NE(message.find("\n      n_embed: 128\n      ^"), std::string::npos) << "the line, with a caret: " << message;
}

TEST(ParseJobConfig, UnknownTopLevelField) {
  const std::string message = config_error([] { parse_job_config("modle { }", "job.textproto"); });
  EXPECT_NE(message.find("job.textproto:1:"), std::string::npos) << message;
  EXPECT_NE(message.find("unknown field 'modle' in tessera.config.JobConfig"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean 'model'?"), std::string::npos) << message;
}

TEST(ParseJobConfig, WrongTypeIsReportedWithPosition) {
  const std::string message = config_error([] { parse_job_config("train {\n steps: \"many\"\n}", "job.textproto"); });
  EXPECT_NE(message.find("job.textproto:2:"), std::string::npos) << message;
  EXPECT_NE(message.find("integer"), std::string::npos) << message;
}

TEST(ParseJobConfig, UnknownEnumValueListsTheNames) {
  std::string message = config_error([] { parse_job_config("model { dtype: FP16 }", "job.textproto"); });
  EXPECT_EQ(message.rfind("job.textproto:1:16: 'FP16' is not a value of field 'dtype'", 0), 0u) << message;
  EXPECT_NE(message.find("FP32, BF16"), std::string::npos) << message;
  // Two enums have a field called schedule; both lists are offered, each with its path.
  message = config_error([] { parse_job_config("optimizer { schedule: COSINUS }", "job.textproto"); });
  EXPECT_NE(message.find("COSINE, CONSTANT, LINEAR (optimizer.schedule)"), std::string::npos) << message;
  EXPECT_NE(message.find("ONE_F_ONE_B, GPIPE (parallel.schedule)"), std::string::npos) << message;
}

TEST(ParseJobConfig, MalformedTextIsReportedWithPosition) {
  for (const char* text : {"model { n_layer: 4 ", "model { n_layer 4 }", "model n_layer: 4 }", "}"}) {
    SCOPED_TRACE(text);
    const std::string message = config_error([&] { parse_job_config(text, "bad.textproto"); });
    EXPECT_EQ(message.rfind("bad.textproto:1:", 0), 0u) << message;
  }
}

TEST(ParseJobConfig, BadBooleanAndEarlyEndSayWhatToDo) {
  std::string message = config_error([] { parse_job_config("data { mock: maybe }", "job.textproto"); });
  EXPECT_EQ(message.rfind("job.textproto:1:14: 'maybe' is not a value of boolean field 'mock'; use true or false", 0),
            0u)
      << message;
  message = config_error([] { parse_job_config("model { n_layer: 4\n", "job.textproto"); });
  EXPECT_NE(message.find("the end of the text (is a closing '}' missing?)"), std::string::npos) << message;
}

TEST(ParseJobConfig, RepeatedSingularFieldIsAnError) {
  const std::string message = config_error([] { parse_job_config("train { steps: 1 steps: 2 }", "job.textproto"); });
  EXPECT_EQ(message.rfind("job.textproto:1:18: field 'steps' is set twice", 0), 0u) << message;
}

TEST(ParseJobConfig, ErrorsDoNotGoToStderr) {
  testing::internal::CaptureStderr();
  config_error([] { parse_job_config("model { n_embed: 1 }", "job.textproto"); });
  config_error([] { parse_job_config("model {", "job.textproto"); });
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}

TEST(ParseJobConfig, AcceptsCommentsAndEmptyText) {
  EXPECT_TRUE(MessageDifferencer::Equals(parse_job_config("# nothing\n", "empty.textproto"), config::JobConfig()));
  EXPECT_EQ(parse_job_config("model { n_layer: 3 } # three\n", "job.textproto").model().n_layer(), 3);
}

// ---- loading files ----------------------------------------------------------------------------------------

TEST(LoadJobConfig, MissingFile) {
  EXPECT_EQ(config_error([] { load_job_config("no_such_dir/job.textproto", {}); }),
            "cannot read config 'no_such_dir/job.textproto': it does not exist");
}

TEST(LoadJobConfig, DirectoryIsNotAConfig) {
  const std::string dir = std::string(TESSERA_SOURCE_DIR) + "/configs";
  EXPECT_EQ(config_error([&] { load_job_config(dir, {}); }),
            "cannot read config '" + dir + "': it is a directory, not a file");
}

// A fresh path in the temporary directory, named after the running test.
std::string scratch_path(const std::string& suffix) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string path =
      (std::filesystem::temp_directory_path() / (std::string("tessera_config_test_") + info->name() + suffix)).string();
  std::filesystem::remove(path);
  return path;
}

TEST(LoadJobConfig, AFifoIsRefusedInsteadOfBlocking) {
  const std::string fifo = scratch_path(".fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(config_error([&] { load_job_config(fifo, {}); }),
            "cannot read config '" + fifo + "': it is a FIFO (named pipe), not a regular file");
  std::filesystem::remove(fifo);
}

TEST(LoadJobConfig, AByteOrderMarkIsSkipped) {
  const std::string path = scratch_path(".textproto");
  std::ofstream(path) << "\xef\xbb\xbfmodel { vocab_size: 64 n_layer: 1 n_head: 2 n_embd: 16 max_seq_len: 16 }\n"
                         "train { steps: 1 global_batch: 2 seq_len: 16 }\ndata { mock: true }\n";
  EXPECT_EQ(load_job_config(path, {}).model().n_embd(), 16);
  std::filesystem::remove(path);
}

TEST(LoadJobConfig, ErrorsNameTheFile) {
  TempFile file("model {\n  n_layers: 4\n}\n");
  const std::string message = config_error([&] { load_job_config(file.path(), {}); });
  EXPECT_EQ(message.rfind(file.path() + ":2:", 0), 0u) << message;
}

TEST(LoadJobConfig, AppliesOverridesInOrderThenValidates) {
  TempFile file(std::string(kSmallJob) + "parallel { tp: 2 }\n");
  EXPECT_EQ(load_job_config(file.path(), {}).parallel().tp(), 2);
  EXPECT_EQ(load_job_config(file.path(), {"parallel.tp=4", "parallel.tp=1"}).parallel().tp(), 1);
  // An override can make an invalid file valid, and an invalid override is caught by validation.
  TempFile no_data(
      "model { vocab_size: 64 n_layer: 4 n_head: 4 n_embd: 32 }\n"
      "train { steps: 10 global_batch: 8 seq_len: 16 }\n");
  EXPECT_NE(config_error([&] { load_job_config(no_data.path(), {}); }).find("data.train_prefix"), std::string::npos);
  EXPECT_TRUE(load_job_config(no_data.path(), {"data.mock=true"}).data().mock());
  EXPECT_NE(config_error([&] { load_job_config(file.path(), {"parallel.tp=0"}); }).find("parallel.tp (0)"),
            std::string::npos);
}

// ---- --set overrides --------------------------------------------------------------------------------------

TEST(ApplyOverride, EveryFieldType) {
  config::JobConfig job;
  apply_override(job, "parallel.tp=2");  // int32; creates the parallel block
  EXPECT_TRUE(job.has_parallel());
  EXPECT_EQ(job.parallel().tp(), 2);
  apply_override(job, "parallel.dp=+3");
  EXPECT_EQ(job.parallel().dp(), 3);
  apply_override(job, "train.threads=-1");  // parsed; validation rejects it later
  EXPECT_EQ(job.train().threads(), -1);
  apply_override(job, "train.seed=18446744073709551615");  // uint64
  EXPECT_EQ(job.train().seed(), 18446744073709551615ull);
  apply_override(job, "optimizer.lr=3e-4");  // double
  EXPECT_DOUBLE_EQ(job.optimizer().lr(), 3e-4);
  apply_override(job, "parallel.timeout_s=30");
  EXPECT_DOUBLE_EQ(job.parallel().timeout_s(), 30);
  apply_override(job, "model.norm_eps=1e-6");  // float
  EXPECT_FLOAT_EQ(job.model().norm_eps(), 1e-6f);
  apply_override(job, "data.mock=true");  // bool
  EXPECT_TRUE(job.data().mock());
  apply_override(job, "data.mock=FALSE");
  EXPECT_FALSE(job.data().mock());
  EXPECT_TRUE(job.data().has_mock());
  apply_override(job, "data.mock=1");
  EXPECT_TRUE(job.data().mock());
  apply_override(job, "data.train_prefix=data/x");  // string
  EXPECT_EQ(job.data().train_prefix(), "data/x");
  apply_override(job, "name=a=b");  // only the first '=' separates
  EXPECT_EQ(job.name(), "a=b");
  apply_override(job, "model.dtype=BF16");  // enums, case-insensitive
  EXPECT_EQ(job.model().dtype(), config::BF16);
  apply_override(job, "model.dtype=fp32");
  EXPECT_EQ(job.model().dtype(), config::FP32);
  apply_override(job, "optimizer.schedule=COSINE");
  EXPECT_EQ(job.optimizer().schedule(), config::COSINE);
  apply_override(job, "optimizer.schedule=Linear");
  EXPECT_EQ(job.optimizer().schedule(), config::LINEAR);
  apply_override(job, "parallel.schedule=gpipe");
  EXPECT_EQ(job.parallel().schedule(), config::GPIPE);
  apply_override(job, " logging.run_dir = runs/x ");  // surrounding spaces are dropped
  EXPECT_EQ(job.logging().run_dir(), "runs/x");
}

struct BadOverride {
  const char* assignment;
  std::vector<const char*> expected;  // substrings of the message
};

TEST(ApplyOverride, BadOverridesSayWhatIsAllowed) {
  const std::vector<BadOverride> cases = {
      {"parallel.tp", {"expected path.to.field=value"}},
      {"=3", {"path before '=' is empty", "model, parallel, train"}},
      {"parallel.tq=2", {"unknown field 'tq' in 'parallel'", "did you mean 'tp'?", "tp, pp, dp, micro_batches"}},
      {"paralel.tp=2", {"unknown field 'paralel' at the top level", "did you mean 'parallel'?"}},
      {"model..n_layer=3", {"empty field name"}},
      {"model=3", {"'model' is a block of settings", "vocab_size, n_layer"}},
      {"parallel.tp.x=1", {"'parallel.tp' is a single value", "'x'"}},
      {"parallel.tp=two", {"parallel.tp takes a whole number (int32", "not 'two'"}},
      {"parallel.tp=2.5", {"parallel.tp takes a whole number"}},
      {"parallel.tp=", {"parallel.tp takes a whole number"}},
      {"parallel.tp=3000000000", {"int32, -2147483648 to 2147483647"}},
      {"train.seed=-1", {"train.seed takes a whole number (uint64, 0 to 18446744073709551615)"}},
      {"optimizer.lr=fast", {"optimizer.lr takes a finite number"}},
      {"optimizer.lr=inf", {"optimizer.lr takes a finite number"}},
      {"optimizer.lr=nan", {"optimizer.lr takes a finite number"}},
      {"optimizer.lr=3e-4x", {"optimizer.lr takes a finite number"}},
      {"model.norm_eps=1e40", {"model.norm_eps takes a finite number that fits a float"}},
      {"data.mock=yes", {"data.mock takes true or false", "not 'yes'"}},
      {"model.dtype=FP16", {"model.dtype takes one of FP32, BF16"}},
      {"optimizer.schedule=cosinus", {"optimizer.schedule takes one of COSINE, CONSTANT, LINEAR"}},
      {"train.recompute=PARTIAL", {"train.recompute takes one of NONE, SELECTIVE, FULL"}},
  };
  for (const BadOverride& bad : cases) {
    SCOPED_TRACE(bad.assignment);
    config::JobConfig job = small_job();
    const std::string message = config_error([&] { apply_override(job, bad.assignment); });
    EXPECT_EQ(message.rfind(std::string("--set '") + bad.assignment + "': ", 0), 0u) << message;
    for (const char* expected : bad.expected) EXPECT_NE(message.find(expected), std::string::npos) << message;
  }
}

// The command line against the file (apply_overrides): --unset first, a repeated field's list replaced, the
// command line's choice of training data winning with a notice.
TEST(ApplyOverrides, RepeatedFieldsAreReplacedThenAppendedTo) {
  config::JobConfig job = small_job();
  job.mutable_data()->clear_mock();
  job.mutable_data()->add_train_blend()->set_prefix("file");
  const std::vector<std::string> notices = apply_overrides(
      job, {{"data.train_blend={prefix: \"a\" weight: 0.7}", " data.train_blend = prefix: 'b' weight: 0.3"}, {}});
  EXPECT_TRUE(notices.empty());
  ASSERT_EQ(job.data().train_blend_size(), 2);
  EXPECT_EQ(job.data().train_blend(0).prefix(), "a");
  EXPECT_DOUBLE_EQ(job.data().train_blend(1).weight(), 0.3);
  // apply_override alone appends.
  apply_override(job, "data.train_blend={prefix: \"c\" weight: 1}");
  EXPECT_EQ(job.data().train_blend_size(), 3);
  EXPECT_NO_THROW(validate_job_config(job));

  for (const auto& [assignment, expected] : std::vector<std::pair<std::string, std::string>>{
           {"data.train_blend={}", "an element of 'data.train_blend' is empty"},
           {"data.train_blend={prefix: a}", "--set data.train_blend:1:"},
           {"data.train_blend={weigth: 1}", "did you mean 'weight'?"},
           {"data.train_blend.prefix=a", "'data.train_blend' is a repeated field"}}) {
    SCOPED_TRACE(assignment);
    const std::string message = config_error([&] { apply_overrides(job, {{assignment}, {}}); });
    EXPECT_NE(message.find(expected), std::string::npos) << message;
  }
}

TEST(ApplyOverrides, UnsetClearsBeforeSet) {
  config::JobConfig job = small_job();
  job.mutable_parallel()->set_tp(2);
  apply_overrides(job, {{"train.steps=7"}, {"parallel.tp", "train.steps", "logging.run_dir", "optimizer"}});
  EXPECT_FALSE(job.parallel().has_tp());
  EXPECT_EQ(job.train().steps(), 7);  // set after the unset
  EXPECT_FALSE(job.has_optimizer());
  EXPECT_FALSE(job.has_logging());  // clearing inside an unset block creates nothing
  EXPECT_EQ(config_error([&] { clear_field(job, "parallel.tq"); })
                .rfind("--unset 'parallel.tq': unknown field 'tq' in 'parallel'; did you mean 'tp'? The fields there "
                       "are: tp, pp, dp",
                       0),
            0u);
  EXPECT_NE(config_error([&] { clear_field(job, "parallel.tp.x"); }).find("'parallel.tp' is a single value"),
            std::string::npos);
  EXPECT_NE(config_error([&] { clear_field(job, ""); }).find("the field path is empty"), std::string::npos);
}

TEST(ApplyOverrides, TheCommandLinesTrainingDataWins) {
  config::JobConfig job = small_job();
  job.mutable_data()->clear_mock();
  job.mutable_data()->set_train_prefix("data/x");
  std::vector<std::string> notices = apply_overrides(job, {{"data.mock=true"}, {}});
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_EQ(notices[0],
            "--set data.mock=true overrides the config's data.train_prefix 'data/x', which is ignored: training on "
            "generated tokens");
  EXPECT_FALSE(job.data().has_train_prefix());
  EXPECT_NO_THROW(validate_job_config(job));

  // A prefix replaces the file's mock and blend.
  job.mutable_data()->add_train_blend()->set_prefix("b");
  notices = apply_overrides(job, {{"data.train_prefix=data/y"}, {}});
  ASSERT_EQ(notices.size(), 2u);
  EXPECT_NE(notices[0].find("overrides the config's data.mock=true, which is ignored: training on 'data/y'"),
            std::string::npos);
  EXPECT_NE(notices[1].find("the config's data.train_blend (1 dataset(s))"), std::string::npos);
  EXPECT_FALSE(job.data().mock());
  EXPECT_EQ(job.data().train_blend_size(), 0);

  // mock=false chooses nothing; two choices on the command line stay the validation error.
  EXPECT_TRUE(apply_overrides(job, {{"data.mock=false", "parallel.tp=1"}, {}}).empty());
  EXPECT_EQ(job.data().train_prefix(), "data/y");
  apply_overrides(job, {{"data.mock=true", "data.train_prefix=z"}, {}});
  EXPECT_NE(config_error([&] { validate_job_config(job); }).find("both set"), std::string::npos);
}

// ---- validation -------------------------------------------------------------------------------------------

TEST(ValidateJobConfig, SmallJobWithoutOptionalBlocksIsValid) {
  const config::JobConfig job = small_job();
  EXPECT_FALSE(job.has_parallel());
  EXPECT_FALSE(job.has_optimizer());
  EXPECT_FALSE(job.has_logging());
  EXPECT_NO_THROW(validate_job_config(job));
}

struct InvalidCase {
  std::vector<const char*> overrides;  // applied to small_job()
  const char* expected;                // a substring of the message
};

TEST(ValidateJobConfig, EveryRuleNamesItsField) {
  const std::vector<InvalidCase> cases = {
      {{"model.vocab_size=0"}, "model.vocab_size (0) must be > 0"},
      {{"model.n_layer=0"}, "model.n_layer (0) must be > 0"},
      {{"model.n_head=-1"}, "model.n_head (-1) must be > 0"},
      {{"model.n_embd=0"}, "model.n_embd (0) must be > 0"},
      {{"model.n_embd=30"}, "model.n_embd (30) must be divisible by model.n_head (4)"},
      {{"model.n_embd=100", "model.n_head=3"}, "model.n_head to a divisor of 100 such as 2 or 4"},
      {{"model.max_seq_len=0"}, "model.max_seq_len (0) must be > 0"},
      {{"model.norm_eps=0"}, "model.norm_eps (0) must be a finite number > 0"},
      {{"model.vocab_pad_multiple=0"}, "model.vocab_pad_multiple (0) must be >= 1"},
      {{"model.init_std=-0.02"}, "model.init_std (-0.02) must be a finite number > 0"},
      {{"train.steps=0"}, "train.steps (0) must be > 0"},
      {{"train.global_batch=-8"}, "train.global_batch (-8) must be > 0"},
      {{"train.seq_len=0"}, "train.seq_len (0) must be > 0"},
      {{"train.seq_len=17"}, "train.seq_len (17) must be <= model.max_seq_len (16)"},
      {{"train.grad_clip=-1"}, "train.grad_clip (-1) must be a finite number >= 0"},
      {{"train.threads=-1"}, "train.threads (-1) must be >= 0"},
      {{"train.recompute=FULL", "train.recompute_every=0"}, "train.recompute_every (0) must be >= 1"},
      {{"train.recompute_every=2"}, "train.recompute_every (2) applies to train.recompute FULL only, not NONE"},
      {{"train.recompute=SELECTIVE", "train.recompute_every=3"}, "applies to train.recompute FULL only, not SELECTIVE"},
      {{"optimizer.lr=0"}, "optimizer.lr (0) must be a finite number > 0"},
      {{"optimizer.min_lr=-1e-5"}, "optimizer.min_lr (-1e-05) must be between 0 and optimizer.lr"},
      {{"optimizer.min_lr=1"}, "optimizer.min_lr (1) must be between 0 and optimizer.lr (0.0003)"},
      {{"optimizer.beta1=1"}, "optimizer.beta1 (1) must be in [0, 1)"},
      {{"optimizer.beta2=-0.5"}, "optimizer.beta2 (-0.5) must be in [0, 1)"},
      {{"optimizer.eps=0"}, "optimizer.eps (0) must be a finite number > 0"},
      {{"optimizer.weight_decay=-0.1"}, "optimizer.weight_decay (-0.1) must be a finite number >= 0"},
      {{"optimizer.warmup_steps=-1"}, "optimizer.warmup_steps (-1) must be >= 0"},
      {{"optimizer.warmup_steps=11"}, "optimizer.warmup_steps (11) must be <= train.steps (10)"},
      {{"optimizer.decay_steps=-1"}, "optimizer.decay_steps (-1) must be >= 0"},
      {{"parallel.tp=0"}, "parallel.tp (0) must be >= 1"},
      {{"parallel.pp=-2"}, "parallel.pp (-2) must be >= 1"},
      {{"parallel.dp=0"}, "parallel.dp (0) must be >= 1; leave it unset"},
      {{"parallel.micro_batches=0"}, "parallel.micro_batches (0) must be >= 1"},
      {{"parallel.zero_stage=3"}, "parallel.zero_stage (3) must be 0"},
      {{"parallel.timeout_s=0"}, "parallel.timeout_s (0) must be a finite number > 0"},
      {{"parallel.dp_bucket_mb=0"}, "parallel.dp_bucket_mb (0) must be a finite number > 0"},
      {{"parallel.dp_bucket_mb=-1"}, "parallel.dp_bucket_mb (-1) must be a finite number > 0"},
      {{"data.mock=false"}, "data.train_prefix is not set"},
      {{"data.mock=false", "data.train_prefix="}, "data.train_prefix is not set"},
      {{"data.train_prefix=data/x"}, "data.mock=true and data.train_prefix are both set"},
      {{"data.valid_prefix="}, "data.valid_prefix is set but empty"},
      {{"logging.log_every=0"}, "logging.log_every (0) must be >= 1"},
      {{"logging.eval_every=-1"}, "logging.eval_every (-1) must be >= 0"},
      {{"logging.eval_batches=0"}, "logging.eval_batches (0) must be >= 1"},
      {{"logging.run_dir="}, "logging.run_dir is empty"},
      {{"logging.trace_steps=3:2"}, "logging.trace_steps (--trace-steps) is '3:2': give FIRST:LAST"},
      {{"logging.trace_steps=0:1"}, "logging.trace_steps (--trace-steps) is '0:1'"},
      {{"logging.trace_steps=2"}, "logging.trace_steps (--trace-steps) is '2'"},
      {{"logging.trace_steps=2:x"}, "logging.trace_steps (--trace-steps) is '2:x'"},
      {{"logging.trace_steps=-1:3"}, "logging.trace_steps (--trace-steps) is '-1:3'"},
      {{"data.mock=false", "data.train_prefix=data/x", "logging.eval_every=5"},
       "logging.eval_every (5) asks for validation, but data.valid_prefix is not set"},
  };
  for (const InvalidCase& invalid : cases) {
    SCOPED_TRACE(invalid.overrides.back());
    config::JobConfig job = small_job();
    for (const char* assignment : invalid.overrides) apply_override(job, assignment);
    const std::string message = config_error([&] { validate_job_config(job); });
    EXPECT_NE(message.find(invalid.expected), std::string::npos) << message;
  }
}

TEST(ValidateJobConfig, ValidVariantsPass) {
  const std::vector<std::vector<const char*>> cases = {
      {"data.mock=false", "data.train_prefix=data/x"},
      {"data.mock=false", "data.train_prefix=data/x", "data.valid_prefix=data/v", "logging.eval_every=5"},
      {"logging.eval_every=5"},  // mock data evaluates on generated tokens
      {"optimizer.warmup_steps=10", "optimizer.min_lr=3e-4", "optimizer.decay_steps=0"},
      {"train.grad_clip=0", "optimizer.weight_decay=0", "optimizer.beta1=0", "parallel.zero_stage=1"},
      {"parallel.zero_stage=1", "parallel.dp_bucket_mb=0.001"},
      {"parallel.zero_stage=2", "parallel.dp_bucket_mb=0.001"},
      {"train.seq_len=1", "model.max_seq_len=1"},
      {"logging.trace_steps=2:3"},
      {"logging.trace_steps=5:5"},
      {"logging.trace_steps="},  // empty: no trace
      {"train.recompute=SELECTIVE"},
      {"train.recompute=FULL", "train.recompute_every=3"},
  };
  for (const auto& overrides : cases) {
    SCOPED_TRACE(overrides.back());
    config::JobConfig job = small_job();
    for (const char* assignment : overrides) apply_override(job, assignment);
    EXPECT_NO_THROW(validate_job_config(job));
  }
}

TEST(ParseStepRange, FirstAndLastInclusive) {
  int first = 0, last = 0;
  EXPECT_TRUE(parse_step_range("2:3", &first, &last));
  EXPECT_EQ(first, 2);
  EXPECT_EQ(last, 3);
  EXPECT_TRUE(parse_step_range("7:7", &first, &last));
  EXPECT_EQ(first, 7);
  EXPECT_EQ(last, 7);
  for (const char* bad : {"", ":", "3", "3:", ":3", "0:2", "4:3", "1:2:3", " 1:2", "1:2 ", "+1:2", "1:99999999999"}) {
    EXPECT_FALSE(parse_step_range(bad, &first, &last)) << bad;
  }
}

TEST(ValidateJobConfig, RequiredFieldsSayHowToSetThem) {
  const std::vector<std::pair<std::function<void(config::JobConfig&)>, const char*>> cases = {
      {[](config::JobConfig& job) { job.mutable_model()->clear_vocab_size(); },
       "model.vocab_size is required: set it in the model { } block of the config or with --set model.vocab_size=N"},
      {[](config::JobConfig& job) { job.mutable_model()->clear_n_layer(); }, "model.n_layer is required"},
      {[](config::JobConfig& job) { job.mutable_model()->clear_n_head(); }, "model.n_head is required"},
      {[](config::JobConfig& job) { job.mutable_model()->clear_n_embd(); }, "model.n_embd is required"},
      {[](config::JobConfig& job) { job.mutable_train()->clear_steps(); }, "train.steps is required"},
      {[](config::JobConfig& job) { job.mutable_train()->clear_global_batch(); }, "train.global_batch is required"},
      {[](config::JobConfig& job) { job.mutable_train()->clear_seq_len(); }, "train.seq_len is required"},
  };
  for (const auto& [clear, expected] : cases) {
    SCOPED_TRACE(expected);
    config::JobConfig job = small_job();
    clear(job);
    const std::string message = config_error([&] { validate_job_config(job); });
    EXPECT_EQ(message.rfind(expected, 0), 0u) << message;
  }
}

TEST(ValidateJobConfig, ReportsEveryProblemAtOnce) {
  const std::string message = config_error([] { validate_job_config(config::JobConfig()); });
  EXPECT_EQ(message.rfind("8 problems in the job config:\n  - ", 0), 0u) << message;
  for (const char* field : {"model.vocab_size", "model.n_layer", "model.n_head", "model.n_embd", "train.steps",
                            "train.global_batch", "train.seq_len", "data.train_prefix"}) {
    EXPECT_NE(message.find(field), std::string::npos) << field << " in " << message;
  }
}

TEST(ValidateJobConfig, NonFiniteValuesFromTextAreRejected) {
  const std::vector<std::pair<const char*, const char*>> cases = {
      {"optimizer { lr: inf }", "optimizer.lr (inf)"},         {"optimizer { lr: nan }", "optimizer.lr (nan)"},
      {"optimizer { beta1: nan }", "optimizer.beta1 (nan)"},   {"model { norm_eps: inf }", "model.norm_eps (inf)"},
      {"train { grad_clip: -inf }", "train.grad_clip (-inf)"}, {"parallel { timeout_s: nan }", "parallel.timeout_s"},
  };
  for (const auto& [text, expected] : cases) {
    SCOPED_TRACE(text);
    config::JobConfig job = small_job();
    job.MergeFrom(parse_job_config(text, "job.textproto"));
    const std::string message = config_error([&] { validate_job_config(job); });
    EXPECT_NE(message.find(expected), std::string::npos) << message;
  }
}

// ---- layouts ----------------------------------------------------------------------------------------------

// Every (tp, pp, micro_batches) on 1..8 ranks against closed-form expectations: a layout is valid exactly when
// tp * pp divides the world, tp divides n_head (4) and pp <= n_layer + 2 (6: the embedding and the head may be
// stages of their own); global_batch 5040 is divisible by every dp * micro_batches that occurs (dp <= 8,
// micro_batches <= 3).
TEST(ResolveLayout, AllLayoutsOnOneToEightRanks) {
  for (int world_size = 1; world_size <= 8; ++world_size) {
    for (int tp = 1; tp <= 8; ++tp) {
      for (int pp = 1; pp <= 8; ++pp) {
        for (int micro_batches : {1, 2, 3}) {
          for (bool explicit_dp : {false, true}) {
            SCOPED_TRACE(testing::Message() << "world " << world_size << " tp " << tp << " pp " << pp << " mb "
                                            << micro_batches << (explicit_dp ? " dp set" : ""));
            config::JobConfig job = small_job();
            apply_override(job, "train.global_batch=5040");
            job.mutable_parallel()->set_tp(tp);
            job.mutable_parallel()->set_pp(pp);
            job.mutable_parallel()->set_micro_batches(micro_batches);
            const bool divides = world_size % (tp * pp) == 0;
            if (explicit_dp) job.mutable_parallel()->set_dp(divides ? world_size / (tp * pp) : 1);
            const bool valid = divides && 4 % tp == 0 && pp <= 6;
            if (valid) {
              const Layout layout = resolve_layout(job, world_size);
              const int dp = world_size / (tp * pp);
              EXPECT_EQ(layout.tp, tp);
              EXPECT_EQ(layout.pp, pp);
              EXPECT_EQ(layout.dp, dp);
              EXPECT_EQ(layout.micro_batches, micro_batches);
              EXPECT_EQ(layout.micro_batch_size, 5040 / (dp * micro_batches));
            } else {
              config_error([&] { resolve_layout(job, world_size); });
            }
          }
        }
      }
    }
  }
}

TEST(ResolveLayout, ExplicitDpThatDoesNotMatchTheWorld) {
  config::JobConfig job = small_job();
  for (const char* assignment : {"parallel.tp=2", "parallel.pp=2", "parallel.dp=1"}) apply_override(job, assignment);
  EXPECT_EQ(config_error([&] { resolve_layout(job, 8); }),
            "parallel.tp=2 * parallel.pp=2 * parallel.dp=1 = 4 ranks, but the job runs on 8 ranks (mpirun -np): set "
            "parallel.dp=2 or leave it unset");
  EXPECT_EQ(config_error([&] { resolve_layout(job, 6); }),
            "parallel.tp=2 * parallel.pp=2 * parallel.dp=1 = 4 ranks, but the job runs on 6 ranks (mpirun -np): run "
            "on 4 ranks (mpirun -np 4), or choose parallel.tp, parallel.pp and parallel.dp whose product is 6");
}

TEST(ResolveLayout, ModelCopyThatDoesNotDivideTheWorld) {
  config::JobConfig job = small_job();
  apply_override(job, "parallel.pp=3");
  const std::string message = config_error([&] { resolve_layout(job, 8); });
  EXPECT_NE(message.find("parallel.tp=1 * parallel.pp=3 = 3 ranks per copy of the model, which does not divide the 8 "
                         "ranks the job runs on (mpirun -np)"),
            std::string::npos)
      << message;
}

TEST(ResolveLayout, HeadsLayersAndBatch) {
  struct Case {
    std::vector<const char*> overrides;
    int world_size;
    const char* expected;
  };
  const std::vector<Case> cases = {
      {{"parallel.tp=3"}, 3, "model.n_head (4) must be divisible by parallel.tp (3)"},
      {{"parallel.tp=3"}, 3, "choose parallel.tp from 1, 2, 4"},
      {{"parallel.pp=7"}, 7, "parallel.pp (7) is more than model.n_layer + 2 (6)"},
      {{}, 3, "train.global_batch (8) must be divisible by dp (3) * parallel.micro_batches (1) = 3"},
      {{}, 3, "a multiple of 3 such as 6 or 9"},
      {{"parallel.micro_batches=3"},
       1,
       "train.global_batch (8) must be divisible by dp (1) * parallel.micro_batches (3)"},
      {{"parallel.micro_batches=16"}, 1, "a multiple of 16 such as 16,"},
      {{"model.n_layer=0"}, 1, "model.n_layer (0) must be > 0"},  // validation runs first
  };
  for (const Case& bad : cases) {
    SCOPED_TRACE(bad.expected);
    config::JobConfig job = small_job();
    for (const char* assignment : bad.overrides) apply_override(job, assignment);
    const std::string message = config_error([&] { resolve_layout(job, bad.world_size); });
    EXPECT_NE(message.find(bad.expected), std::string::npos) << message;
  }
}

// The architecture's own checks, through validation and layout resolution (models/*/shape_problems).
TEST(ResolveLayout, ArchitectureShapeRules) {
  struct Case {
    std::vector<const char*> overrides;
    int world_size;
    const char* expected;
  };
  const std::vector<Case> cases = {
      {{"model.arch=LLAMA", "model.n_kv_head=-2"}, 1, "model.n_kv_head (-2) must be >= 0"},
      {{"model.arch=LLAMA", "model.ffn_hidden=-1"}, 1, "model.ffn_hidden (-1) must be >= 0"},
      {{"model.arch=LLAMA", "model.rope_theta=0"}, 1, "model.rope_theta (0) must be a finite number > 0"},
      {{"model.arch=LLAMA", "model.n_kv_head=3"}, 1, "model.n_kv_head (3) must divide model.n_head (4)"},
      {{"model.arch=LLAMA", "model.n_kv_head=1", "parallel.tp=2"},
       2,
       "model.n_kv_head (1) must be divisible by parallel.tp (2)"},
      {{"model.arch=LLAMA", "model.ffn_hidden=33", "parallel.tp=2"},
       2,
       "model.ffn_hidden (33) must be positive and divisible by parallel.tp (2)"},
      {{"model.n_kv_head=2"}, 1, "model.n_kv_head (2) applies to arch LLAMA"},
      {{"model.ffn_hidden=64"}, 1, "model.ffn_hidden (64) applies to arch LLAMA"},
      {{"model.tie_embeddings=false"}, 1, "GPT2's output head is its token embedding"},
  };
  for (const Case& bad : cases) {
    SCOPED_TRACE(bad.expected);
    config::JobConfig job = small_job();
    for (const char* assignment : bad.overrides) apply_override(job, assignment);
    const std::string message = config_error([&] {
      validate_job_config(job);
      resolve_layout(job, bad.world_size);
    });
    EXPECT_NE(message.find(bad.expected), std::string::npos) << message;
  }
}

// Defaults the architecture fills: GPT-2 multi-head, 4C MLP, tied; Llama untied, SwiGLU of 8C/3 rounded to 16.
TEST(ModelConfigFrom, ArchitectureDefaults) {
  config::JobConfig job = small_job();
  ModelConfig gpt2 = model_config_from(job.model());
  EXPECT_EQ(gpt2.arch, "gpt2");
  EXPECT_EQ(gpt2.n_kv_head, 4);
  EXPECT_EQ(gpt2.ffn_hidden, 128);
  EXPECT_TRUE(gpt2.tie_embeddings);
  apply_override(job, "model.arch=LLAMA");
  ModelConfig llama = model_config_from(job.model());
  EXPECT_EQ(llama.arch, "llama");
  EXPECT_EQ(llama.n_kv_head, 4);
  EXPECT_EQ(llama.ffn_hidden, 96);  // 8 * 32 / 3 = 85, rounded up to 96
  EXPECT_FALSE(llama.tie_embeddings);
  apply_override(job, "model.tie_embeddings=true");
  EXPECT_TRUE(model_config_from(job.model()).tie_embeddings);
}

TEST(TrainingModelConfig, CarriesRecomputationAndWhichBlocks) {
  config::JobConfig job = small_job();
  EXPECT_EQ(training_model_config(job).recompute, Recompute::kNone);
  EXPECT_FALSE(training_model_config(job).recomputes(0));
  apply_override(job, "train.recompute=SELECTIVE");
  EXPECT_TRUE(training_model_config(job).recomputes(1));
  apply_override(job, "train.recompute=FULL");
  apply_override(job, "train.recompute_every=2");
  const ModelConfig full = training_model_config(job);
  EXPECT_EQ(full.recompute, Recompute::kFull);
  EXPECT_EQ(full.recompute_every, 2);
  EXPECT_TRUE(full.recomputes(0));
  EXPECT_FALSE(full.recomputes(1));
  EXPECT_TRUE(full.recomputes(2));
  // The model's shape alone carries none of it.
  EXPECT_EQ(model_config_from(job.model()).recompute, Recompute::kNone);
}

// ---- text form --------------------------------------------------------------------------------------------

TEST(JobConfigToText, MakesDefaultsExplicitAndLeavesMeaningfulUnsetFieldsOut) {
  const std::string text = job_config_to_text(small_job());
  for (const char* expected :
       {"name: \"tessera\"", "arch: GPT2", "norm_eps: 1e-05", "dtype: FP32", "tp: 1", "schedule: ONE_F_ONE_B",
        "timeout_s: 300", "seed: 1234", "lr: 0.0003", "schedule: COSINE", "mock: true", "run_dir: \"runs/default\""}) {
    EXPECT_NE(text.find(expected), std::string::npos) << expected << " in\n" << text;
  }
  for (const char* absent : {"dp:", "decay_steps:", "train_prefix:", "valid_prefix:", "tokenizer:"}) {
    EXPECT_EQ(text.find(absent), std::string::npos) << absent << " in\n" << text;
  }
  const config::JobConfig reparsed = parse_job_config(text, "resolved.textproto");
  EXPECT_TRUE(MessageDifferencer::Equivalent(small_job(), reparsed));
  EXPECT_TRUE(reparsed.parallel().has_tp());
  EXPECT_FALSE(reparsed.parallel().has_dp());
}

// data.train_blend: several datasets instead of train_prefix, each with a positive weight.
TEST(ConfigTest, TrainBlendIsValidatedEntryByEntry) {
  auto job_with_data = [](const std::string& data) {
    config::JobConfig job = small_job();
    job.clear_data();
    google::protobuf::TextFormat::ParseFromString(data, job.mutable_data());
    return job;
  };
  EXPECT_NO_THROW(validate_job_config(
      job_with_data(R"(train_blend { prefix: "a" weight: 0.7 } train_blend { prefix: "b" weight: 0.3 })")));
  std::string message = config_error(
      [&] { validate_job_config(job_with_data(R"(train_prefix: "a" train_blend { prefix: "b" weight: 1 })")); });
  EXPECT_NE(message.find("data.train_prefix and data.train_blend are both set"), std::string::npos) << message;
  message =
      config_error([&] { validate_job_config(job_with_data(R"(mock: true train_blend { prefix: "b" weight: 1 })")); });
  EXPECT_NE(message.find("data.mock=true and data.train_blend are both set"), std::string::npos) << message;
  message = config_error([&] {
    validate_job_config(job_with_data(R"(train_blend { prefix: "a" weight: 1 } train_blend { weight: 0 })"));
  });
  EXPECT_NE(message.find("data.train_blend[1].prefix is not set"), std::string::npos) << message;
  EXPECT_NE(message.find("data.train_blend[1].weight (0) must be a finite number > 0"), std::string::npos) << message;
}

}  // namespace
}  // namespace tessera
