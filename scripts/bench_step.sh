#!/usr/bin/env bash
# Training-step throughput, both sides in one run: adfit (benches/step.rs, release, Flex CPU; with
# its block-wise attention op and with Burn's decomposed attention, the path before it) and
# PyTorch (scripts/bench_step.py; eager and SDPA attention) on the same shapes — adfit's own
# backbone (phantom: 64³, batch 8) and M3D-CLIP (m3d: 128³, ViT-B + bert-base, batch 2). Prints
# scans/s, the ratios and peak RSS.
# Run it on an otherwise idle machine: both sides use every core. The m3d shape takes minutes on CPU.
# ROUNDS=N runs the whole comparison N times, the tools interleaved, and prints each round and the
# median of each ratio: a shared machine's speed drifts within minutes, and a ratio is only as
# good as the two measurements being taken close together.
#
#   bash scripts/bench_step.sh
#   SHAPES=phantom REPEAT=5 ATTENTION=block-wise bash scripts/bench_step.sh
#   SHAPES=phantom REPEAT=50 ROUNDS=5 ATTENTION=block-wise bash scripts/bench_step.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-$HOME/.venvs/adfit-ref}"
REPEAT="${REPEAT:-3}"
SHAPES="${SHAPES:-phantom,m3d}"
ATTENTION="${ATTENTION:-block-wise,decomposed}"
ROUNDS="${ROUNDS:-1}"
out=$(mktemp -d)
cargo bench --locked --bench step --no-run --quiet 2>/dev/null || cargo bench --locked --bench step --no-run
for round in $(seq "$ROUNDS"); do
  for a in ${ATTENTION//,/ }; do
    ADFIT_BENCH_ATTENTION="$a" ADFIT_BENCH_REPEAT="$REPEAT" ADFIT_BENCH_SHAPE="$SHAPES" cargo bench --locked --bench step 2>/dev/null \
      | grep '^{' | sed "s/^{/{\"round\": $round, /" | tee -a "$out/rust.jsonl"
  done
  for s in ${SHAPES//,/ }; do
    for impl in eager sdpa; do
      "$VENV/bin/python" scripts/bench_step.py --shape "$s" --attn "$impl" --repeat "$REPEAT" | grep '^{' \
        | sed "s/^{/{\"round\": $round, /" | tee -a "$out/torch.jsonl"
    done
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys, pathlib
d = pathlib.Path(sys.argv[1])
rust = [json.loads(l) for l in (d / "rust.jsonl").read_text().splitlines()]
torch = {(r["round"], r["shape"], r["attn"]): r for r in map(json.loads, (d / "torch.jsonl").read_text().splitlines())}
print("\nround shape    attention    B  adfit scans/s | torch eager  sdpa | adfit/eager adfit/sdpa | peak MiB adfit eager sdpa")
ratios = {}
for r in rust:
    e, s = torch.get((r["round"], r["shape"], "eager")), torch.get((r["round"], r["shape"], "sdpa"))
    if not (e and s):
        continue
    re_, rs = r["scans_per_s"] / e["scans_per_s"], r["scans_per_s"] / s["scans_per_s"]
    ratios.setdefault((r["shape"], r["attention"]), []).append((re_, rs))
    print(f"{r['round']:>5} {r['shape']:<8} {r['attention']:<11}{r['batch']:>3} {r['scans_per_s']:13.2f} | {e['scans_per_s']:11.2f} {s['scans_per_s']:5.2f} | "
          f"{re_:10.2f}x {rs:9.2f}x | {r['peak_rss_mib']:8.0f} {e['peak_rss_mib']:5.0f} {s['peak_rss_mib']:4.0f}")
if any(len(v) > 1 for v in ratios.values()):
    print("\nmedian over rounds (min-max)")
    for (shape, attention), v in ratios.items():
        e, s = [x[0] for x in v], [x[1] for x in v]
        print(f"{shape:<8} {attention:<11} adfit/eager {statistics.median(e):.2f}x ({min(e):.2f}-{max(e):.2f}), "
              f"adfit/sdpa {statistics.median(s):.2f}x ({min(s):.2f}-{max(s):.2f}), {len(v)} rounds")
PY
