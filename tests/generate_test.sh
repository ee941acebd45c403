#!/usr/bin/env bash
# `tessera generate` on imported fixture checkpoints (GPT-2 and Llama): greedy generation with the KV cache must
# equal greedy generation by full recomputation (--no-kv-cache: the whole sequence through the full forward at
# every step), token for token, on one rank and in the layouts tp=2, pp=2 and tp=2 x pp=2; greedy is
# deterministic; a seeded sampling run is reproducible and the same in every layout; the errors a user can cause
# exit non-zero with a message. Prints PASS at the end.
# Usage: generate_test.sh TESSERA_BINARY TEST_DATA_DIR
set -u
tessera=$1
data=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
# The ids of each JSON line of a run's stdout.
ids() { grep '^{' | sed 's/.*"ids":\(\[[^]]*\]\).*/\1/'; }
run() {  # run RANKS ARGS...
  local ranks=$1
  shift
  if [ "$ranks" = 1 ]; then
    "$tessera" generate "$@"
  else
    mpirun --oversubscribe -np "$ranks" "$tessera" generate "$@"
  fi
}
expect_error() {  # expect_error RANKS PATTERN ARGS...
  local ranks=$1 pattern=$2
  shift 2
  local out
  out=$(run "$ranks" "$@" 2>&1)
  local status=$?
  if [ $status -eq 0 ]; then fail "generate $* succeeded; expected an error matching '$pattern'"; fi
  if ! grep -q -- "$pattern" <<<"$out"; then fail "generate $*: no '$pattern' in: $out"; fi
}

for fixture in gpt2-tiny llama-tiny; do
  "$tessera" import --input "$data/$fixture.h5" --out "$work/$fixture" > /dev/null || fail "import $fixture"
  ckpt=$work/$fixture
  greedy=(--checkpoint "$ckpt" --prompt-ids 5,17,3,9,1 --max-new-tokens 12 --temperature 0 --json --set train.threads=1)
  sampling=(--checkpoint "$ckpt" --prompt-ids 7,2,11 --max-new-tokens 12 --temperature 0.9 --top-k 40 --top-p 0.95
            --json --set train.threads=1)
  sample=("${sampling[@]}" --seed 17)
  reference=$(run 1 "${greedy[@]}" --no-kv-cache | ids)
  [ -n "$reference" ] || fail "$fixture: no output from the full recomputation"
  echo "$fixture greedy (full recomputation): $reference"
  for layout in "1" "2 --set parallel.tp=2" "2 --set parallel.pp=2" "4 --set parallel.tp=2 --set parallel.pp=2"; do
    read -r ranks settings <<<"$layout"
    # shellcheck disable=SC2086
    got=$(run "$ranks" "${greedy[@]}" $settings | ids)
    [ "$got" = "$reference" ] || fail "$fixture greedy with the KV cache on $ranks rank(s) $settings: $got, want $reference"
  done
  # The full recomputation itself in a pipeline layout.
  got=$(run 2 "${greedy[@]}" --no-kv-cache --set parallel.pp=2 | ids)
  [ "$got" = "$reference" ] || fail "$fixture full recomputation at pp=2: $got, want $reference"
  again=$(run 1 "${greedy[@]}" | ids)
  [ "$again" = "$reference" ] || fail "$fixture: greedy differs between two runs"
  sampled=$(run 1 "${sample[@]}" | ids)
  echo "$fixture sampled: $sampled"
  [ "$sampled" != "$reference" ] || fail "$fixture: sampling gave the greedy tokens"
  [ "$(run 1 "${sample[@]}" | ids)" = "$sampled" ] || fail "$fixture: a seeded sampling run is not reproducible"
  [ "$(run 2 "${sample[@]}" --set parallel.tp=2 | ids)" = "$sampled" ] || fail "$fixture: sampling differs at tp=2"
  [ "$(run 2 "${sample[@]}" --set parallel.pp=2 | ids)" = "$sampled" ] || fail "$fixture: sampling differs at pp=2"
  other_seed=("${sampling[@]}" --seed 18)
  other=$(run 1 "${other_seed[@]}" | ids)
  [ -n "$other" ] && [ "$other" != "$sampled" ] || fail "$fixture: another seed gave '$other'"
done

ckpt=$work/gpt2-tiny
expect_error 1 "max_seq_len" --checkpoint "$ckpt" --prompt-ids 5,17 --max-new-tokens 100000
expect_error 1 "no data.tokenizer" --checkpoint "$ckpt" --prompt "hello"
expect_error 1 "comma-separated token ids" --checkpoint "$ckpt" --prompt-ids ""
expect_error 1 "vocabulary is" --checkpoint "$ckpt" --prompt-ids 5,1000000
expect_error 1 "exactly one of" --checkpoint "$ckpt"
expect_error 1 "no such directory" --checkpoint "$work/nothing-here" --prompt-ids 5 --max-new-tokens 4
expect_error 2 "one copy of the model" --checkpoint "$ckpt" --prompt-ids 5 --max-new-tokens 4
expect_error 3 "must be divisible by parallel.tp" --checkpoint "$ckpt" --prompt-ids 5 --max-new-tokens 4 --set parallel.tp=3

if [ $failures -eq 0 ]; then echo "PASS"; else echo "$failures failure(s)"; exit 1; fi
