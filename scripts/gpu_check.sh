#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU (CUDA driver + NVRTC, PyTorch; no network
# needed). Sections, most important first, each command under its own time limit:
#   1. the method's training step at the M3D-CLIP shape (128³, 2,048 tokens, ViT-B + bert-base,
#      random weights) in scans/s and peak GPU memory (`adfit bench-step`), batch 2 and 8;
#   2. the same step with Burn's decomposed attention (the path before the block-wise op), with
#      bf16 frozen towers, and at batch 32;
#   3. the same step in PyTorch on the same GPU (scripts/bench_step.py, eager and SDPA), when
#      torch, monai and transformers import;
#   4. PyTorch again with TF32 matrix products (CubeCL's f32 matmul uses TF32 where it can);
#   5. embed parity, cuda (fp32, bf16, f16) vs cpu: the phantom backbone on 4 volumes, 4 texts;
#   6. one epoch of fine-tuning on a 64³ synthetic cohort (phantom backbone), cuda then cpu;
#   7. where the M3D step's GPU time goes: CubeCL's profiler times every kernel of one step at
#      batch 8 (each kernel synchronised, so the step is slower than in section 1; the shares
#      are what counts) and the kernels are summed by kind.
# After every section it rewrites $OUT/table.md (the summary) and $OUT/files.tar.gz (every JSON
# line, log and memory trace); working files stay in $WORK. Under 8 minutes on an H200.
#
#   cargo build --release --locked --features cuda && bash scripts/gpu_check.sh
#   ADFIT=/path/to/adfit OUT=/tmp/gpu bash scripts/gpu_check.sh      # a prebuilt binary
#   WHEELS=dir bash scripts/gpu_check.sh    # pip-install these wheels first (a machine offline)
#   SECTIONS="1 3" bash scripts/gpu_check.sh # only these sections
#   ADFIT_B=other/adfit ADFIT_B_LABEL="fusion, autotune" bash scripts/gpu_check.sh
#                                            # section 1 also times a second build, alternately
set -uo pipefail
cd "$(dirname "$0")/.."
ADFIT="${ADFIT:-target/release/adfit}"
OUT="${OUT:-$(mktemp -d)}"
WORK="${WORK:-$(mktemp -d)}"
PY="${PYTHON:-python3}"
SECTIONS="${SECTIONS:-1 2 3 4 5 6 7}"
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/log.txt") 2>&1
if [ ! -x "$ADFIT" ]; then
  cargo build --release --locked --features cuda || { echo "no adfit binary and the build failed" >&2; exit 1; }
fi
T0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$WORK/gpu.txt"

if [ -n "${WHEELS:-}" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$WHEELS"/*.whl \
    && export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# Burn's CUDA backend loads libnvrtc at run time: put a folder that holds it on the library path.
if ! ldconfig -p 2>/dev/null | grep -q libnvrtc; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
           $("$PY" -c 'import nvidia, os; [print(os.path.join(p, s, "lib")) for p in nvidia.__path__ for s in os.listdir(p)]' 2>/dev/null); do
    if ls "$d"/libnvrtc.so* >/dev/null 2>&1; then
      export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      echo "libnvrtc from $d"
      break
    fi
  done
fi

# Peak GPU memory of a command (nvidia-smi's used memory, sampled every 100 ms, minus the idle
# level), the command stopped after LIMIT seconds.
peak_gpu() {  # peak_gpu NAME LIMIT command...
  local name=$1 limit=$2; shift 2
  local idle; idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$WORK/$name.mem" &
  local mon=$!
  local start; start=$(date +%s.%N)
  timeout "$limit" "$@" > "$WORK/$name.json" 2> "$WORK/$name.log"; local rc=$?
  echo "$(date +%s.%N) $start" | awk '{print $1-$2}' > "$WORK/$name.seconds"
  kill $mon 2>/dev/null; wait $mon 2>/dev/null
  echo "$(sort -n "$WORK/$name.mem" | tail -1) $idle" | awk '{print $1-$2}' > "$WORK/$name.peak"
  echo "$name: rc $rc, $(cat "$WORK/$name.seconds") s, peak $(cat "$WORK/$name.peak") MiB: $(tail -c 400 "$WORK/$name.json")"
  [ $rc = 0 ] || tail -5 "$WORK/$name.log"
  return $rc
}

# One M3D training step timed by a build of adfit (BIN), or by PyTorch; the JSON line in NAME.json.
adfit_step() {  # adfit_step NAME LIMIT BIN bench-step flags...
  local name=$1 limit=$2 bin=$3; shift 3
  peak_gpu "$name" "$limit" "$bin" -q bench-step --shape m3d --device cuda "$@"
}
torch_step() {  # torch_step NAME bench_step.py flags...
  local name=$1; shift
  peak_gpu "$name" 90 "$PY" scripts/bench_step.py --shape m3d --device cuda "$@"
  sed -i '/^{/!d' "$WORK/$name.json"
}

summarise() {
  "$PY" - "$WORK" "${ADFIT_B_LABEL:-ADFIT_B}" > "$OUT/table.md" <<'PY'
import json, pathlib, re, sys
d = pathlib.Path(sys.argv[1])
label_b = sys.argv[2]
def load(name):
    try:
        return json.loads((d / f"{name}.json").read_text().strip().splitlines()[-1])
    except Exception:
        return None
def num(name, ext):
    try:
        return float((d / f"{name}.{ext}").read_text())
    except Exception:
        return float("nan")
def text(name):
    p = d / name
    return p.read_text().strip() if p.exists() else "-"
print("| check | result |\n|---|---|")
print(f"| GPU | {text('gpu.txt')} |")
rows = [("step-adfit-2", "batch 2, adfit cuda"), ("step-adfitB-2", f"batch 2, adfit cuda, {label_b}"),
        ("step-adfit-8", "batch 8, adfit cuda"), ("step-adfitB-8", f"batch 8, adfit cuda, {label_b}"),
        ("step-adfit-decomposed-8", "batch 8, adfit cuda, decomposed attention (before the block-wise op)"),
        ("step-adfit-bf16-8", "batch 8, adfit cuda, bf16 frozen towers"), ("step-adfit-32", "batch 32, adfit cuda")]
for name, what in rows:
    r = load(name)
    if r:
        print(f"| M3D step, {what} | {r['scans_per_s']:.2f} scans/s ({r['seconds']:.3f} s/step), peak GPU {num(name, 'peak'):.0f} MiB; "
              f"process {num(name, 'seconds'):.0f} s |")
    elif (d / f"{name}.log").exists():
        print(f"| M3D step, {what} | failed: {text(name + '.log')[-200:]!r} |")
for b in (2, 8, 32):
    r = load(f"step-adfit-{b}")
    for attn in ("eager", "sdpa", "tf32-eager", "tf32-sdpa"):
        name = f"step-torch-{attn}-{b}"
        t = load(name)
        if t:
            ratio = f"; adfit/PyTorch {r['scans_per_s'] / t['scans_per_s']:.2f}x" if r else ""
            what = attn.replace("tf32-", "") + (", TF32" if attn.startswith("tf32") else "")
            print(f"| M3D step, batch {b}, PyTorch {t['torch']} ({what}) | {t['scans_per_s']:.2f} scans/s ({t['seconds']:.3f} s/step), "
                  f"peak GPU {num(name, 'peak'):.0f} MiB (allocator {t['peak_gpu_alloc_mib']:.0f} MiB){ratio} |")
print(f"| embed parity | {text('embed.txt')} |")
if (d / "kernels.txt").exists():
    print(f"| M3D step, batch 8, GPU time by kernel (CubeCL profiler) | {text('kernels.txt')} |")
for dev in ("cuda", "cpu"):
    log = text(f"ft-{dev}.log")
    speed = re.findall(r"\(([\d.]+) training scans/s\)", log)
    if log != "-":
        print(f"| fine-tuning, 1 epoch, {dev} | {speed[0] if speed else '-'} training scans/s; "
              f"{num(f'ft-{dev}', 'seconds'):.0f} s with validation and test |")
PY
  (cd "$WORK" && tar czf "$OUT/files.tar.gz" --exclude='*.nii*' --exclude=cohort --exclude=demo --exclude=adni --exclude=site \
     $(ls | grep -E '\.(json|log|peak|seconds|txt|mem)$'))
  cat "$OUT/table.md"
  echo "elapsed $(( $(date +%s) - T0 )) s"
}

if want 1; then
echo "== 1. training step at the M3D-CLIP shape on cuda (adfit)"
for b in 2 8; do
  adfit_step step-adfit-$b 150 "$ADFIT" --batch $b --repeat 3
  [ -n "${ADFIT_B:-}" ] && adfit_step step-adfitB-$b 150 "$ADFIT_B" --batch $b --repeat 3
done
summarise
fi

if want 2; then
echo "== 2. the step's variants (adfit)"
adfit_step step-adfit-decomposed-8 120 "$ADFIT" --batch 8 --repeat 3 --attention decomposed
adfit_step step-adfit-bf16-8 120 "$ADFIT" --batch 8 --repeat 3 --precision bf16
# A batch the decomposed form cannot hold (about 10 GiB of it per scan).
adfit_step step-adfit-32 120 "$ADFIT" --batch 32 --repeat 2
summarise
fi

torch_ok() { "$PY" -c "import torch, monai, transformers; assert torch.cuda.is_available()" \
  || { echo "PyTorch with monai and transformers on CUDA is not importable here: no PyTorch figures"; false; }; }

if want 3 && torch_ok; then
echo "== 3. the same step in PyTorch"
for attn in eager sdpa; do
  for b in 2 8; do
    torch_step step-torch-$attn-$b --batch $b --repeat 3 --attn $attn
  done
done
torch_step step-torch-sdpa-32 --batch 32 --repeat 2 --attn sdpa
summarise
fi

if want 4 && torch_ok; then
echo "== 4. PyTorch with TF32 matrix products"
for attn in eager sdpa; do
  for b in 2 8; do
    torch_step step-torch-tf32-$attn-$b --batch $b --repeat 3 --attn $attn --tf32
  done
done
summarise
fi

if want 5; then
echo "== 5. embed parity (cuda vs cpu)"
$ADFIT -q synth --out "$WORK/cohort" --preset tiny --seed 0 >/dev/null
vols=()
for f in $(tail -n +2 "$WORK/cohort/adni/scans.csv" | cut -d, -f1 | head -4); do
  src="$WORK/cohort/adni/$f"; [ -f "$src" ] || src="$f"
  dst="$WORK/v${#vols[@]}.nii.gz"
  $ADFIT -q convert "$src" "$dst" --canonical --resize 64,64,64 --normalize minmax >/dev/null && vols+=(--volume "$dst")
done
texts=(--text "A photo of NC." --text "A photo of MCI." --text "A photo of AD." \
       --text "A photo of AD. The MRI scan reveals the following biomarkers: Hippocampal volume: 5123.00 mm^3")
for run in "cpu fp32" "cuda fp32" "cuda bf16" "cuda f16"; do
  set -- $run
  timeout 60 $ADFIT -q embed --backbone backbones/phantom-64 "${vols[@]}" "${texts[@]}" --out "$WORK/embed-$1-$2.json" \
    --device "$1" --precision "$2" 2>> "$WORK/embed.log"
done
"$PY" - "$WORK" > "$WORK/embed.txt" <<'PY'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
a = json.loads((d / "embed-cpu-fp32.json").read_text())
parts = []
for name in ("cuda-fp32", "cuda-bf16", "cuda-f16"):
    try:
        b = json.loads((d / f"embed-{name}.json").read_text())
    except Exception:
        parts.append(f"{name}: failed")
        continue
    worst = max(abs(x - y) for k in ("image_embeddings", "text_embeddings") for r, s in zip(a[k], b[k]) for x, y in zip(r, s))
    parts.append(f"{name} {worst:.2e}")
print(f"{len(a['image_embeddings'])} volumes and {len(a['text_embeddings'])} texts, max abs difference from cpu fp32: " + ", ".join(parts))
PY
summarise
fi

if want 6; then
echo "== 6. one epoch of fine-tuning (cuda, then cpu)"
$ADFIT -q synth --out "$WORK/demo" --preset default --seed 0 >/dev/null
$ADFIT -q preprocess --scans "$WORK/demo/adni/scans.csv" --table "$WORK/demo/adni/ADNIMERGE.csv" --out "$WORK/adni" --shape 64,64,64 >/dev/null
$ADFIT -q split --index "$WORK/adni/index.csv" --out "$WORK/split.csv" --folds 5 --seed 0 >/dev/null
for dev in cuda cpu; do
  peak_gpu ft-$dev 120 $ADFIT finetune --backbone backbones/phantom-64 --index "$WORK/adni/index.csv" --split "$WORK/split.csv" \
    --fold 0 --config configs/finetune.json --epochs 1 --out "$WORK/ft-$dev" --device $dev
done
summarise
fi

if want 7; then
echo "== 7. GPU time by kernel, one M3D step at batch 8 (CubeCL's profiler)"
CUBECL_DEBUG_LOG="$WORK/profile.cubecl" CUBECL_DEBUG_OPTION=profile timeout 150 \
  $ADFIT -q bench-step --shape m3d --batch 8 --repeat 1 --device cuda > "$WORK/step-profiled.json" 2> "$WORK/step-profiled.log"
"$PY" - "$WORK" > "$WORK/kernels.txt" <<'PY'
import collections, pathlib, re, sys
d = pathlib.Path(sys.argv[1])
unit = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
total, count = collections.Counter(), collections.Counter()
for line in (d / "profile.cubecl").read_text(errors="replace").splitlines():
    m = re.match(r"\|\s*([\d.]+)(ns|µs|us|ms|s)\s*\|\s*([^|]*?)\s*\|\s*([^|]*?)\s*(\||$)", line)
    if m:
        key = m[3] if m[4].endswith("Runtime") else f"{m[3]} {m[4]}".strip()
        total[key] += float(m[1]) * unit[m[2]]
        count[key] += 1
all_s = sum(total.values())
top = ", ".join(f"{k} {v / all_s:.0%} ({count[k]}×)" for k, v in total.most_common(12))
print(f"{all_s:.2f} s in {sum(count.values())} kernels (warm-up and one step): {top}")
PY
summarise
fi
echo "files in $WORK; summary in $OUT"
