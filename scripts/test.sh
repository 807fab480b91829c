#!/usr/bin/env bash
# The whole test suite: what `.ci/run` and the README run.
#   1. unit, reference-parity and end-to-end CLI tests on the CPU backend (flex);
#   2. the GPU backends must still compile (`cargo check`; no GPU needed).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked "$@"
cargo check --locked --features cuda --lib --bins
cargo check --locked --features wgpu --lib --bins
