#!/bin/sh
# The fixture's initial weights imported into a checkpoint, exported as a Hugging Face directory, and their
# step-0 loss computed by tests/hf_reference.py (Hugging Face's forward pass in numpy, no Tessera code).
# usage: hf_reference_test.sh TESSERA PYTHON3 FIXTURE.h5 f32|bf16 RTOL
set -eu
tessera=$1 python=$2 fixture=$3 dtype=$4 rtol=$5
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$tessera" import --input "$fixture" --out "$work/run" >/dev/null
"$tessera" export --checkpoint "$work/run" --format hf --dtype "$dtype" --out "$work/hf" >/dev/null
"$python" "$(dirname "$0")/hf_reference.py" --hf "$work/hf" --fixture "$fixture" --rtol "$rtol"
