#!/usr/bin/env bash
# Training-step throughput, both sides in one run: adfit (benches/step.rs, release, Flex CPU) and
# PyTorch (scripts/bench_step.py) on the same shapes — adfit's own backbone (phantom: 64³, batch 8)
# and M3D-CLIP (m3d: 128³, ViT-B + bert-base, batch 2). Prints scans/s and the ratio.
# Run it on an otherwise idle machine: both sides use every core. The m3d shape takes minutes on CPU.
#
#   bash scripts/bench_step.sh
#   SHAPES=phantom REPEAT=5 bash scripts/bench_step.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-$HOME/.venvs/adfit-ref}"
REPEAT="${REPEAT:-3}"
SHAPES="${SHAPES:-phantom,m3d}"
out=$(mktemp -d)
cargo bench --locked --bench step --no-run --quiet 2>/dev/null || cargo bench --locked --bench step --no-run
ADFIT_BENCH_REPEAT="$REPEAT" ADFIT_BENCH_SHAPE="$SHAPES" cargo bench --locked --bench step 2>/dev/null \
  | grep '^{' | tee "$out/rust.jsonl"
for s in ${SHAPES//,/ }; do
  "$VENV/bin/python" scripts/bench_step.py --shape "$s" --repeat "$REPEAT" | grep '^{' | tee -a "$out/torch.jsonl"
done
python3 - "$out" <<'PY'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
rust = {r["shape"]: r for r in map(json.loads, (d / "rust.jsonl").read_text().splitlines())}
torch = {r["shape"]: r for r in map(json.loads, (d / "torch.jsonl").read_text().splitlines())}
print("\nshape     B  adfit scans/s  torch scans/s  adfit/torch  | peak MiB adfit torch")
for s, r in rust.items():
    t = torch.get(s)
    if t:
        print(f"{s:<8}{r['batch']:>3} {r['scans_per_s']:14.2f} {t['scans_per_s']:14.2f} {r['scans_per_s']/t['scans_per_s']:11.2f}x  | "
              f"{r['peak_rss_mib']:8.0f} {t['peak_rss_mib']:6.0f}")
PY
