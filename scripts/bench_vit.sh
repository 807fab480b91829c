#!/usr/bin/env bash
# ViT benchmark, both sides in one run: adfit (benches/vit.rs, release) and PyTorch
# (scripts/bench_torch.py: eager and SDPA attention) on the same shapes — M3D width, 2070 tokens,
# 2 layers, batch 1 and 2, forward and forward+backward (prompts trainable). Prints ratios.
# Run it on an otherwise idle machine: both sides use every core.
#
#   bash scripts/bench_vit.sh
#   VENV=/path/to/venv REPEAT=3 bash scripts/bench_vit.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-$HOME/.venvs/adfit-ref}"
REPEAT="${REPEAT:-3}"
out=$(mktemp -d)
cargo build --release --locked --bench vit --quiet 2>/dev/null || cargo bench --locked --bench vit --no-run
ADFIT_BENCH_REPEAT="$REPEAT" cargo bench --locked --bench vit 2>/dev/null | grep '^{' | tee "$out/rust.jsonl"
"$VENV/bin/python" scripts/bench_torch.py --repeat "$REPEAT" | grep '^{' | tee "$out/torch.jsonl"
python3 - "$out" <<'PY'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
rust = [json.loads(l) for l in (d / "rust.jsonl").read_text().splitlines()]
torch = [json.loads(l) for l in (d / "torch.jsonl").read_text().splitlines()]
def t(impl, b, mode):
    return next((r for r in torch if r["impl"] == impl and r["batch"] == b and r["mode"] == mode), None)
print("\nmode                          B   adfit_s  eager_s  sdpa_s  adfit/sdpa  | extra MiB: adfit eager sdpa")
for r in rust:
    mode = r["mode"]
    base = "forward_backward" if mode.startswith("forward_backward") else "forward"
    e, s = t("eager", r["batch"], base), t("sdpa", r["batch"], base)
    if not (e and s):
        continue
    print(f"{mode:<30}{r['batch']:>2} {r['seconds']:9.3f} {e['seconds']:8.3f} {s['seconds']:7.3f} {r['seconds']/s['seconds']:10.2f}x  | "
          f"{r['delta_rss_mib']:6.0f} {e['delta_rss_mib']:6.0f} {s['delta_rss_mib']:5.0f}")
PY
