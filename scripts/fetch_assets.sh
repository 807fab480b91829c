#!/usr/bin/env bash
# fetch_assets.sh — fetch the 1 mm MNI152 T1 template used by the benchmarks.
#
# Downloads the (pure-Python) nimare wheel from PyPI with plain `pip download`
# (no install, no venv needed: only python3 + pip), then extracts exactly one
# file from it:
#
#   nimare/resources/templates/tpl-MNI152NLin6Asym_res-01_T1w.nii.gz
#   (182x218x182, int16, 1 mm isotropic, ~11 MB)
#
# into the asset cache dir and prints the extracted file's absolute path on
# stdout (the only thing printed on stdout; progress goes to stderr).
#
# Idempotent: if the template already exists with the expected SHA-256 the
# script just prints its path.  The nimare wheel (~16 MB) is kept in
# $ASSETS/wheels so a re-extract does not re-download.
#
# Usage:
#   bash scripts/fetch_assets.sh            # -> $HOME/.cache/adfit-assets/...
#   ADFIT_ASSETS=/some/dir bash scripts/fetch_assets.sh
#   T1=$(bash scripts/fetch_assets.sh)
#
# Environment:
#   ADFIT_ASSETS  cache directory (default: $HOME/.cache/adfit-assets)
#   PYTHON        python interpreter to use (default: python3)
set -euo pipefail

ASSETS="${ADFIT_ASSETS:-$HOME/.cache/adfit-assets}"
PYTHON="${PYTHON:-python3}"
NIMARE_VERSION="0.22.1"
WHEEL="nimare-${NIMARE_VERSION}-py3-none-any.whl"
WHEEL_SHA256="16025cbe44c97fb580fe129df230fca62c97c2c6197887abc83b6081552e7bc1"
MEMBER="nimare/resources/templates/tpl-MNI152NLin6Asym_res-01_T1w.nii.gz"
OUT_NAME="$(basename "$MEMBER")"
OUT_SHA256="fbb6e77a6b090368db105d1cab2c13abd141815998b85c95a520d09771f0021c"

log() { echo "fetch_assets: $*" >&2; }

sha256_of() {
    "$PYTHON" - "$1" <<'EOF'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
print(h.hexdigest())
EOF
}

mkdir -p "$ASSETS/wheels"
OUT="$(cd "$ASSETS" && pwd)/$OUT_NAME"

# Already there and intact: nothing to do.
if [[ -f "$OUT" && "$(sha256_of "$OUT")" == "$OUT_SHA256" ]]; then
    echo "$OUT"
    exit 0
fi

# Download the wheel unless a verified copy is cached.
WHEEL_PATH="$ASSETS/wheels/$WHEEL"
if [[ ! -f "$WHEEL_PATH" || "$(sha256_of "$WHEEL_PATH")" != "$WHEEL_SHA256" ]]; then
    rm -f "$WHEEL_PATH"
    log "downloading nimare==${NIMARE_VERSION} wheel (~16 MB) into $ASSETS/wheels"
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
        --dest "$ASSETS/wheels" "nimare==${NIMARE_VERSION}" >&2
fi
got="$(sha256_of "$WHEEL_PATH")"
if [[ "$got" != "$WHEEL_SHA256" ]]; then
    log "SHA-256 mismatch for $WHEEL_PATH: got $got, want $WHEEL_SHA256"
    exit 1
fi

# Extract exactly one member, atomically (write to .tmp, verify, rename).
log "extracting $MEMBER"
"$PYTHON" - "$WHEEL_PATH" "$MEMBER" "$OUT.tmp" <<'EOF'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    if member not in z.namelist():
        sys.exit(f"fetch_assets: {member} not found in {wheel}")
    with z.open(member) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)
EOF
got="$(sha256_of "$OUT.tmp")"
if [[ "$got" != "$OUT_SHA256" ]]; then
    rm -f "$OUT.tmp"
    log "SHA-256 mismatch for extracted template: got $got, want $OUT_SHA256"
    exit 1
fi
mv -f "$OUT.tmp" "$OUT"
echo "$OUT"
