#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU (CUDA driver + NVRTC, PyTorch; no network
# needed). Prints one table and leaves its files in $OUT (default: a temporary folder):
#   1. embed parity, cuda vs cpu: the shipped backbone on 4 synthetic volumes and 4 texts;
#   2. the method's training step at the M3D-CLIP shape (128³, 2,048 tokens, ViT-B + bert-base,
#      random weights) in scans/s and peak GPU memory, batch 2 and 8 (`adfit bench-step`);
#   3. the same step in PyTorch on the same GPU (scripts/bench_step.py, eager and SDPA BERT),
#      when torch, monai and transformers import;
#   4. one epoch of the demo's fine-tuning (64³ synthetic cohort, shipped backbone) on cuda and
#      on cpu, with training scans/s.
# Meant to finish in under 8 minutes on an H100-class GPU.
#
#   cargo build --release --locked --features cuda && bash scripts/gpu_check.sh
#   ADFIT=/path/to/adfit OUT=/tmp/gpu bash scripts/gpu_check.sh      # a prebuilt binary
set -uo pipefail
cd "$(dirname "$0")/.."
ADFIT="${ADFIT:-target/release/adfit}"
OUT="${OUT:-$(mktemp -d)}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
if [ ! -x "$ADFIT" ]; then
  cargo build --release --locked --features cuda || { echo "no adfit binary and the build failed" >&2; exit 1; }
fi
T0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

# Peak GPU memory of a command (nvidia-smi's used memory, sampled every 100 ms, minus the idle level).
peak_gpu() {  # peak_gpu LOGFILE -- command...
  local log=$1; shift; shift
  local idle; idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$log.mem" &
  local mon=$!
  "$@"; local rc=$?
  kill $mon 2>/dev/null; wait $mon 2>/dev/null
  echo "$(sort -n "$log.mem" | tail -1) $idle" | awk '{print $1-$2}' > "$log.peak"
  return $rc
}

echo "== 1. embed parity (cuda vs cpu)"
$ADFIT -q synth --out "$OUT/cohort" --preset tiny --seed 0 >/dev/null
vols=()
for f in $(tail -n +2 "$OUT/cohort/adni/scans.csv" | cut -d, -f2 | head -4); do
  src="$OUT/cohort/adni/$f"; [ -f "$src" ] || src="$f"
  dst="$OUT/v$((${#vols[@]})).nii.gz"
  $ADFIT -q convert "$src" "$dst" --canonical --resize 64,64,64 --normalize minmax >/dev/null && vols+=(--volume "$dst")
done
texts=(--text "A photo of NC." --text "A photo of MCI." --text "A photo of AD." \
       --text "A photo of AD. The MRI scan reveals the following biomarkers: Hippocampal volume: 5123.00 mm^3")
for dev in cpu cuda; do
  $ADFIT -q embed --backbone backbones/phantom-64 "${vols[@]}" "${texts[@]}" --out "$OUT/embed-$dev.json" --device $dev
done
for p in bf16 f16; do
  $ADFIT -q embed --backbone backbones/phantom-64 "${vols[@]}" "${texts[@]}" --out "$OUT/embed-cuda-$p.json" \
    --device cuda --precision $p
done
"$PY" - "$OUT" <<'PY' | tee "$OUT/embed.txt"
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
a = json.loads((d / "embed-cpu.json").read_text())
parts = []
for name in ("cuda", "cuda-bf16", "cuda-f16"):
    try:
        b = json.loads((d / f"embed-{name}.json").read_text())
    except Exception:
        parts.append(f"{name}: failed")
        continue
    worst = max(abs(x - y) for k in ("image_embeddings", "text_embeddings") for r, s in zip(a[k], b[k]) for x, y in zip(r, s))
    parts.append(f"{name} {worst:.2e}")
print(f"embed, {len(a['image_embeddings'])} volumes and {len(a['text_embeddings'])} texts, max abs difference from cpu fp32: " + ", ".join(parts))
PY

echo "== 2. training step at the M3D-CLIP shape on cuda (adfit)"
for b in 2 8; do
  peak_gpu "$OUT/step-adfit-$b" -- $ADFIT -q bench-step --shape m3d --batch $b --repeat 3 --device cuda \
    | tee "$OUT/step-adfit-$b.json"
done
peak_gpu "$OUT/step-adfit-bf16-8" -- $ADFIT -q bench-step --shape m3d --batch 8 --repeat 3 --device cuda \
  --precision bf16 | tee "$OUT/step-adfit-bf16-8.json"
# Before the block-wise attention op: Burn's decomposed attention under autodiff (may run out of memory).
peak_gpu "$OUT/step-adfit-decomposed-8" -- $ADFIT -q bench-step --shape m3d --batch 8 --repeat 3 --device cuda \
  --attention decomposed | tee "$OUT/step-adfit-decomposed-8.json" || true

echo "== 3. the same step in PyTorch"
if "$PY" -c "import torch, monai, transformers; assert torch.cuda.is_available()" 2>/dev/null; then
  for attn in eager sdpa; do
    for b in 2 8; do
      peak_gpu "$OUT/step-torch-$attn-$b" -- "$PY" scripts/bench_step.py --shape m3d --batch $b --repeat 3 \
        --device cuda --attn $attn | grep '^{' | tee "$OUT/step-torch-$attn-$b.json"
    done
  done
else
  echo "PyTorch with monai and transformers on CUDA is not importable here: no PyTorch figures" | tee "$OUT/torch-missing.txt"
fi

echo "== 4. one epoch of the demo's fine-tuning (cuda, then cpu)"
$ADFIT -q synth --out "$OUT/demo" --preset default --seed 0 >/dev/null
$ADFIT -q preprocess --scans "$OUT/demo/adni/scans.csv" --table "$OUT/demo/adni/ADNIMERGE.csv" --out "$OUT/adni" --shape 64,64,64
$ADFIT -q split --index "$OUT/adni/index.csv" --out "$OUT/split.csv" --folds 5 --seed 0
for dev in cuda cpu; do
  start=$(date +%s.%N)
  $ADFIT finetune --backbone backbones/phantom-64 --index "$OUT/adni/index.csv" --split "$OUT/split.csv" --fold 0 \
    --config configs/finetune.json --epochs 1 --out "$OUT/ft-$dev" --device $dev 2> "$OUT/ft-$dev.log" | tee "$OUT/ft-$dev.txt"
  echo "$(date +%s.%N) $start" | awk '{print $1-$2}' > "$OUT/ft-$dev.seconds"
done

"$PY" - "$OUT" <<'PY' | tee "$OUT/table.md"
import json, pathlib, re, sys
d = pathlib.Path(sys.argv[1])
def load(p):
    try:
        return json.loads(p.read_text().strip().splitlines()[-1])
    except Exception:
        return None
def peak(p):
    try:
        return float(p.read_text())
    except Exception:
        return float("nan")
print("\n| check | result |\n|---|---|")
print(f"| GPU | {(d / 'gpu.txt').read_text().strip()} |")
print(f"| embed parity | {(d / 'embed.txt').read_text().strip()} |")
for b in (2, 8):
    r = load(d / f"step-adfit-{b}.json")
    if r:
        print(f"| M3D step, batch {b}, adfit cuda | {r['scans_per_s']:.2f} scans/s ({r['seconds']:.3f} s), peak GPU {peak(d / f'step-adfit-{b}.peak'):.0f} MiB |")
    for attn in ("eager", "sdpa"):
        t = load(d / f"step-torch-{attn}-{b}.json")
        if t:
            ratio = f", adfit/torch {r['scans_per_s'] / t['scans_per_s']:.2f}x" if r else ""
            print(f"| M3D step, batch {b}, PyTorch {t['torch']} ({attn} attention) | {t['scans_per_s']:.2f} scans/s, peak GPU {peak(d / f'step-torch-{attn}-{b}.peak'):.0f} MiB (allocator {t['peak_gpu_alloc_mib']:.0f} MiB){ratio} |")
r = load(d / "step-adfit-decomposed-8.json")
if r:
    print(f"| M3D step, batch 8, adfit cuda, decomposed attention (before the block-wise op) | {r['scans_per_s']:.2f} scans/s ({r['seconds']:.3f} s), peak GPU {peak(d / 'step-adfit-decomposed-8.peak'):.0f} MiB |")
r = load(d / "step-adfit-bf16-8.json")
if r:
    print(f"| M3D step, batch 8, adfit cuda, bf16 frozen towers | {r['scans_per_s']:.2f} scans/s ({r['seconds']:.3f} s), peak GPU {peak(d / 'step-adfit-bf16-8.peak'):.0f} MiB |")
for dev in ("cuda", "cpu"):
    log = (d / f"ft-{dev}.log").read_text() if (d / f"ft-{dev}.log").exists() else ""
    speed = re.findall(r"\(([\d.]+) training scans/s\)", log)
    secs = peak(d / f"ft-{dev}.seconds")
    print(f"| demo fine-tuning, 1 epoch, {dev} | {speed[0] if speed else '-'} training scans/s; {secs:.0f} s with validation and test |")
PY
echo "total $(( $(date +%s) - T0 )) s; files in $OUT"
