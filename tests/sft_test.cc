// Supervised fine-tuning data and its masked loss: `prepare --format sft` round-trips both kinds of line with
// exact mask boundaries, every bad input names its file and line and writes nothing, templates load, the
// sampler pads, truncates and shifts the mask onto the targets in GptSampler's order, and a tiny model's
// masked-loss gradient matches finite differences with masked targets contributing exactly nothing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

#include "core/check.h"
#include "kernels/cpu/cpu_backend.h"
#include "launcher/data/chat_template.h"
#include "launcher/data/indexed_dataset.h"
#include "launcher/data/prepare.h"
#include "launcher/data/sampler.h"
#include "launcher/data/sft_sampler.h"
#include "launcher/data/tokenizer.h"
#include "models/gpt2/gpt2_model.h"
#include "parallel/local_process_group.h"
#include "tests/run_command.h"
#include "tests/temp_dir.h"

namespace tessera {
namespace {

using testing::error_message;
using testing::TempDir;
using testing::write_text_file;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

class SftPrepare : public ::testing::Test {
 protected:
  void SetUp() override {
    // A small tokenizer trained on text like the conversations'.
    std::string text;
    for (int i = 0; i < 60; ++i) {
      text +=
          "the model answers every question about data shards and pipeline stages.\n"
          "what is a tensor? a tensor holds numbers. <|user|> <|assistant|> <|system|>\n\n";
    }
    write_text_file(dir_.file("corpus.txt"), text);
    PrepareOptions options;
    options.inputs = {dir_.file("corpus.txt")};
    options.tokenizer_out = dir_.file("tok.model");
    options.vocab_size = 300;
    options.out_prefix = dir_.file("pretrain");
    options.threads = 1;
    run_prepare(options);
  }
  PrepareOptions sft_options(const std::string& input, const std::string& out) {
    PrepareOptions options;
    options.format = "sft";
    options.inputs = {input};
    options.tokenizer = dir_.file("tok.model");
    options.out_prefix = dir_.file(out);
    options.valid_fraction = 0;
    options.threads = 1;
    return options;
  }
  bool any_output(const std::string& out) const {
    for (const char* suffix : {"_train.bin", "_train.idx", "_train_mask.bin", "_train_mask.idx", "_valid.bin",
                               "_valid_mask.idx", "_train.bin.tmp", "_train_mask.bin.tmp"}) {
      if (std::filesystem::exists(dir_.file(out + suffix))) return true;
    }
    return false;
  }
  TempDir dir_;
};

TEST_F(SftPrepare, RoundTripsBothLineKindsWithExactMaskBoundaries) {
  const std::string input = dir_.file("chat.jsonl");
  write_text_file(input,
                  "{\"prompt\": \"what is a tensor?\", \"response\": \"a tensor holds numbers.\"}\n"
                  "{\"messages\": [{\"role\": \"system\", \"content\": \"the model answers.\"}, "
                  "{\"role\": \"user\", \"content\": \"what is a shard?\"}, "
                  "{\"role\": \"assistant\", \"content\": \"data shards.\"}, "
                  "{\"role\": \"user\", \"content\": \"and a stage?\"}, "
                  "{\"role\": \"assistant\", \"content\": \"pipeline stages.\"}]}\n");
  const PrepareSummary summary = run_prepare(sft_options(input, "sft"));
  EXPECT_EQ(summary.documents, 2);
  EXPECT_EQ(summary.train_documents, 2);

  // The expected pieces, each tokenized alone: (text or EOS, counted).
  const Tokenizer tokenizer(dir_.file("tok.model"), "test");
  ChatTemplate t;
  ASSERT_TRUE(builtin_chat_template("default", &t));
  using Pieces = std::vector<std::pair<std::string, bool>>;
  const std::string kEos = "<EOS>";
  const std::vector<Pieces> want_pieces = {{{t.user_prefix, false},
                                            {"what is a tensor?", false},
                                            {t.user_suffix, false},
                                            {t.assistant_prefix, false},
                                            {"a tensor holds numbers.", true},
                                            {kEos, true}},
                                           {{t.system_prefix, false},
                                            {"the model answers.", false},
                                            {t.system_suffix, false},
                                            {t.user_prefix, false},
                                            {"what is a shard?", false},
                                            {t.user_suffix, false},
                                            {t.assistant_prefix, false},
                                            {"data shards.", true},
                                            {kEos, true},
                                            {t.user_prefix, false},
                                            {"and a stage?", false},
                                            {t.user_suffix, false},
                                            {t.assistant_prefix, false},
                                            {"pipeline stages.", true},
                                            {kEos, true}}};
  const IndexedDataset tokens = IndexedDataset::open(dir_.file("sft_train"));
  const IndexedDataset mask = IndexedDataset::open(dir_.file("sft_train_mask"));
  EXPECT_EQ(mask.dtype(), IndexedDType::kUInt8);
  ASSERT_EQ(tokens.num_documents(), 2);
  ASSERT_EQ(mask.num_documents(), 2);
  int64_t counted = 0;
  for (int64_t d = 0; d < 2; ++d) {
    std::vector<int32_t> want_tokens, want_mask;
    for (const auto& [text, is_counted] : want_pieces[static_cast<size_t>(d)]) {
      const std::vector<int> ids = text == kEos ? std::vector<int>{tokenizer.eos_id()} : tokenizer.encode(text);
      want_tokens.insert(want_tokens.end(), ids.begin(), ids.end());
      want_mask.insert(want_mask.end(), ids.size(), is_counted ? 1 : 0);
    }
    EXPECT_EQ(tokens.document(d), want_tokens) << "document " << d;
    EXPECT_EQ(mask.document(d), want_mask) << "document " << d;
    counted += std::accumulate(want_mask.begin(), want_mask.end(), int64_t{0});
    // The counted tokens decode back to the responses.
    std::vector<int> response;
    for (size_t i = 0; i < want_tokens.size(); ++i) {
      if (want_mask[i] == 1 && want_tokens[i] != tokenizer.eos_id()) response.push_back(want_tokens[i]);
    }
    EXPECT_EQ(tokenizer.decode(response), d == 0 ? "a tensor holds numbers." : "data shards. pipeline stages.");
  }
  EXPECT_EQ(summary.loss_tokens, counted);
  // The validation split exists (empty here) with its mask.
  EXPECT_EQ(IndexedDataset::open(dir_.file("sft_valid_mask")).num_documents(), 0);
}

TEST_F(SftPrepare, EveryBadInputNamesTheFileAndLineAndWritesNothing) {
  const std::string good = "{\"prompt\": \"a\", \"response\": \"b\"}";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "empty line"},
      {"{\"prompt\": \"a\", \"response\": }", "at byte"},
      {"[1, 2]", "not a JSON object"},
      {"{\"prompt\": \"a\"}", "has no \"response\" field"},
      {"{\"response\": \"b\"}", "has no \"prompt\" field"},
      {"{\"prompt\": 3, \"response\": \"b\"}", "\"prompt\" must be a string"},
      {"{\"messages\": [{\"role\": \"user\"}]}", "message 0 has no \"content\" field"},
      {"{\"messages\": [{\"content\": \"x\"}]}", "message 0 has no \"role\" field"},
      {"{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}", "unknown role \"robot\""},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "no assistant turn"},
      {"{\"messages\": \"hi\"}", "\"messages\" must be an array"},
      {"{\"text\": \"hi\"}", "neither \"prompt\"/\"response\" nor \"messages\""},
  };
  for (const auto& [line, problem] : cases) {
    SCOPED_TRACE(line);
    const std::string input = dir_.file("bad.jsonl");
    write_text_file(input, good + "\n" + good + "\n" + line + "\n" + good + "\n");
    const std::string message = error_message<DataError>([&] { run_prepare(sft_options(input, "bad")); });
    EXPECT_TRUE(contains(message, input + ":3: ")) << message;
    EXPECT_TRUE(contains(message, problem)) << message;
    EXPECT_FALSE(any_output("bad"));
  }
  // Through the command: a non-zero exit and the message.
  const std::string input = dir_.file("bad.jsonl");
  write_text_file(input, good + "\n{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n");
  const auto r = testing::run_command(std::string(TESSERA_BINARY) + " prepare --format sft --input " + input +
                                      " --tokenizer " + dir_.file("tok.model") + " --out " + dir_.file("cli"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, input + ":2: the chat has no assistant turn")) << r.output;
  EXPECT_FALSE(any_output("cli"));
}

TEST_F(SftPrepare, TemplateFromAFile) {
  const std::string spec = dir_.file("template.json");
  write_text_file(spec, "{\"user_prefix\": \"Q: \", \"user_suffix\": \"\\n\", \"assistant_prefix\": \"A: \"}");
  const ChatTemplate t = load_chat_template(spec);
  EXPECT_EQ(t.user_prefix, "Q: ");
  EXPECT_EQ(t.user_suffix, "\n");
  EXPECT_EQ(t.assistant_prefix, "A: ");
  EXPECT_EQ(t.assistant_suffix, "");
  const auto pieces = render_chat({{ChatRole::kUser, "hi"}, {ChatRole::kAssistant, "yo"}}, t);
  ASSERT_EQ(pieces.size(), 6u);
  EXPECT_EQ(pieces[3].text, "A: ");
  EXPECT_FALSE(pieces[3].counted);
  EXPECT_TRUE(pieces[4].counted);
  EXPECT_TRUE(pieces[5].eos && pieces[5].counted);
  write_text_file(spec, "{\"user_prefix\": \"Q: \", \"bot_prefix\": \"A: \"}");
  EXPECT_TRUE(
      contains(error_message<DataError>([&] { load_chat_template(spec); }), "unknown template member \"bot_prefix\""));
  EXPECT_TRUE(contains(error_message<DataError>([&] { load_chat_template(dir_.file("none.json")); }), "none.json"));

  const std::string input = dir_.file("chat.jsonl");
  write_text_file(input, "{\"prompt\": \"what is a tensor?\", \"response\": \"numbers.\"}\n");
  PrepareOptions options = sft_options(input, "custom");
  options.chat_template = "chatml";
  run_prepare(options);
  const Tokenizer tokenizer(dir_.file("tok.model"), "test");
  const std::vector<int32_t> tokens = IndexedDataset::open(dir_.file("custom_train")).document(0);
  const std::vector<int32_t> mask = IndexedDataset::open(dir_.file("custom_train_mask")).document(0);
  const std::vector<int> suffix = tokenizer.encode("<|im_end|>\n");
  // The response's EOS, then the (uncounted) assistant suffix.
  ASSERT_GT(tokens.size(), suffix.size() + 1);
  EXPECT_EQ(tokens[tokens.size() - suffix.size() - 1], tokenizer.eos_id());
  EXPECT_EQ(mask[mask.size() - suffix.size() - 1], 1);
  EXPECT_EQ(mask.back(), 0);
}

// Documents of given lengths with token j of document d = 3 + (7d + j) % 40, and a mask of 1 on the second half.
void write_sft(const std::string& prefix, const std::vector<int>& lengths, std::vector<std::vector<int32_t>>* docs,
               std::vector<std::vector<int32_t>>* masks) {
  IndexedDatasetWriter tokens(prefix, IndexedDType::kUInt16), mask(loss_mask_prefix(prefix), IndexedDType::kUInt8);
  for (size_t d = 0; d < lengths.size(); ++d) {
    std::vector<int32_t> t(static_cast<size_t>(lengths[d])), m(t.size());
    for (int j = 0; j < lengths[d]; ++j) {
      t[static_cast<size_t>(j)] = 3 + static_cast<int32_t>((7 * d + static_cast<size_t>(j)) % 40);
      m[static_cast<size_t>(j)] = j >= lengths[d] / 2 ? 1 : 0;
    }
    tokens.add_document(t.data(), t.size());
    mask.add_document(m.data(), m.size());
    docs->push_back(t);
    masks->push_back(m);
  }
  tokens.finalize();
  mask.finalize();
}

TEST(SftSampler, PadsTruncatesAndShiftsTheMaskOntoTargets) {
  TempDir dir;
  std::vector<std::vector<int32_t>> docs, masks;
  const int T = 8;
  write_sft(dir.file("d"), {5, 9, 14, 1}, &docs, &masks);
  const IndexedDataset tokens = IndexedDataset::open(dir.file("d"));
  const IndexedDataset mask = IndexedDataset::open(dir.file("d_mask"));
  const int32_t pad = 2;
  SftSampler sampler(tokens, mask, T, 11, pad);
  EXPECT_EQ(sampler.samples_per_epoch(), 4);
  EXPECT_EQ(sampler.truncated_documents(), 1);  // 14 > T + 1; 9 fits exactly
  std::vector<int> seen(4, 0);
  for (int64_t g = 0; g < 12; ++g) {
    const int64_t d = sampler.document(g);
    ++seen[static_cast<size_t>(d)];
    std::vector<int32_t> inputs(T), targets(T);
    std::vector<uint8_t> m(T, 7);
    sampler.get(g, inputs.data(), targets.data());
    sampler.get_loss_mask(g, m.data());
    const auto& doc = docs[static_cast<size_t>(d)];
    for (int i = 0; i <= T; ++i) {
      const int32_t want = i < std::ssize(doc) ? doc[static_cast<size_t>(i)] : pad;
      if (i < T) {
        EXPECT_EQ(inputs[static_cast<size_t>(i)], want) << "g " << g << " input " << i;
      }
      if (i > 0) {
        EXPECT_EQ(targets[static_cast<size_t>(i - 1)], want) << "g " << g << " target " << i - 1;
        const int want_mask = i < std::ssize(doc) ? masks[static_cast<size_t>(d)][static_cast<size_t>(i)] : 0;
        EXPECT_EQ(m[static_cast<size_t>(i - 1)], want_mask) << "g " << g << " mask " << i - 1;
      }
    }
  }
  // Every epoch is a permutation of the documents, the same from every new sampler.
  EXPECT_EQ(seen, std::vector<int>(4, 3));
  SftSampler again(tokens, mask, T, 11, pad);
  for (int64_t g = 0; g < 12; ++g) EXPECT_EQ(again.document(g), sampler.document(g));
}

TEST(SftSampler, DrawsDocumentsInGptSamplersWindowOrder) {
  // Documents of exactly T + 1 tokens that share their boundary tokens make a stream whose windows are the
  // documents; GptSampler and SftSampler then read the same sequences for every sample.
  TempDir dir;
  const int T = 6, D = 9;
  IndexedDatasetWriter plain(dir.file("plain"), IndexedDType::kUInt16);
  IndexedDatasetWriter sft(dir.file("sft"), IndexedDType::kUInt16);
  IndexedDatasetWriter sft_mask(dir.file("sft_mask"), IndexedDType::kUInt8);
  std::vector<int32_t> stream(static_cast<size_t>(D * T + 1));
  for (size_t i = 0; i < stream.size(); ++i) stream[i] = static_cast<int32_t>(3 + (i * 13) % 50);
  plain.add_document(stream.data(), stream.size());
  const std::vector<int32_t> ones(static_cast<size_t>(T + 1), 1);
  for (int d = 0; d < D; ++d) {
    sft.add_document(stream.data() + d * T, static_cast<size_t>(T + 1));
    sft_mask.add_document(ones.data(), ones.size());
  }
  plain.finalize();
  sft.finalize();
  sft_mask.finalize();
  const IndexedDataset plain_data = IndexedDataset::open(dir.file("plain"));
  const IndexedDataset sft_data = IndexedDataset::open(dir.file("sft"));
  const IndexedDataset mask_data = IndexedDataset::open(dir.file("sft_mask"));
  GptSampler gpt(plain_data, T, 5);
  SftSampler chat(sft_data, mask_data, T, 5, 2);
  for (int64_t g = 0; g < 3 * D; ++g) {
    std::vector<int32_t> a(T), b(T), c(T), e(T);
    gpt.get(g, a.data(), b.data());
    chat.get(g, c.data(), e.data());
    EXPECT_EQ(a, c) << g;
    EXPECT_EQ(b, e) << g;
  }
}

TEST(SftSampler, RefusesAMaskThatDoesNotMatch) {
  TempDir dir;
  std::vector<std::vector<int32_t>> docs, masks;
  write_sft(dir.file("a"), {5, 9}, &docs, &masks);
  write_sft(dir.file("b"), {5, 8}, &docs, &masks);
  const IndexedDataset tokens = IndexedDataset::open(dir.file("a"));
  const IndexedDataset other = IndexedDataset::open(dir.file("b_mask"));
  const std::string message = error_message<DataError>([&] { SftSampler(tokens, other, 4, 1, 2); });
  EXPECT_TRUE(contains(message, "b_mask.bin: document 1 has 8 mask values for 9 tokens")) << message;
}

// The masked loss of a tiny GPT-2: mean over counted targets of the per-token losses. Its gradient through
// forward (weighted cross-entropy) + backward matches central differences of that loss, and a masked target
// leaves every gradient bit unchanged when it is replaced.
TEST(SftLoss, MaskedGradientMatchesFiniteDifferencesAndIgnoresMaskedTargets) {
  ModelConfig config;
  config.vocab_size = 13;
  config.n_layer = 1;
  config.n_head = 2;
  config.n_embd = 8;
  config.max_seq_len = 6;
  const int B = 2, T = 6, N = B * T;
  CpuBackend backend(1);
  LocalProcessGroup tp("tp");
  Gpt2Model model(config, backend, tp, StageRange{0, 1, true, true}, B, T, 1);
  model.init_parameters(5);
  std::vector<int32_t> tokens(N), targets(N);
  std::vector<float> weights(N);
  int counted = 0;
  for (int i = 0; i < N; ++i) {
    tokens[static_cast<size_t>(i)] = (i * 5 + 1) % config.vocab_size;
    targets[static_cast<size_t>(i)] = (i * 7 + 4) % config.vocab_size;
    weights[static_cast<size_t>(i)] = (i % T) >= 2 && i % 5 != 0 ? 1.0f : 0.0f;
    counted += static_cast<int>(weights[static_cast<size_t>(i)]);
  }
  ASSERT_GT(counted, 0);
  ASSERT_LT(counted, N);
  model.set_loss_weighting(true);
  auto load = [&](const std::vector<int32_t>& t) {
    backend.copy_from_host(model.tokens(0), tokens.data());
    backend.copy_from_host(model.targets(0), t.data());
    backend.copy_from_host(model.loss_weights(0), weights.data());
  };
  auto masked_loss = [&]() {
    load(targets);
    model.forward(0, 0, false, 0.0f);
    std::vector<float> losses(N);
    backend.copy_to_host(losses.data(), model.losses(0));
    double sum = 0;
    for (int i = 0; i < N; ++i) sum += weights[static_cast<size_t>(i)] * losses[static_cast<size_t>(i)];
    return sum / counted;
  };
  auto gradients = [&](const std::vector<int32_t>& t) {
    load(t);
    model.zero_grads();
    model.forward(0, 0, true, 1.0f / static_cast<float>(counted));
    model.backward(0, 0, Tensor());
    std::vector<float> g(static_cast<size_t>(model.flat_grads().numel()));
    backend.copy_to_host(g.data(), model.flat_grads());
    return g;
  };
  const std::vector<float> grad = gradients(targets);

  // Masked targets do not matter: change every one of them.
  std::vector<int32_t> other = targets;
  for (int i = 0; i < N; ++i) {
    if (weights[static_cast<size_t>(i)] == 0.0f)
      other[static_cast<size_t>(i)] = (other[static_cast<size_t>(i)] + 3) % 13;
  }
  EXPECT_EQ(gradients(other), grad);

  // Central differences (in double around f32 forwards) on the largest gradient entries of the flat buffer.
  std::vector<float> params(static_cast<size_t>(model.flat_params().numel()));
  backend.copy_to_host(params.data(), model.flat_params());
  std::vector<size_t> order(grad.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::partial_sort(order.begin(), order.begin() + 12, order.end(),
                    [&](size_t a, size_t b) { return std::fabs(grad[a]) > std::fabs(grad[b]); });
  const float h = 1e-2f;
  for (int k = 0; k < 12; ++k) {
    const size_t i = order[static_cast<size_t>(k)];
    std::vector<float> shifted = params;
    shifted[i] = params[i] + h;
    backend.copy_from_host(model.flat_params(), shifted.data());
    const double up = masked_loss();
    shifted[i] = params[i] - h;
    backend.copy_from_host(model.flat_params(), shifted.data());
    const double down = masked_loss();
    const double numeric = (up - down) / (2.0 * h);
    EXPECT_NEAR(grad[i], numeric, 2e-2 * std::fabs(numeric) + 1e-4) << "flat parameter " << i;
  }
  backend.copy_from_host(model.flat_params(), params.data());
}

}  // namespace
}  // namespace tessera
