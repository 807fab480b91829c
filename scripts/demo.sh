#!/usr/bin/env bash
# The main job on the embedded synthetic cohort, end to end, on CPU:
#   synth (ADNI-like + OASIS-like cohorts) → preprocess (cache + index) → split (5 folds).
# Everything lands in ${OUT:-demo}/. Rerunning reuses what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-demo}"
SEED="${SEED:-0}"
PRESET="${PRESET:-default}"
SHAPE="${SHAPE:-64,64,64}"   # the paper uses 128³; 64³ keeps the demo cache small

cargo build --release --locked --quiet
adfit=target/release/adfit

if [ ! -f "$OUT/cohort/adni/ADNIMERGE.csv" ]; then
  $adfit synth --out "$OUT/cohort" --preset "$PRESET" --seed "$SEED"
fi
$adfit inspect "$OUT/cohort/adni/ADNIMERGE.csv"
$adfit preprocess --scans "$OUT/cohort/adni/scans.csv" --table "$OUT/cohort/adni/ADNIMERGE.csv" \
  --out "$OUT/adni" --shape "$SHAPE"
$adfit preprocess --scans "$OUT/cohort/oasis/scans.csv" --table "$OUT/cohort/oasis/oasis_longitudinal.csv" \
  --out "$OUT/oasis" --shape "$SHAPE"
$adfit split --index "$OUT/adni/index.csv" --out "$OUT/split.csv" --folds 5 --seed "$SEED"
echo
echo "cohort index: $OUT/adni/index.csv   split: $OUT/split.csv   transfer cohort: $OUT/oasis/index.csv"
