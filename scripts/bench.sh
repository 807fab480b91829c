#!/usr/bin/env bash
# Preprocessing benchmark, both sides in one run on the same 1 mm T1 (MNI152 template from the
# nimare wheel): adfit (benches/preprocess.rs, release build) against nibabel + torch
# (scripts/bench_preprocess.py in the reference virtualenv). Prints both JSON lines and the ratios.
#
#   bash scripts/bench.sh                      # venv at $HOME/.venvs/adfit-ref (see requirements.txt)
#   VENV=/path/to/venv REPEAT=7 bash scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-$HOME/.venvs/adfit-ref}"
REPEAT="${REPEAT:-5}"

T1=$(bash scripts/fetch_assets.sh)
export ADFIT_BENCH_T1="$T1" ADFIT_BENCH_REPEAT="$REPEAT"
out=$(mktemp -d)
cargo bench --locked --bench preprocess 2>/dev/null | tee "$out/rust.jsonl"
"$VENV/bin/python" scripts/bench_preprocess.py --input "$T1" --repeat "$REPEAT" | tee "$out/torch.jsonl"
python3 - "$out" <<'PY'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
rust = [json.loads(l) for l in (d / "rust.jsonl").read_text().splitlines() if l.startswith("{")]
torch = json.loads((d / "torch.jsonl").read_text().strip().splitlines()[-1])
pre = next(r for r in rust if r.get("bench") == "preprocess")
print("\nstep        adfit_s   torch_s   torch/adfit")
for k in ["load", "canonical", "resize", "normalize"]:
    a, t = pre["steps_s"][k], torch["steps_s"][k]
    print(f"{k:<10} {a:9.4f} {t:9.4f} {t / a:9.2f}x")
print(f"{'total':<10} {pre['total_s']:9.4f} {torch['total_s']:9.4f} {torch['total_s'] / pre['total_s']:9.2f}x")
print(f"peak RSS   adfit {pre['peak_rss_mib']:.0f} MiB (whole bench process)   python {torch['peak_rss_mib']:.0f} MiB (incl. torch import {torch.get('rss_after_imports_mib', float('nan')):.0f} MiB)")
for r in rust:
    if r.get("bench") == "loading":
        print(f"loading B=8 128^3 augment={r['augment']!s:<5} parallel={r['parallel_items']!s:<5} {r['batches_per_s']:.2f} batches/s")
PY
