// `tessera generate --checkpoint PATH (--prompt TEXT | --prompt-ids 5,17,3 | --prompts-file F) [flags]`: text from
// a trained (or imported) checkpoint, in any layout: one rank, or under mpirun with --set parallel.tp=N and/or
// parallel.pp=M (one copy of the model: parallel.dp must be 1). The model is the checkpoint's saved job config;
// prompts are tokenized with its data.tokenizer. World rank 0 prints; every rank runs the same prompts. See
// docs/generate.md.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "cluster/process_env.h"
#include "core/check.h"
#include "launcher/checkpoints/checkpoint.h"
#include "launcher/checkpoints/checkpoint_manifest.h"
#include "launcher/commands/command_line.h"
#include "launcher/commands/commands.h"
#include "launcher/common/config.h"
#include "launcher/common/json_io.h"
#include "launcher/common/regular_file.h"
#include "launcher/data/tokenizer.h"
#include "launcher/run/generator.h"
#include "launcher/run/job.h"
#include "parallel/mpi_environment.h"
#include "parallel/pipeline_decoder.h"

namespace tessera {

namespace {

int parse_int(const std::string& flag, const std::string& text, int lo) {
  size_t used = 0;
  long long value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TS_CHECK(used == text.size() && !text.empty() && value >= lo && value <= 1 << 30, ConfigError, flag,
           " takes an integer >= ", lo, ", not '", text, "'");
  return static_cast<int>(value);
}

double parse_double(const std::string& flag, const std::string& text, double lo, double hi) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TS_CHECK(used == text.size() && !text.empty() && value >= lo && value <= hi, ConfigError, flag,
           " takes a number in [", lo, ", ", hi, "], not '", text, "'");
  return value;
}

// "5,17,3" -> {5, 17, 3}.
std::vector<int32_t> parse_ids(const std::string& flag, const std::string& text) {
  std::vector<int32_t> ids;
  size_t begin = 0;
  while (begin <= text.size()) {
    const size_t end = std::min(text.find(',', begin), text.size());
    const std::string item = text.substr(begin, end - begin);
    TS_CHECK(!item.empty(), ConfigError, flag, " takes comma-separated token ids (5,17,3), not '", text, "'");
    ids.push_back(parse_int(flag, item, 0));
    begin = end + 1;
  }
  return ids;
}

std::string decode_text(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  return tokenizer.decode(std::vector<int>(ids.begin(), ids.end()));
}

// The text `ids` add after `prompt`: what decoding both together adds to the prompt's own decoding. Decoded
// alone, the first word would lose the space that SentencePiece keeps in its word-initial mark.
std::string continuation_text(const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                              const std::vector<int32_t>& ids) {
  std::vector<int32_t> both = prompt;
  both.insert(both.end(), ids.begin(), ids.end());
  const std::string whole = decode_text(tokenizer, both), start = decode_text(tokenizer, prompt);
  return whole.compare(0, start.size(), start) == 0 ? whole.substr(start.size()) : decode_text(tokenizer, ids);
}

// The command line of `tessera generate`: the numbers stay text until run_generate parses them, with messages of
// its own.
struct GenerateFlags {
  CLI::App* app = nullptr;
  std::string checkpoint, prompt, prompt_ids, prompts_file;
  std::string max_new_tokens = "64", temperature = "1", top_k = "0", top_p = "1", seed = "0";
  bool json = false, no_kv_cache = false;
  ConfigOverrides overrides;
  bool given(const char* flag) const { return app->count(flag) > 0; }
};

int run_generate(const GenerateFlags& flags, MpiEnvironment& mpi, const ProcessEnv& env) {
  const std::string& spec = flags.checkpoint;
  const int prompt_sources = flags.given("--prompt") + flags.given("--prompt-ids") + flags.given("--prompts-file");
  TS_CHECK(prompt_sources == 1, ConfigError,
           "give exactly one of --prompt TEXT, --prompt-ids 5,17,3 or --prompts-file FILE (one prompt per line)");
  GenerateOptions options;
  options.max_new_tokens = parse_int("--max-new-tokens", flags.max_new_tokens, 1);
  options.sampling.temperature = static_cast<float>(parse_double("--temperature", flags.temperature, 0, 1e6));
  options.sampling.top_k = parse_int("--top-k", flags.top_k, 0);
  options.sampling.top_p = static_cast<float>(parse_double("--top-p", flags.top_p, 0, 1));
  TS_CHECK(options.sampling.top_p > 0, ConfigError, "--top-p must be above 0 (1 keeps every token)");
  {
    const std::string seed = flags.seed;
    TS_CHECK(!seed.empty() && seed.find_first_not_of("0123456789") == std::string::npos && seed.size() <= 19,
             ConfigError, "--seed takes a non-negative integer, not '", seed, "'");
    options.sampling.seed = std::stoull(seed);
  }
  options.kv_cache = !flags.no_kv_cache;
  const bool json = flags.json;

  // The checkpoint's model in the layout --set gives (every rank reads the manifest itself).
  std::string config_source;
  std::vector<std::string> notices;
  const config::JobConfig config = config_from_checkpoint(spec, "", flags.overrides, "--checkpoint",
                                                          /*keep_layout=*/false, &config_source, &notices);
  print_notices(notices, env.world_rank == 0, stderr);  // stdout carries the generated text
  const ModelConfig model_config = model_config_from(config.model());

  // The tokenizer (every rank loads it: every rank must agree on the prompts' lengths).
  std::unique_ptr<Tokenizer> tokenizer;
  const std::string tokenizer_path = config.data().tokenizer();
  if (!tokenizer_path.empty()) {
    tokenizer = std::make_unique<Tokenizer>(tokenizer_path, "data.tokenizer of the checkpoint's job");
    options.eos_id = tokenizer->eos_id();
    // A model's vocabulary may be larger than its tokenizer's (rounded up for speed): ids the tokenizer does
    // not have cannot be written, so they are never chosen.
    options.vocab_limit = tokenizer->vocab_size();
  }

  // The prompts, as token ids.
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> prompts;
  if (flags.given("--prompt-ids")) {
    prompts.push_back(parse_ids("--prompt-ids", flags.prompt_ids));
  } else {
    if (flags.given("--prompt")) {
      texts.push_back(flags.prompt);
    } else {
      const std::string problem = regular_file_problem(flags.prompts_file);
      TS_CHECK(problem.empty(), ConfigError, "--prompts-file ", flags.prompts_file, ": ", problem,
               "; give a text file with one prompt per line");
      std::ifstream in(flags.prompts_file);
      TS_CHECK(in.good(), ConfigError, "--prompts-file ", flags.prompts_file, ": cannot be read");
      for (std::string line; std::getline(in, line);) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        texts.push_back(line);
      }
      TS_CHECK(!texts.empty(), ConfigError, "--prompts-file ", flags.prompts_file, " holds no prompt");
    }
    TS_CHECK(tokenizer != nullptr, ConfigError,
             "the checkpoint's job has no data.tokenizer, so text prompts cannot be tokenized: give token ids with "
             "--prompt-ids 5,17,3");
    for (const std::string& text : texts) {
      const std::vector<int> ids = tokenizer->encode(text);
      prompts.emplace_back(ids.begin(), ids.end());
    }
  }
  int longest = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::vector<int32_t>& prompt = prompts[i];
    const std::string which = prompts.size() > 1 ? str_cat("prompt ", i + 1) : std::string("the prompt");
    TS_CHECK(!prompt.empty(), ConfigError, which, " is empty (no tokens): give at least one token");
    for (int32_t id : prompt) {
      TS_CHECK(id < model_config.vocab_size, ConfigError, which, " has token id ", id,
               ", but the model's vocabulary is ", model_config.vocab_size, " (ids 0..", model_config.vocab_size - 1,
               ")");
    }
    TS_CHECK(static_cast<int64_t>(prompt.size()) + options.max_new_tokens <= model_config.max_seq_len, ConfigError,
             which, " has ", prompt.size(), " tokens, which with --max-new-tokens ", options.max_new_tokens,
             " exceeds the model's max_seq_len of ", model_config.max_seq_len,
             ": shorten the prompt or lower --max-new-tokens");
    longest = std::max(longest, static_cast<int>(prompt.size()));
  }

  // One sequence at a time, a cache as long as the longest prompt and its new tokens.
  Job job = build_inference_job(config, mpi, env, 1, longest + options.max_new_tokens);
  const bool log = job.is_logger();
  const CheckpointChoice choice =
      choose_checkpoint_for_inference(spec, *job.groups.world, log && !json, "--checkpoint");
  TS_CHECK(choice.manifest.has_config() &&
               choice.manifest.config().model().SerializeAsString() == config.model().SerializeAsString(),
           CheckpointError, choice.dir, " holds another model than the checkpoint its job config was read from");
  load_model_weights(choice.dir, choice.manifest, *job.model, *job.backend);
  if (log && !json) {
    std::fprintf(stderr, "tessera generate: %s (step %lld) | %s %d layers | tp=%d pp=%d | %s\n", choice.dir.c_str(),
                 static_cast<long long>(choice.manifest.step()), model_config.arch.c_str(), model_config.n_layer,
                 job.layout.tp, job.layout.pp, options.kv_cache ? "KV cache" : "full recomputation");
  }

  PipelineDecoder decoder(*job.model, *job.backend, *job.groups.tp, *job.groups.pp);
  GenerateStats total;
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int32_t> so_far;
    std::string printed;
    auto on_token = [&](int32_t id) {
      so_far.push_back(id);
      if (!log || json) return;
      if (tokenizer) {
        const std::string text = continuation_text(*tokenizer, prompts[i], so_far);
        if (text.compare(0, printed.size(), printed) == 0) {
          std::fputs(text.c_str() + printed.size(), stdout);
          printed = text;
        }
      } else {
        std::printf("%s%d", so_far.size() > 1 ? " " : "", id);
      }
      std::fflush(stdout);
    };
    if (log && !json) {
      if (tokenizer) {  // the prompt as given, or as its ids read
        std::fputs(i < texts.size() ? texts[i].c_str() : decode_text(*tokenizer, prompts[i]).c_str(), stdout);
      } else {
        std::printf("%s -> ", dump_json(Json(prompts[i])).c_str());
      }
      std::fflush(stdout);
    }
    GenerateStats stats;
    const std::vector<int32_t> ids = generate(decoder, *job.model, prompts[i], options, i, on_token, &stats);
    total.prompt_tokens += stats.prompt_tokens;
    total.new_tokens += stats.new_tokens;
    total.prefill_s += stats.prefill_s;
    total.decode_s += stats.decode_s;
    if (!log) continue;
    if (json) {
      Json line = {{"prompt_ids", prompts[i]}, {"ids", ids}};
      if (tokenizer) line["text"] = continuation_text(*tokenizer, prompts[i], ids);
      std::printf("%s\n", dump_json(line).c_str());
    } else {
      std::printf("\n");
    }
    std::fflush(stdout);
  }
  if (log && !json) {
    const double decode_tokens = static_cast<double>(total.new_tokens - static_cast<int64_t>(prompts.size()));
    std::fprintf(stderr,
                 "%lld prompt tokens prefilled in %.3f s; %lld new tokens, %.1f tokens/s after the first of each "
                 "prompt\n",
                 static_cast<long long>(total.prompt_tokens), total.prefill_s, static_cast<long long>(total.new_tokens),
                 total.decode_s > 0 ? decode_tokens / total.decode_s : 0.0);
  }
  return 0;
}

}  // namespace

Command add_generate_command(CLI::App& tessera) {
  auto flags = std::make_shared<GenerateFlags>();
  CLI::App* app = tessera.add_subcommand(
      "generate",
      "Generate text from a checkpoint with a KV cache, on one rank or under mpirun in a TP/PP layout\n"
      "(--set parallel.tp=N, parallel.pp=M)");
  flags->app = app;
  app->add_option("--checkpoint", flags->checkpoint,
                  "The model: a checkpoint directory, or a run directory for its newest complete checkpoint")
      ->type_name("PATH|RUN_DIR")
      ->required();
  app->add_option("--prompt", flags->prompt, "One prompt, tokenized with the checkpoint's data.tokenizer")
      ->type_name("TEXT");
  app->add_option("--prompt-ids", flags->prompt_ids, "One prompt as token ids")->type_name("5,17,3");
  app->add_option("--prompts-file", flags->prompts_file, "Prompts, one per line")->type_name("FILE");
  app->add_option("--max-new-tokens", flags->max_new_tokens, "Tokens to generate per prompt (at most)")
      ->type_name("N")
      ->capture_default_str();
  app->add_option("--temperature", flags->temperature, "Sampling temperature; 0 is greedy")
      ->type_name("T")
      ->capture_default_str();
  app->add_option("--top-k", flags->top_k, "Sample among the K likeliest tokens; 0 keeps all")
      ->type_name("K")
      ->capture_default_str();
  app->add_option("--top-p", flags->top_p, "Sample among the likeliest tokens holding probability P (nucleus)")
      ->type_name("P")
      ->capture_default_str();
  app->add_option("--seed", flags->seed, "Seed of the sampling (same seed, same text, in any layout)")
      ->type_name("S")
      ->capture_default_str();
  app->add_flag("--json", flags->json, "Print one JSON object per prompt instead of text");
  app->add_flag("--no-kv-cache", flags->no_kv_cache,
                "Recompute the whole sequence for every token instead of using the KV cache (the reference)");
  add_override_options(app, &flags->overrides);
  Command command;
  command.app = app;
  command.run_mpi = [flags](MpiEnvironment& mpi, const ProcessEnv& env) { return run_generate(*flags, mpi, env); };
  return command;
}

}  // namespace tessera
