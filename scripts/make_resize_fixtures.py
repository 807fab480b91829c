#!/usr/bin/env python3
"""Generate ``tests/fixtures/resize/reference.json``: PyTorch trilinear resize
reference values for adfit's resampler.

Setup (once; the venv lives outside the repo):

    python3 -m venv /root/.venvs/adfit-ref
    /root/.venvs/adfit-ref/bin/pip install -r scripts/requirements.txt

Rerun (from the repo root; deterministic):

    /root/.venvs/adfit-ref/bin/python scripts/make_resize_fixtures.py

Output format::

    {"torch_version": "2.x",
     "mode": "trilinear", "align_corners": false, "dtype": "float32",
     "cases": [{"name": "...", "in_shape": [a,b,c], "out_shape": [x,y,z],
                "input":  [a*b*c float32 values, C order],
                "output": [x*y*z float32 values, C order]}, ...]}

where ``output = F.interpolate(input[None, None], size=out_shape,
mode="trilinear", align_corners=False)[0, 0]`` computed in float32 on the CPU.
Note ``align_corners=False`` without ``scale_factor``: PyTorch then uses the
scale ``in_size / out_size`` per axis, source coordinate
``(dst + 0.5) * in/out - 0.5`` clamped below at 0 (and the upper neighbour
index clamped to ``in_size - 1``).  C order = last axis fastest.

Python here is only a fixture generator; nothing in adfit runs it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "resize" / "reference.json"

CASES = [
    ("downsample_nonuniform", (9, 11, 13), (4, 5, 6)),
    ("upsample", (5, 6, 7), (9, 8, 13)),
    ("identity", (4, 5, 6), (4, 5, 6)),
    ("mixed_up_down_same", (6, 8, 5), (9, 4, 5)),
    ("size1_input_axis", (1, 6, 7), (3, 4, 5)),
    ("size1_output_axis", (6, 7, 8), (1, 3, 4)),
]


def resize(x: np.ndarray, out_shape) -> np.ndarray:
    t = torch.from_numpy(x)[None, None]
    y = F.interpolate(t, size=tuple(out_shape), mode="trilinear", align_corners=False)
    return y[0, 0].numpy()


def numpy_reference(x: np.ndarray, out_shape) -> np.ndarray:
    """Independent float64 separable implementation of the same formula (check only)."""
    y = x.astype(np.float64)
    for axis, n_out in enumerate(out_shape):
        n_in = y.shape[axis]
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        w = src - i0
        a = np.take(y, i0, axis=axis)
        b = np.take(y, i1, axis=axis)
        shape = [1] * y.ndim
        shape[axis] = n_out
        y = a * (1 - w.reshape(shape)) + b * w.reshape(shape)
    return y


def main() -> int:
    torch.set_num_threads(1)  # deterministic summation order
    rng = np.random.default_rng(20240501)
    cases = []
    for name, in_shape, out_shape in CASES:
        x = (rng.standard_normal(in_shape) * 10.0).astype(np.float32)
        y = resize(x, out_shape)
        assert y.dtype == np.float32 and y.shape == tuple(out_shape)
        ref = numpy_reference(x, out_shape)
        err = float(np.max(np.abs(ref - y)))
        assert err < 1e-4, (name, err)
        if in_shape == out_shape:
            assert np.array_equal(x, y), name
        cases.append({
            "name": name,
            "in_shape": list(in_shape),
            "out_shape": list(out_shape),
            "input": [float(v) for v in x.reshape(-1)],   # C order
            "output": [float(v) for v in y.reshape(-1)],  # float32 values, exact in JSON
        })
        print(f"  {name:24s} {in_shape} -> {out_shape}   max |torch - float64 numpy| = {err:.2e}")

    doc = {
        "torch_version": torch.__version__,
        "mode": "trilinear",
        "align_corners": False,
        "dtype": "float32",
        "cases": cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    # One case per line-group; long value lists stay on single lines.
    parts = [f'  "{k}": {json.dumps(v)}' for k, v in doc.items() if k != "cases"]
    case_txt = ",\n".join(
        "    {" + ", ".join(f"{json.dumps(k)}: {json.dumps(v, allow_nan=False)}" for k, v in c.items()) + "}"
        for c in cases
    )
    OUT.write_text("{\n" + ",\n".join(parts) + ',\n  "cases": [\n' + case_txt + "\n  ]\n}\n")
    json.loads(OUT.read_text())  # sanity: valid JSON
    print(f"wrote {len(cases)} cases to {OUT.relative_to(REPO)} (torch {torch.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
