// Job configuration: reading a JobConfig (proto/config.proto) from protobuf text format, applying the command
// line's `--unset path.to.field` and `--set path.to.field=value` overrides (which win over the file), checking it,
// and resolving the parallel layout for a world size.
//
// Every function here reports user mistakes as ConfigError with a message that names the field, says what is
// wrong and what to change. None of them reads the environment or talks to other ranks; all are thread-safe
// (they touch no global state).
#pragma once

#include <string>
#include <vector>

#include "core/model_config.h"
#include "proto/config.pb.h"

namespace tessera {

// The changes to a job config that a command line asks for, applied by apply_overrides: every --unset first,
// then every --set, each in the order given.
struct ConfigOverrides {
  std::vector<std::string> set;    // "path.to.field=value" (apply_override)
  std::vector<std::string> unset;  // "path.to.field" (clear_field)
};

// Reads the text-format file at path, applies overrides (as apply_overrides, whose notices go to *notices when
// notices is not null), then runs validate_job_config. Throws ConfigError when the file cannot be read ("cannot
// read config 'X': No such file or directory"), does not parse, an override is malformed, or the result is invalid.
config::JobConfig load_job_config(const std::string& path, const ConfigOverrides& overrides,
                                  std::vector<std::string>* notices);
// The same with --set assignments only, their notices dropped.
config::JobConfig load_job_config(const std::string& path, const std::vector<std::string>& overrides);

// Parses text format. source_name labels error positions, e.g.
// "job.textproto:12:5: unknown field 'n_embed' in tessera.config.ModelConfig". Does not validate.
// Throws ConfigError on syntax errors, unknown fields, values of the wrong type and repeated singular fields.
config::JobConfig parse_job_config(const std::string& text, const std::string& source_name);

// Applies one "path.to.field=value" assignment, e.g. "parallel.tp=2", "optimizer.lr=3e-4", "data.mock=true",
// "model.dtype=BF16" (enum names are case-insensitive), "data.train_prefix=data/x". The value is parsed by
// the type of the field: integers must be whole and in range, floating-point values finite, booleans
// true/false/1/0. A repeated field of messages (data.train_blend) takes one element, appended to the list, in
// text format with or without its braces: "data.train_blend={prefix: \"data/web\" weight: 0.7}".
// Intermediate messages are created as needed. Does not validate.
// Throws ConfigError naming the path and what is allowed (the fields of a message, the expected type, the
// names of an enum).
void apply_override(config::JobConfig& job, const std::string& assignment);

// Clears the field at "path.to.field" (a value, a block of settings or a repeated field), as if the file had
// never set it: its default applies again. Clearing a field inside a block that is not set does nothing.
// Throws ConfigError naming the path when it names no field.
void clear_field(config::JobConfig& job, const std::string& path);

// Applies a command line's overrides to job (read from a file or a checkpoint) so that the command line wins:
//  - each --unset clears its field (clear_field), then each --set is applied in order (apply_override);
//  - the first --set of a repeated field replaces the list the job had; every further one appends to it;
//  - when the --set overrides choose the training data (data.mock=true, data.train_prefix or data.train_blend),
//    the job's other choices among those are dropped, and a notice for the user says which and why
//    ("--set data.mock=true overrides the config's data.train_prefix 'data/x', which is ignored: ...").
//    The overrides choosing two of them at once, or a file that sets two, stays an error of validate_job_config.
// Returns the notices, one line each. Does not validate. Throws ConfigError as apply_override and clear_field.
std::vector<std::string> apply_overrides(config::JobConfig& job, const ConfigOverrides& overrides);

// Every check that does not depend on the world size: required fields, ranges, and relations between fields
// (e.g. "model.n_embd (100) must be divisible by model.n_head (3)"). Reports all problems at once, one per
// line, in a single ConfigError.
void validate_job_config(const config::JobConfig& job);

// logging.trace_steps: "A:B" with 1 <= A <= B (decimal integers) gives first = A, last = B and true; anything else
// false. Pure.
bool parse_step_range(const std::string& text, int* first, int* last);

// How a job's ranks are arranged. world size = tp * pp * dp.
struct Layout {
  int tp = 1;
  int pp = 1;
  int dp = 1;
  // Micro-batches per data-parallel rank per optimizer step.
  int micro_batches = 1;
  // Sequences per micro-batch: train.global_batch / (dp * micro_batches).
  int micro_batch_size = 1;
};

// Resolves the layout of job on world_size ranks: dp defaults to world_size / (tp * pp). Validates job first
// (as validate_job_config), then checks that tp * pp * dp == world_size, model.n_head % tp == 0 and the
// architecture's own shape rules (models/registry.h), model.n_layer >= pp and train.global_batch % (dp * micro_batches)
// == 0. Throws ConfigError saying why and what to change, e.g. "parallel.tp=2 * parallel.pp=2 * parallel.dp=1 = 4
// ranks, but the job runs on 8 ranks (mpirun -np): set parallel.dp=2 or leave it unset".
// parallel.layout=auto must have been replaced first (launcher/run/auto_layout.h): ConfigError otherwise.
Layout resolve_layout(const config::JobConfig& job, int world_size);

// The config in text format with every field that has a default written out explicitly, so the run directory
// records exactly what ran even if defaults change later. Fields without a default that were left unset
// (e.g. parallel.dp, optimizer.decay_steps, data.valid_prefix) stay absent, because unset has a meaning of
// its own there. parse_job_config of the result gives back an equivalent config.
std::string job_config_to_text(const config::JobConfig& job);

// The model's shape as the model code takes it: the architecture's name, its defaults filled in
// (n_kv_head = n_head, ffn_hidden, tie_embeddings). Does not validate.
ModelConfig model_config_from(const config::ModelConfig& model);
// model_config_from(job.model()) with how the job trains it: train.recompute, train.recompute_every and
// parallel.sequence_parallel (on only with parallel.tp > 1, which resolve_layout requires).
ModelConfig training_model_config(const config::JobConfig& job);

}  // namespace tessera
