#!/usr/bin/env bash
# Fuzz every reader of outside bytes (NIfTI and gzip, tables, scan lists, index and split files,
# safetensors, .vol, config.json, vocabularies, run settings, run checkpoints) for a long budget:
#   bash scripts/fuzz.sh [SECONDS]        (default 1800, shared by the readers)
#   ADFIT_FUZZ_ONLY=nifti-gz,table bash scripts/fuzz.sh 600
# Executions per second and in total are printed per reader. Inputs that crash are saved under
# target/fuzz/crashes/; copy each into tests/fixtures/fuzz/<reader>/ once fixed, where
# `fuzz_regressions` replays it in every test run. scripts/test.sh runs the same harness for 20 s.
set -euo pipefail
cd "$(dirname "$0")/.."
ADFIT_MINILM_DIR="$(bash scripts/fetch_minilm.sh)"
export ADFIT_MINILM_DIR
ADFIT_FUZZ_SECS="${1:-1800}" RUST_TEST_NOCAPTURE=1 \
  cargo test --locked --features wgpu --test fuzz fuzz_readers -- --exact
