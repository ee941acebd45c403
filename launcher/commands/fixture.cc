// Loading tessera-fixture-v1 files.
#include "launcher/commands/fixture.h"

#include "core/check.h"
#include "launcher/common/hdf5_file.h"

namespace tessera {

Fixture load_fixture(const std::string& path) {
  H5Reader file(path);
  Fixture f;
  f.path = path;
  TS_CHECK(file.has_attribute("format") && file.attribute_string("format") == "tessera-fixture-v1", DataError, path,
           ": not a tessera-fixture-v1 file (root attribute 'format' missing or different)");
  f.arch = file.attribute_string("arch");
  TS_CHECK(f.arch == "gpt2" || f.arch == "llama", DataError, path, ": arch '", f.arch,
           "' is not supported; this build trains gpt2 and llama models");
  auto int_attr = [&](const char* name) { return static_cast<int>(file.attribute_int(name)); };
  f.vocab_size = int_attr("vocab_size");
  f.n_layer = int_attr("n_layer");
  f.n_head = int_attr("n_head");
  f.n_embd = int_attr("n_embd");
  f.seq_len = int_attr("seq_len");
  f.batch_size = int_attr("batch_size");
  f.steps = int_attr("steps");
  f.lr = file.attribute_double("lr");
  f.beta1 = file.attribute_double("beta1");
  f.beta2 = file.attribute_double("beta2");
  f.eps = file.attribute_double("eps");
  f.weight_decay = file.attribute_double("weight_decay");
  f.grad_clip = file.attribute_double("grad_clip");
  f.norm_eps = file.attribute_double("norm_eps");
  f.tied_embeddings = file.attribute_int("tied_embeddings") == 1;
  TS_CHECK(f.arch != "gpt2" || f.tied_embeddings, DataError, path, ": gpt2 fixtures must tie the embedding");
  if (f.arch == "llama") {
    f.n_kv_head = int_attr("n_kv_head");
    f.ffn_hidden = int_attr("ffn_hidden");
    f.rope_theta = file.attribute_double("rope_theta");
  }
  f.param_names = file.attribute_strings("param_names");

  std::vector<int64_t> shape;
  f.inputs = file.read_i32("data/inputs", &shape);
  const std::vector<int64_t> batch_shape = {f.steps, f.batch_size, f.seq_len};
  TS_CHECK(shape == batch_shape, DataError, path, ": data/inputs has the wrong shape");
  f.targets = file.read_i32("data/targets", &shape);
  TS_CHECK(shape == batch_shape, DataError, path, ": data/targets has the wrong shape");
  f.expected_loss = file.read_f64("expected/loss");
  f.expected_grad_norm = file.read_f64("expected/grad_norm");
  TS_CHECK(
      static_cast<int>(f.expected_loss.size()) == f.steps && static_cast<int>(f.expected_grad_norm.size()) == f.steps,
      DataError, path, ": expected/loss and expected/grad_norm must have one value per step");
  for (const std::string& name : f.param_names) {
    f.init[name] = file.read_f32("init/" + name, &shape);
    f.shapes[name] = shape;
    f.final_weights[name] = file.read_f32("final/" + name);
  }
  return f;
}

config::JobConfig fixture_job_config(const Fixture& f) {
  config::JobConfig job;
  job.set_name("verify");
  auto* model = job.mutable_model();
  model->set_arch(f.arch == "llama" ? config::LLAMA : config::GPT2);
  if (f.arch == "llama") {
    model->set_n_kv_head(f.n_kv_head);
    model->set_ffn_hidden(f.ffn_hidden);
    model->set_rope_theta(static_cast<float>(f.rope_theta));
    model->set_tie_embeddings(f.tied_embeddings);
  }
  model->set_vocab_size(f.vocab_size);
  model->set_n_layer(f.n_layer);
  model->set_n_head(f.n_head);
  model->set_n_embd(f.n_embd);
  model->set_max_seq_len(f.seq_len);
  model->set_norm_eps(static_cast<float>(f.norm_eps));
  auto* train = job.mutable_train();
  train->set_steps(f.steps);
  train->set_global_batch(f.batch_size);
  train->set_seq_len(f.seq_len);
  train->set_grad_clip(f.grad_clip);
  auto* opt = job.mutable_optimizer();
  opt->set_lr(f.lr);
  opt->set_min_lr(f.lr);
  opt->set_beta1(f.beta1);
  opt->set_beta2(f.beta2);
  opt->set_eps(f.eps);
  opt->set_weight_decay(f.weight_decay);
  opt->set_warmup_steps(0);
  opt->set_schedule(config::CONSTANT);
  // The batches come from the fixture; mock keeps validation from asking for a dataset.
  job.mutable_data()->set_mock(true);
  return job;
}

}  // namespace tessera
