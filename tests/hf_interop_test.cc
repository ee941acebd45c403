// Hugging Face interop: the JSON reader and writer, safetensors files, and `tessera export --format hf` /
// `tessera import --hf` end to end — a bit-exact round trip of checkpoints saved at tp=2 (the export assembles
// the shards), sharded exports, bf16 rounding, the tokenizer files, and every user error (exit code, message,
// nothing written). The loss of an export under Hugging Face's own forward pass is checked independently by
// tests/hf_reference.py.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "core/bf16.h"
#include "core/check.h"
#include "launcher/commands/fixture.h"
#include "launcher/common/config.h"
#include "launcher/common/hdf5_file.h"
#include "launcher/common/json_io.h"
#include "launcher/data/prepare.h"
#include "launcher/interop/hf_directory.h"
#include "launcher/interop/safetensors.h"
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

std::string tessera(const std::string& args) { return kEnvironment + kTessera + " " + args; }
std::string fixture_path(const std::string& name) { return std::string(TESSERA_TEST_DATA) + "/" + name + ".h5"; }
bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Every model tensor of a checkpoint directory's model.h5, by name.
std::map<std::string, std::vector<float>> model_tensors(const std::string& checkpoint_dir,
                                                        const std::vector<std::string>& names) {
  H5Reader file(checkpoint_dir + "/model.h5");
  std::map<std::string, std::vector<float>> tensors;
  for (const std::string& name : names) tensors[name] = file.read_f32("model/" + name);
  return tensors;
}

// The bytes of a safetensors file with this header text and data.
std::string safetensors_bytes(const std::string& header, const std::string& data, uint64_t length_field = 0) {
  const uint64_t n = length_field != 0 ? length_field : header.size();
  std::string bytes(8, '\0');
  std::memcpy(bytes.data(), &n, 8);
  return bytes + header + data;
}

// ---- JSON ----------------------------------------------------------------------------------------------------

TEST(Json, WritesEscapedStringsAndNumbersThatParseBack) {
  Json object = Json::object();
  object["text"] = "quote \" backslash \\ newline \n tab \t bell \x07 café";
  object["int"] = int64_t{-9007199254740993};
  object["float"] = 1e-5;
  object["whole"] = 10000.0;
  object["null"] = nullptr;
  object["list"] = {true, false};
  const std::string text = dump_json(object);
  EXPECT_TRUE(contains(text, R"("quote \" backslash \\ newline \n tab \t bell \u0007 café")")) << text;
  EXPECT_TRUE(contains(text, R"("float":1e-05)")) << text;
  EXPECT_TRUE(contains(text, R"("whole":10000.0)")) << text;
  for (const std::string& written : {dump_json(object), dump_json(object, 2), dump_json_line(object)}) {
    const Json back = parse_json(written, "test");
    EXPECT_EQ(back.at("text"), object.at("text"));
    EXPECT_EQ(back.at("int").get<int64_t>(), int64_t{-9007199254740993});
    EXPECT_EQ(back.at("float").get<double>(), 1e-5);
    EXPECT_TRUE(back.at("whole").is_number_float());
    EXPECT_TRUE(back.at("null").is_null());
    EXPECT_EQ(back.at("list").size(), 2u);
    EXPECT_EQ(back, object);  // insertion order too
  }
  EXPECT_EQ(parse_json(R"("\u00e9\ud83d\ude00")", "test").get<std::string>(), "é\xF0\x9F\x98\x80");
  // Bytes that are not UTF-8 (a decoded token cut in the middle of a character) are replaced, not refused.
  EXPECT_EQ(dump_json(Json("ab\xC3")), "\"ab\xEF\xBF\xBD\"");
}

TEST(Json, OneLineRowsHaveSpacesAfterSeparators) {
  const Json row = {
      {"step", 3}, {"loss", 2.5}, {"name", "a \"b\""}, {"loglik", {-1.5, -2.25}}, {"empty", Json::array()}};
  EXPECT_EQ(dump_json_line(row),
            R"({"step": 3, "loss": 2.5, "name": "a \"b\"", "loglik": [-1.5, -2.25], "empty": []})");
  // Doubles are written to read back exactly (nlohmann writes the shortest such text).
  for (double value : {0.1, 1.0 / 3, 4.125953517854214, 6.02e23, -1e-300}) {
    EXPECT_EQ(parse_json(dump_json_line(Json{{"x", value}}), "test").at("x").get<double>(), value);
  }
}

TEST(Json, RefusesWhatTheStandardRefuses) {
  for (const char* text :
       {"", "{", "{\"a\":1,}", "[1,]", "{'a':1}", "{\"a\":1} x", "01", "1.", "NaN", "[1e999]", "{\"a\":1,\"a\":2}",
        "\"tab\there\"", "\"\\x\"", "\"\\ud800\"", "\"\xC3\x28\"", "tru", "// comment\n{}"}) {
    SCOPED_TRACE(text);
    const std::string message = testing::error_message<DataError>([&] { parse_json(text, "f.json"); });
    EXPECT_TRUE(contains(message, "f.json: ")) << message;
  }
  std::string deep(100, '[');
  deep += std::string(100, ']');
  EXPECT_TRUE(contains(testing::error_message<DataError>([&] { parse_json(deep, "f"); }), "deeper than 64"));
  std::string deep_enough(64, '[');
  deep_enough += std::string(64, ']');
  EXPECT_NO_THROW(parse_json(deep_enough, "f"));
}

TEST(Json, ErrorsSayWhere) {
  // The byte nlohmann stopped at (counting from 1), and its line and column.
  std::string message = testing::error_message<DataError>([&] { parse_json("{\n  \"a\": [1,\n 2,,]}", "f.json"); });
  EXPECT_TRUE(contains(message, "f.json: not valid JSON at byte 17 (line 3, column 4): ")) << message;
  EXPECT_TRUE(contains(message, "unexpected ','")) << message;
  EXPECT_FALSE(contains(message, "json.exception")) << message;
  // A duplicate key, in a nested object too, is named.
  message = testing::error_message<DataError>([&] { parse_json(R"({"a": {"b": 1, "c": 2, "b": 3}})", "f.json"); });
  EXPECT_TRUE(contains(message, "f.json: duplicate key \"b\"")) << message;
  // The same key in sibling objects is fine.
  EXPECT_NO_THROW(parse_json(R"([{"b": 1}, {"b": 2}, {"a": {"b": 3}, "b": 4}])", "f.json"));
}

// ---- safetensors ---------------------------------------------------------------------------------------------

TEST(Safetensors, WritesWhatItReadsInF32AndBf16) {
  TempDir dir;
  const std::vector<float> a = {1.0f, -2.5f, 3.14159f, 1e-30f, 65504.0f, -0.0f};
  std::vector<SafetensorsEntry> entries(2);
  entries[0].name = "a";
  entries[0].shape = {2, 3};
  entries[1].name = "b";
  entries[1].dtype = TensorDType::kBF16;
  entries[1].shape = {6};
  write_safetensors(dir.file("x.safetensors"), entries, [&](size_t) { return a; }, {{"format", "pt"}});
  const std::string bytes = testing::read_text_file(dir.file("x.safetensors"));
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + n + 6 * 4 + 6 * 2);
  SafetensorsReader reader(dir.file("x.safetensors"));
  ASSERT_EQ(reader.entries().size(), 2u);
  EXPECT_EQ(reader.read_f32(*reader.find("a")), a);
  const std::vector<float> b = reader.read_f32(*reader.find("b"));
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(b[i], round_to_bf16(a[i])) << i;
}

TEST(Safetensors, ReadsF16) {
  TempDir dir;
  const uint16_t halves[] = {0x3c00, 0xc000, 0x3800, 0x0001, 0x7c00, 0x8000, 0x7bff};
  std::string data(reinterpret_cast<const char*>(halves), sizeof(halves));
  testing::write_text_file(dir.file("h.safetensors"),
                           safetensors_bytes(R"({"h":{"dtype":"F16","shape":[7],"data_offsets":[0,14]}})", data));
  SafetensorsReader reader(dir.file("h.safetensors"));
  const std::vector<float> v = reader.read_f32(reader.entries()[0]);
  EXPECT_EQ(v, (std::vector<float>{1.0f, -2.0f, 0.5f, 0x1p-24f, INFINITY, -0.0f, 65504.0f}));
  EXPECT_TRUE(std::signbit(v[5]));
}

// ---- export and import end to end -----------------------------------------------------------------------------

struct Case {
  const char* fixture;
  int tp;
};

// A fixture's weights imported, trained one step at tp=2 (so the checkpoint is two shards), exported from the
// run directory (its latest checkpoint), imported back: every tensor bit for bit.
TEST(HfInterop, RoundTripOfATp2CheckpointIsBitExact) {
  for (const std::string name : {"gpt2-tiny", "llama-tiny"}) {
    SCOPED_TRACE(name);
    TempDir dir;
    const std::string run = dir.file("run");
    auto r = run_command(tessera("import --input " + fixture_path(name) + " --out " + run));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const Fixture fixture = load_fixture(fixture_path(name));
    const std::string job = dir.file("job.textproto");
    testing::write_text_file(job, job_config_to_text(fixture_job_config(fixture)));
    r = run_command(str_cat(kEnvironment, TESSERA_MPIEXEC, " --oversubscribe -np 2 ", kTessera, " train --config ", job,
                            " --set parallel.tp=2 --set train.steps=1 --run-dir ", run, " --resume latest"));
    ASSERT_EQ(r.exit_code, 0) << r.output;

    r = run_command(tessera("export --checkpoint " + run + " --format hf --out " + dir.file("hf")));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(contains(r.output, "step_00000001 (step 1")) << r.output;
    EXPECT_TRUE(contains(r.output, "no tokenizer")) << r.output;
    EXPECT_TRUE(fs::exists(dir.file("hf/model.safetensors")));
    EXPECT_FALSE(fs::exists(dir.file("hf/model.safetensors.index.json")));
    EXPECT_FALSE(fs::exists(dir.file("hf/tokenizer.model")));
    r = run_command(tessera("import --hf " + dir.file("hf") + " --out " + dir.file("back")));
    ASSERT_EQ(r.exit_code, 0) << r.output;

    const auto trained = model_tensors(run + "/checkpoints/step_00000001", fixture.param_names);
    const auto back = model_tensors(dir.file("back/checkpoints/step_00000000"), fixture.param_names);
    for (const std::string& param : fixture.param_names) {
      ASSERT_EQ(trained.at(param).size(), back.at(param).size()) << param;
      EXPECT_EQ(std::memcmp(trained.at(param).data(), back.at(param).data(), trained.at(param).size() * 4), 0) << param;
      EXPECT_NE(trained.at(param), fixture.init.at(param)) << param << " did not train";
    }
    // The imported job has the shape of config.json: it resumes into the fixture's job at tp=2.
    r = run_command(str_cat(kEnvironment, TESSERA_MPIEXEC, " --oversubscribe -np 2 ", kTessera, " train --config ", job,
                            " --set parallel.tp=2 --set train.steps=1 --run-dir ", dir.file("back"),
                            " --resume latest"));
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
}

TEST(HfInterop, ShardedAndBf16ExportsReadBack) {
  TempDir dir;
  const std::string run = dir.file("run");
  ASSERT_EQ(run_command(tessera("import --input " + fixture_path("llama-tiny") + " --out " + run)).exit_code, 0);
  auto r = run_command(
      tessera("export --checkpoint " + run + " --format hf --out " + dir.file("sharded") + " --max-shard-size 100KB"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // The progress on stderr: every tensor, 4 bytes a value read.
  std::smatch tensors;
  ASSERT_TRUE(std::regex_search(r.output, tensors, std::regex(": ([0-9]+) tensors, "))) << r.output;
  EXPECT_TRUE(contains(r.output, "export: done, " + tensors[1].str() + " tensors, 632.1 kB in ")) << r.output;
  const Json index = parse_json(testing::read_text_file(dir.file("sharded/model.safetensors.index.json")), "index");
  EXPECT_EQ(index.at("metadata").at("total_size").get<int64_t>(), 158016 * 4);
  std::set<std::string> files;
  for (const Json& file : index.at("weight_map")) files.insert(file.get<std::string>());
  EXPECT_GE(files.size(), 6u);
  for (const std::string& file : files) {
    // A file over the limit holds one tensor (the 128 KiB embedding and head).
    const SafetensorsReader reader(dir.file("sharded/" + file));
    EXPECT_TRUE(fs::file_size(dir.file("sharded/" + file)) <= 100'000 + 4096 || reader.entries().size() == 1) << file;
    EXPECT_TRUE(std::regex_match(file, std::regex("model-0000[1-9]-of-0000[6-9]\\.safetensors"))) << file;
  }
  EXPECT_FALSE(fs::exists(dir.file("sharded/model.safetensors")));
  r = run_command(tessera("import --hf " + dir.file("sharded") + " --out " + dir.file("back")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, std::to_string(files.size()) + " file(s)")) << r.output;

  r = run_command(tessera("export --checkpoint " + run + "/checkpoints/step_00000000 --format hf --dtype bf16 --out " +
                          dir.file("bf16")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(parse_json(testing::read_text_file(dir.file("bf16/config.json")), "c").at("torch_dtype").get<std::string>(),
            "bfloat16");
  r = run_command(tessera("import --hf " + dir.file("bf16") + " --out " + dir.file("back16")));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  const Fixture fixture = load_fixture(fixture_path("llama-tiny"));
  const auto sharded = model_tensors(dir.file("back/checkpoints/step_00000000"), fixture.param_names);
  const auto bf16 = model_tensors(dir.file("back16/checkpoints/step_00000000"), fixture.param_names);
  for (const std::string& param : fixture.param_names) {
    EXPECT_EQ(sharded.at(param), fixture.init.at(param)) << param;
    const std::vector<float>& init = fixture.init.at(param);
    for (size_t i = 0; i < init.size(); ++i) ASSERT_EQ(bf16.at(param)[i], round_to_bf16(init[i])) << param << " " << i;
  }
}

TEST(HfInterop, ShipsTheJobsTokenizerWithItsSpecialTokens) {
  TempDir dir;
  std::string corpus;
  for (int i = 0; i < 200; ++i) {
    corpus += "the model learns to predict the next token of text number " + std::to_string(i) + "\n\n";
  }
  testing::write_text_file(dir.file("corpus.txt"), corpus);
  PrepareOptions options;
  options.inputs = {dir.file("corpus.txt")};
  options.tokenizer_out = dir.file("tok.model");
  options.vocab_size = 300;
  options.out_prefix = dir.file("data/corpus");
  options.threads = 1;
  run_prepare(options);

  const std::string run = dir.file("run");
  auto r = run_command(tessera("import --input " + fixture_path("gpt2-tiny") + " --out " + run +
                               " --set data.tokenizer=" + dir.file("tok.model")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_command(tessera("export --checkpoint " + run + " --format hf --out " + dir.file("hf")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(testing::read_text_file(dir.file("hf/tokenizer.model")), testing::read_text_file(dir.file("tok.model")));
  const Json config = parse_json(testing::read_text_file(dir.file("hf/config.json")), "config");
  EXPECT_EQ(config.at("bos_token_id").get<int64_t>(), 1);
  EXPECT_EQ(config.at("eos_token_id").get<int64_t>(), 2);
  const Json generation = parse_json(testing::read_text_file(dir.file("hf/generation_config.json")), "generation");
  EXPECT_EQ(generation.at("eos_token_id").get<int64_t>(), 2);
  const Json tokenizer = parse_json(testing::read_text_file(dir.file("hf/tokenizer_config.json")), "tokenizer");
  EXPECT_EQ(tokenizer.at("tokenizer_class").get<std::string>(), "LlamaTokenizer");
  EXPECT_EQ(tokenizer.at("bos_token").get<std::string>(), "<s>");
  EXPECT_EQ(tokenizer.at("eos_token").get<std::string>(), "</s>");
  EXPECT_EQ(tokenizer.at("unk_token").get<std::string>(), "<unk>");
  EXPECT_FALSE(tokenizer.at("add_bos_token").get<bool>());
  const Json special = parse_json(testing::read_text_file(dir.file("hf/special_tokens_map.json")), "special");
  EXPECT_EQ(special.at("eos_token").get<std::string>(), "</s>");
}

// ---- errors a user can cause ------------------------------------------------------------------------------------

class HfErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(
        run_command(tessera("import --input " + fixture_path("gpt2-tiny") + " --out " + dir_.file("run"))).exit_code,
        0);
    const auto r = run_command(tessera("export --checkpoint " + dir_.file("run") + " --format hf --out " + hf()));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  std::string hf() const { return dir_.file("hf"); }
  // `import --hf` of the directory: its exit code and output; nothing may be written.
  testing::CommandResult import(const std::string& extra = "") {
    const std::string out = dir_.file("out" + std::to_string(count_++));
    auto r = run_command(tessera("import --hf " + hf() + " --out " + out + " " + extra));
    EXPECT_FALSE(fs::exists(out)) << out << " was written";
    return r;
  }
  void replace_weights(const std::string& bytes) { testing::write_text_file(dir_.file("hf/model.safetensors"), bytes); }

  TempDir dir_;
  int count_ = 0;
};

TEST_F(HfErrors, MalformedSafetensorsHeaders) {
  const std::string data(64, '\0');
  const std::string ok = R"({"transformer.wte.weight":{"dtype":"F32","shape":[4,4],"data_offsets":[0,64]}})";
  struct Bad {
    std::string bytes, message;
  };
  const std::vector<Bad> cases = {
      {"abc", "fewer than the 8 of its header length"},
      {safetensors_bytes(ok, data, 1'000'000), "header length (1000000 bytes) is past the end of the file"},
      {safetensors_bytes(R"({"a": [1, 2,]})", data), "header: not valid JSON at byte 13 (line 1, column 13)"},
      {safetensors_bytes("[1, 2]", data), "its header is not a JSON object"},
      {safetensors_bytes(R"({"w":{"dtype":"F32","shape":[4,4],"data_offsets":[0,128]}})", data),
       "tensor \"w\": data_offsets [0, 128] are out of range: the data holds 64 bytes"},
      {safetensors_bytes(R"({"w":{"dtype":"F32","shape":[4,4],"data_offsets":[0,60]}})", data),
       "span 60 bytes, its shape and dtype need 64"},
      {safetensors_bytes(R"({"v":{"dtype":"F32","shape":[8],"data_offsets":[0,32]},)"
                         R"("w":{"dtype":"F32","shape":[8],"data_offsets":[16,48]}})",
                         data),
       "tensors \"v\" [0, 32) and \"w\" [16, 48) overlap"},
      {safetensors_bytes(R"({"w":{"dtype":"I64","shape":[8],"data_offsets":[0,64]}})", data),
       "dtype \"I64\" is not one Tessera reads (F32, BF16, F16)"},
      {safetensors_bytes(R"({"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,64]}})", data),
       "not a non-negative integer"},
  };
  for (const Bad& bad : cases) {
    SCOPED_TRACE(bad.message);
    replace_weights(bad.bytes);
    const auto r = import();
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(contains(r.output, "safetensors file '" + hf() + "/model.safetensors'")) << r.output;
    EXPECT_TRUE(contains(r.output, bad.message)) << r.output;
  }
}

TEST_F(HfErrors, MissingTensorWrongShapeAndBadIndex) {
  // A file without one tensor: every other entry kept.
  SafetensorsReader reader(hf() + "/model.safetensors");
  std::vector<SafetensorsEntry> entries;
  for (const SafetensorsEntry& e : reader.entries()) {
    if (e.name != "transformer.h.1.mlp.c_fc.weight") entries.push_back(e);
  }
  std::vector<std::vector<float>> values;
  for (const SafetensorsEntry& e : entries) values.push_back(reader.read_f32(e));
  write_safetensors(dir_.file("missing.safetensors"), entries, [&](size_t i) { return values[i]; }, {});
  fs::rename(dir_.file("missing.safetensors"), hf() + "/model.safetensors");
  auto r = import();
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "has no tensor \"transformer.h.1.mlp.c_fc.weight\" (Tessera's h.1.mlp.fc.weight)"))
      << r.output;

  // Shapes checked against the config: a wider model than the weights.
  r = import("--set model.n_embd=32");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output,
                       "tensor \"transformer.wte.weight\" has shape [512, 64], the model of the config "
                       "expects [512, 32]"))
      << r.output;

  // An index naming a file that is not there.
  testing::write_text_file(hf() + "/model.safetensors.index.json",
                           R"({"metadata": {}, "weight_map": {"transformer.wte.weight": "model-1.safetensors"}})");
  r = import();
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "model-1.safetensors")) << r.output;
  testing::write_text_file(hf() + "/model.safetensors.index.json", R"({"weight_map": {"x": "../x.safetensors"}})");
  r = import();
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "is not a file name in the directory")) << r.output;
}

TEST_F(HfErrors, ConfigJsonProblems) {
  const std::string config = testing::read_text_file(hf() + "/config.json");
  const auto with = [&](const std::string& from, const std::string& to) {
    std::string text = config;
    const size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    testing::write_text_file(hf() + "/config.json", text.replace(at, from.size(), to));
  };
  with("\"gpt2\"", "\"bert\"");
  auto r = import();
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, hf() + "/config.json: model_type \"bert\" is not one Tessera can build (it knows "
                                        "gpt2, llama)"))
      << r.output;
  with("\"n_head\": 4,", "");
  r = import();
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "config.json: \"n_head\" is missing")) << r.output;
  with("\"gelu_new\"", "\"relu\"");
  r = import();
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "activation_function \"relu\"")) << r.output;
  with("{", "{,");
  r = import();
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "config.json: not valid JSON at byte 2 (line 1, column 2)")) << r.output;
  fs::remove(hf() + "/config.json");
  r = import();
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "config.json' is missing")) << r.output;
}

TEST_F(HfErrors, OutputDirectoriesMustBeNewOrEmpty) {
  fs::create_directories(dir_.file("full"));
  testing::write_text_file(dir_.file("full/x"), "x");
  auto r = run_command(tessera("import --hf " + hf() + " --out " + dir_.file("full")));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--out '" + dir_.file("full") + "' exists and is not an empty directory")) << r.output;
  r = run_command(tessera("export --checkpoint " + dir_.file("run") + " --format hf --out " + dir_.file("full")));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "exists and is not an empty directory")) << r.output;
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_.file("full")), fs::directory_iterator()), 1);
  // An empty directory is filled; no temporary is left beside it.
  fs::create_directories(dir_.file("empty"));
  r = run_command(tessera("export --checkpoint " + dir_.file("run") + " --format hf --out " + dir_.file("empty")));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(dir_.file("empty/model.safetensors")));
  for (const auto& entry : fs::directory_iterator(dir_.path())) {
    EXPECT_FALSE(contains(entry.path().string(), ".tmp-export")) << entry.path();
  }
  r = run_command(tessera("export --checkpoint " + dir_.file("run") + " --format onnx --out " + dir_.file("o")));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--format 'onnx' is not known")) << r.output;
  r = run_command(
      tessera("export --checkpoint " + dir_.file("run") + " --format hf --max-shard-size 5XB --out " + dir_.file("o")));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--max-shard-size '5XB' is not a size")) << r.output;
  EXPECT_FALSE(fs::exists(dir_.file("o")));
}

}  // namespace
}  // namespace tessera
