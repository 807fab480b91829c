#!/usr/bin/env bash
# Training-step throughput, both sides in one run: adfit (benches/step.rs, release, Flex CPU; with
# its block-wise attention op and with Burn's decomposed attention, the path before it) and
# PyTorch (scripts/bench_step.py; eager and SDPA attention) on the same shapes — adfit's own
# backbone (phantom: 64³, batch 8) and M3D-CLIP (m3d: 128³, ViT-B + bert-base, batch 2). Prints
# scans/s, the ratios and peak RSS.
# Run it on an otherwise idle machine: both sides use every core. The m3d shape takes minutes on CPU.
#
#   bash scripts/bench_step.sh
#   SHAPES=phantom REPEAT=5 ATTENTION=block-wise bash scripts/bench_step.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-$HOME/.venvs/adfit-ref}"
REPEAT="${REPEAT:-3}"
SHAPES="${SHAPES:-phantom,m3d}"
ATTENTION="${ATTENTION:-block-wise,decomposed}"
out=$(mktemp -d)
cargo bench --locked --bench step --no-run --quiet 2>/dev/null || cargo bench --locked --bench step --no-run
for a in ${ATTENTION//,/ }; do
  ADFIT_BENCH_ATTENTION="$a" ADFIT_BENCH_REPEAT="$REPEAT" ADFIT_BENCH_SHAPE="$SHAPES" cargo bench --locked --bench step 2>/dev/null \
    | grep '^{' | tee -a "$out/rust.jsonl"
done
for s in ${SHAPES//,/ }; do
  for impl in eager sdpa; do
    "$VENV/bin/python" scripts/bench_step.py --shape "$s" --attn "$impl" --repeat "$REPEAT" | grep '^{' | tee -a "$out/torch.jsonl"
  done
done
python3 - "$out" <<'PY'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
rust = [json.loads(l) for l in (d / "rust.jsonl").read_text().splitlines()]
torch = {(r["shape"], r["attn"]): r for r in map(json.loads, (d / "torch.jsonl").read_text().splitlines())}
print("\nshape    attention    B  adfit scans/s | torch eager  sdpa | adfit/eager adfit/sdpa | peak MiB adfit eager sdpa")
for r in rust:
    e, s = torch.get((r["shape"], "eager")), torch.get((r["shape"], "sdpa"))
    if not (e and s):
        continue
    print(f"{r['shape']:<8} {r['attention']:<11}{r['batch']:>3} {r['scans_per_s']:13.2f} | {e['scans_per_s']:11.2f} {s['scans_per_s']:5.2f} | "
          f"{r['scans_per_s']/e['scans_per_s']:10.2f}x {r['scans_per_s']/s['scans_per_s']:9.2f}x | "
          f"{r['peak_rss_mib']:8.0f} {e['peak_rss_mib']:5.0f} {s['peak_rss_mib']:4.0f}")
PY
