#!/usr/bin/env bash
# The main job: installs what is missing, builds, tokenizes a real English corpus (Debian's fortunes),
# trains the tiny GPT of configs/tiny.textproto for a few minutes on CPU over four MPI ranks (two pipeline
# stages x two data-parallel replicas) with a checkpoint every 100 steps, resumes the last checkpoint in
# another layout (two tensor-parallel ranks x two data-parallel replicas) for 50 more steps, generates text from
# the result, evaluates it (validation loss, and a multiple-choice task made from held-out fortunes), exports it
# as a Hugging Face directory, and prints a summary. Everything it writes goes to data/, runs/tiny/ and
# runs/tiny-hf/. Extra arguments go to both `tessera train` runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --with-corpus
TESSERA_BUILD_TARGETS=tessera bash scripts/build.sh

corpus_dir=/usr/share/games/fortunes
mapfile -t corpus < <(find "$corpus_dir" -maxdepth 1 -type f ! -name '*.*' | sort)
if ((${#corpus[@]} == 0)); then
  echo "error: no fortune files in $corpus_dir (install the 'fortunes' package)" >&2
  exit 1
fi
mkdir -p data
if [[ ! -f data/fortunes_train.idx || ! -f data/fortunes.model || ! -f data/fortunes_task.jsonl ]]; then
  build/tessera prepare --input "${corpus[@]}" --doc-separator % --tokenizer-out data/fortunes.model \
    --vocab-size 2048 --out data/fortunes --mc-task-out data/fortunes_task.jsonl
fi

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=PASSIVE
rm -rf runs/tiny
mpirun --oversubscribe -np 4 build/tessera train --config configs/tiny.textproto \
  --set parallel.pp=2 --set parallel.dp=2 --set parallel.micro_batches=2 "$@"

echo
echo "== resuming the last checkpoint in another layout (tp=2 x dp=2) for 50 more steps"
mpirun --oversubscribe -np 4 build/tessera train --config configs/tiny.textproto --resume latest \
  --set train.steps=450 --set parallel.tp=2 --set parallel.dp=2 "$@"
echo
inspect_out=$(build/tessera inspect runs/tiny)
sed -n '1,6p' <<<"$inspect_out"
tail -n 1 <<<"$inspect_out"

echo
echo "== generating from the trained model (sampled, seed 1)"
build/tessera generate --checkpoint runs/tiny --prompt "A friend is" --max-new-tokens 40 --temperature 0.8 \
  --top-k 40 --seed 1 2>/dev/null
build/tessera generate --checkpoint runs/tiny --prompt "Never" --max-new-tokens 40 --temperature 0.8 \
  --top-k 40 --seed 2 2>/dev/null
echo
echo "== evaluating: validation loss, and 200 held-out fortunes with their true ending among four"
build/tessera eval --checkpoint runs/tiny --data data/fortunes_valid --task data/fortunes_task.jsonl | grep '^eval'
echo
echo "== exporting to a Hugging Face directory"
rm -rf runs/tiny-hf
build/tessera export --checkpoint runs/tiny --format hf --out runs/tiny-hf | tail -n 1

cat <<SUMMARY

Summary: tokenized ${#corpus[@]} fortune files into data/fortunes_{train,valid}.{bin,idx} with the BPE
tokenizer data/fortunes.model; trained configs/tiny.textproto for 400 steps on 4 MPI ranks (pp=2 x dp=2),
saving sharded checkpoints every 100 steps; then resumed step 400 on 4 ranks in another layout (tp=2 x dp=2)
and trained to step 450; generated from it, evaluated it and exported it. runs/tiny/ holds config.textproto,
metrics.jsonl (all 450 steps) and checkpoints/ (h5py reads runs/tiny/checkpoints/step_00000450/model.h5);
runs/tiny-hf/ is the same model for Hugging Face transformers (GPT2LMHeadModel.from_pretrained). Prove the
numbers against PyTorch with
  build/tessera verify --fixture tests/data/gpt2-tiny.h5
SUMMARY
