#!/usr/bin/env python3
"""PyTorch/nibabel baseline for adfit's preprocessing benchmark.

Setup (once; the venv lives outside the repo):

    python3 -m venv /root/.venvs/adfit-ref
    /root/.venvs/adfit-ref/bin/pip install -r scripts/requirements.txt
    T1=$(bash scripts/fetch_assets.sh)     # 182x218x182 int16 MNI152 1 mm T1

Run (from the repo root):

    /root/.venvs/adfit-ref/bin/python scripts/bench_preprocess.py --input "$T1" --repeat 5

Steps timed (each: one warm-up run, then the median of --repeat runs; every
step runs on the previous step's output from the same iteration, CPU only):

  load       nib.load(path) + img.get_fdata(dtype=np.float32)
             (gunzip + int16 -> float32 with scl_slope/inter applied; float32,
             not nibabel's default float64, to match adfit's f32 pipeline)
  canonical  nib.as_closest_canonical(img) + np.ascontiguousarray of its
             float32 data.  nibabel returns Fortran-ordered arrays, so this
             step always includes one full F->C copy; for an image that is
             already RAS (like the MNI template) as_closest_canonical itself
             is a no-op and the copy is all that is measured.
  resize     torch.nn.functional.interpolate(x[None, None], size=(128,)*3,
             mode="trilinear", align_corners=False), float32
  normalize  (x - min) / (max - min) -> [0, 1], in torch, float32

Prints diagnostics to stderr and ONE JSON line to stdout, e.g.::

  {"tool": "pytorch-nibabel", "input": ..., "shape": [182, 218, 182],
   "axcodes": "RAS", "out_shape": [128, 128, 128], "load_dtype": "float32",
   "repeat": 3, "torch_threads": 2,
   "steps_s": {"load": ..., "canonical": ..., "resize": ..., "normalize": ...},
   "total_s": ..., "total_s_sum_of_medians": ..., "peak_rss_mib": ...,
   "torch_version": ..., "nibabel_version": ..., "numpy_version": ...}

``total_s`` is the median over runs of the whole pipeline; ``peak_rss_mib`` is
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (KiB on Linux) / 1024 and
includes the interpreter plus torch/numpy/nibabel imports (``rss_after_imports_mib``
is the same measure taken right after the imports, before any work).

Python here is only a baseline to compare adfit against; nothing in adfit runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

OUT_SHAPE = (128, 128, 128)


def step_load(path):
    img = nib.load(path)
    data = img.get_fdata(dtype=np.float32)
    return img, data


def step_canonical(img, data):
    # Reuse the already-decoded array so this step measures only reorientation.
    img = nib.Nifti1Image(data, img.affine, img.header)
    canon = nib.as_closest_canonical(img)
    return np.ascontiguousarray(canon.get_fdata(dtype=np.float32))


def step_resize(arr):
    t = torch.from_numpy(arr)[None, None]
    return F.interpolate(t, size=OUT_SHAPE, mode="trilinear", align_corners=False)[0, 0]


def step_normalize(t):
    lo, hi = t.min(), t.max()
    return (t - lo) / (hi - lo)


def run_once(path):
    times = {}
    t0 = time.perf_counter()
    img, data = step_load(path)
    t1 = time.perf_counter()
    arr = step_canonical(img, data)
    t2 = time.perf_counter()
    small = step_resize(arr)
    t3 = time.perf_counter()
    out = step_normalize(small)
    t4 = time.perf_counter()
    times = {"load": t1 - t0, "canonical": t2 - t1, "resize": t3 - t2, "normalize": t4 - t3}
    return times, t4 - t0, data.shape, out


def main() -> int:
    ap = argparse.ArgumentParser(description="PyTorch/nibabel preprocessing baseline")
    ap.add_argument("--input", required=True, help="1 mm T1 .nii/.nii.gz")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs after one warm-up (median reported)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")

    rss_after_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()} (os.cpu_count() = {os.cpu_count()})", file=sys.stderr)

    _, _, shape, out = run_once(args.input)  # warm-up
    axcodes = "".join(nib.aff2axcodes(nib.load(args.input).affine))
    print(f"input {shape} {axcodes}", file=sys.stderr)
    assert tuple(out.shape) == OUT_SHAPE and out.dtype == torch.float32
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0

    runs, totals = [], []
    for i in range(args.repeat):
        times, total, _, _ = run_once(args.input)
        runs.append(times)
        totals.append(total)
        print(f"run {i + 1}/{args.repeat}: " + ", ".join(f"{k} {v:.4f}s" for k, v in times.items())
              + f", total {total:.4f}s", file=sys.stderr)

    steps = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    result = {
        "tool": "pytorch-nibabel",
        "input": os.path.basename(args.input),
        "shape": [int(s) for s in shape],
        "axcodes": axcodes,
        "out_shape": list(OUT_SHAPE),
        "load_dtype": "float32",
        "repeat": args.repeat,
        "torch_threads": torch.get_num_threads(),
        "steps_s": {k: round(v, 6) for k, v in steps.items()},
        "total_s": round(statistics.median(totals), 6),
        "total_s_sum_of_medians": round(sum(steps.values()), 6),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "rss_after_imports_mib": round(rss_after_import, 1),
        "torch_version": torch.__version__,
        "nibabel_version": nib.__version__,
        "numpy_version": np.__version__,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
