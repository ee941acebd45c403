// The `tessera` command line: dispatches to the subcommands and is the only place that catches errors.
//
// Exit codes (launcher/commands/exit_codes.h): 0 success; 1 a failed run (verify FAIL, a data, checkpoint or
// communication error); 2 a usage or config error; 3 a training run stopped by a signal after saving. A ConfigError is
// detected identically on every rank before any communication, so every rank exits by itself; any other error on one
// rank aborts the whole job (its peers would otherwise wait in a collective until their timeout).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "cluster/process_env.h"
#include "core/check.h"
#include "launcher/commands/commands.h"
#include "launcher/commands/exit_codes.h"
#include "parallel/mpi_environment.h"

namespace {

constexpr const char* kUsage =
    "usage: tessera <command> [flags]\n"
    "\n"
    "commands:\n"
    "  prepare  --input FILE... --out PREFIX (--tokenizer-out PATH.model --vocab-size N | --tokenizer PATH.model)\n"
    "           train a SentencePiece BPE tokenizer and write Megatron-format token shards\n"
    "  train    --config FILE.textproto [--set field=value]... [--run-dir DIR] [--resume latest|auto|PATH]\n"
    "           [--init-from PATH] [--trace-steps A:B]\n"
    "           train a GPT or Llama (run under mpirun for several ranks); --resume continues from a\n"
    "           checkpoint in any layout (latest, or its alias auto: the run directory's newest checkpoint,\n"
    "           step 0 if it has none); a run directory that holds a run is refused without --resume;\n"
    "           --init-from starts a new run from a checkpoint's weights; --trace-steps writes a\n"
    "           Chrome/Perfetto trace of steps A to B to RUN_DIR/trace/trace.json\n"
    "  eval     --checkpoint PATH|RUN_DIR [--data PREFIX [--max-tokens N]] [--task FILE.jsonl\n"
    "           [--per-example FILE]] [--json] [--set field=value]...\n"
    "           mean loss and perplexity of a checkpoint over a dataset, accuracy on a multiple-choice\n"
    "           task, in any layout\n"
    "  inspect  PATH [--slices]\n"
    "           show a checkpoint (step, layout, files, tensors) and check that it is complete and intact\n"
    "  import   (--input FILE.h5 | --hf DIR) --out RUN_DIR [--config FILE.textproto] [--set field=value]...\n"
    "           turn full tensors made elsewhere (an HDF5 file, or a Hugging Face directory with\n"
    "           config.json and safetensors) into a step-0 checkpoint to train from\n"
    "  export   --checkpoint PATH|RUN_DIR --format hf --out DIR [--dtype f32|bf16] [--max-shard-size 5GB]\n"
    "           write a checkpoint's weights as a Hugging Face transformers directory (from_pretrained)\n"
    "  verify   --fixture FILE.h5 [--set field=value]...\n"
    "           reproduce a PyTorch reference run and compare losses, gradient norms and weights\n"
    "  generate --checkpoint PATH|RUN_DIR (--prompt TEXT | --prompt-ids 5,17,3 | --prompts-file F)\n"
    "           [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--json] [--set k=v]...\n"
    "           generate text with a KV cache, on one rank or under mpirun in a TP/PP layout\n"
    "  plot     RUN_DIR [--out FILE.svg]\n"
    "           draw a run's loss, validation loss, learning rate and tokens/s over steps as an SVG\n"
    "           (RUN_DIR/plot.svg; train writes it at the end of every run too)\n"
    "  bench    [--shape tiny|llama-tiny|gpt2-124m|llama-1b] [--steps N] [--no-dp-overlap] [--set field=value]...\n"
    "           measure training throughput on generated data\n"
    "  plan     --config FILE.textproto --gpus N [--gpu H100-SXM|A100-80GB|H200|cpu] [--nodes-of 8] [--top K]\n"
    "           [--calibrate RUN_DIR]... [--json] [--set field=value]...\n"
    "           predict memory per device and step time of every legal layout, print the best ones\n"
    "\n"
    "Run `tessera <command> --help` for a command's flags.\n"
    "\n"
    "exit codes:\n"
    "  0  finished\n"
    "  1  a runtime error (data, checkpoint, communication; verify FAIL; train: diverged)\n"
    "  2  a usage or config error, found before any work started\n"
    "  3  train stopped by SIGTERM/SIGINT/SIGUSR1 after saving a checkpoint: requeue it with --resume auto\n";

int report(const char* command, const std::string& where, const char* kind, const char* what) {
  std::fprintf(stderr, "tessera %s: %s%s%s: %s\n", command, kind, where.empty() ? "" : " on ", where.c_str(), what);
  std::fflush(stderr);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tessera;
  // CUDA loads kernels lazily by default: a kernel first launched while NCCL kernels are in flight would load
  // its module then, which can deadlock with them. Load every module when the context is made, unless the
  // user chose otherwise. (Read by the CUDA runtime when it starts; harmless without a GPU.)
  setenv("CUDA_MODULE_LOADING", "EAGER", /*overwrite=*/0);
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? kExitConfigError : kExitSuccess;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);

  if (command == "prepare" || command == "inspect" || command == "import" || command == "export" ||
      command == "plot" || command == "plan") {
    try {
      if (command == "plan") return plan_command(args);
      if (command == "inspect") return inspect_command(args);
      if (command == "import") return import_command(args);
      if (command == "export") return export_command(args);
      if (command == "plot") return plot_command(args);
      return prepare_command(args);
    } catch (const ConfigError& e) {
      report(command.c_str(), "", "error", e.what());
      return kExitConfigError;
    } catch (const std::exception& e) {
      report(command.c_str(), "", "error", e.what());
      return kExitFailure;
    }
  }
  if (command != "train" && command != "verify" && command != "bench" && command != "eval" && command != "generate") {
    std::fprintf(stderr, "tessera: unknown command '%s'\n\n%s", command.c_str(), kUsage);
    return kExitConfigError;
  }

  ProcessEnv env = read_process_env();
  // Before MPI_Init: Open MPI started by srun without PMIx fails there with a message about how it was built.
  if (const std::string problem = launcher_problem(env); !problem.empty()) {
    if (env.world_rank == 0) report(command.c_str(), "", "config error", problem.c_str());
    return kExitConfigError;
  }
  MpiEnvironment mpi(&argc, &argv);
  if (const std::string problem = world_size_problem(env, mpi.world_size()); !problem.empty()) {
    if (mpi.world_rank() == 0) report(command.c_str(), "", "config error", problem.c_str());
    return kExitConfigError;
  }
  env.world_rank = mpi.world_rank();
  env.world_size = mpi.world_size();
  set_process_label(env.label());
  const bool lead = env.world_rank == 0;
  try {
    if (command == "train") return train_command(args, mpi, env);
    if (command == "verify") return verify_command(args, mpi, env);
    if (command == "eval") return eval_command(args, mpi, env);
    if (command == "generate") return generate_command(args, mpi, env);
    return bench_command(args, mpi, env);
  } catch (const ConfigError& e) {
    if (lead) report(command.c_str(), "", "config error", e.what());
    return kExitConfigError;
  } catch (const Error& e) {
    report(command.c_str(), env.label(), "error", e.what());
    if (env.world_size > 1) mpi.abort(kExitFailure);
    return kExitFailure;
  } catch (const std::bad_alloc&) {
    report(command.c_str(), env.label(), "error",
           "out of memory: reduce train.global_batch (or raise parallel.micro_batches), train.seq_len or the model");
    if (env.world_size > 1) mpi.abort(kExitFailure);
    return kExitFailure;
  } catch (const std::exception& e) {
    report(command.c_str(), env.label(), "unexpected error", e.what());
    if (env.world_size > 1) mpi.abort(kExitFailure);
    return kExitFailure;
  }
}
