#!/usr/bin/env python3
"""Generate the NIfTI-1 reader fixtures in ``tests/fixtures/nifti/``.

Setup (once; the venv lives outside the repo):

    python3 -m venv /root/.venvs/adfit-ref
    /root/.venvs/adfit-ref/bin/pip install -r scripts/requirements.txt

Rerun (from the repo root; output is deterministic, byte-identical each run):

    /root/.venvs/adfit-ref/bin/python scripts/make_nifti_fixtures.py           # write + verify
    /root/.venvs/adfit-ref/bin/python scripts/make_nifti_fixtures.py --check   # verify only

What it produces
----------------
* Tiny, non-cubic NIfTI-1 volumes (``.nii``, ``.nii.gz``, one ``.hdr``/``.img``
  pair, one 4D file with a singleton 4th dim) covering every integer/float
  datatype, both byte orders, scl_slope/scl_inter handling, the three affine
  sources (sform, qform, pixdim fallback) and many axis orientations.
* ``bad_*`` files that a reader must reject (listed under ``"malformed"``).
* ``reference.json`` with what nibabel reads from every valid file::

    {"files": {"<filename>": {
        "shape", "datatype", "voxel_size", "affine", "affine_source", "axcodes",
        "scl_slope", "scl_inter", "stats": {"min","max","mean","std","sum"},
        "data",                       # get_fdata() squeezed to 3D, C order
        "canonical": {"shape","voxel_size","affine","axcodes","data"}}},
     "malformed": {"<filename>": "<error kind>: <what is wrong>"}}

  ``data`` is flattened in C order (last axis fastest), i.e. element
  ``[i, j, k]`` of an ``(I, J, K)`` volume is at ``(i*J + j)*K + k``.  Note that
  this is NOT the on-disk order (NIfTI stores the first axis fastest).

Valid files are written byte by byte (nibabel's ``Nifti1Header`` builds the
348-byte header, the voxel bytes are written by hand) so that fields which
``nibabel.save`` would normalise (scl_slope/scl_inter, pixdim[0], junk
sform/qform rows under a zero code) end up on disk exactly as intended.  The
reference values are then taken from loading each file back with nibabel, never
from the in-memory arrays.  Malformed files are written with ``nibabel.save``
and then patched with ``struct``.

Python here is only a fixture generator; nothing in adfit runs it.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import logging
import math
import os
import struct
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.affines import voxel_sizes

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "tests" / "fixtures" / "nifti"
REFERENCE = OUT_DIR / "reference.json"

# World axis (0=x/R-L, 1=y/A-P, 2=z/S-I) and sign for each axis code.
_AXCODE = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}


# --------------------------------------------------------------------------
# helpers: affines, data, writing
# --------------------------------------------------------------------------
def axis_affine(codes: str, zooms, origin) -> np.ndarray:
    """Affine whose voxel axes point towards `codes` (e.g. "PIL")."""
    aff = np.eye(4)
    aff[:3, :3] = 0.0
    for vox_axis, code in enumerate(codes):
        world_axis, sign = _AXCODE[code]
        aff[world_axis, vox_axis] = sign * zooms[vox_axis]
    aff[:3, 3] = origin
    return aff


def rotation(axis, degrees) -> np.ndarray:
    """3x3 rotation matrix (Rodrigues) about `axis` by `degrees`."""
    axis = np.asarray(axis, dtype=float)
    axis = axis / np.linalg.norm(axis)
    t = math.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * (k @ k)


def random_values(dtype, shape, seed: int) -> np.ndarray:
    """Random voxel values suited to `dtype`; integer volumes also contain the
    dtype's min (first voxel on disk) and max (last voxel on disk)."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        scale = 100.0 if dt.itemsize == 4 else 1000.0
        return (rng.standard_normal(shape) * scale).astype(dt)
    info = np.iinfo(dt)
    # Keep most values moderate but use the full range for small types.
    if dt.itemsize <= 2:
        lo, hi = int(info.min), int(info.max)
    elif dt.itemsize == 4:
        lo, hi = max(int(info.min), -(2**31)), min(int(info.max), 2**32 - 1)
    else:
        lo, hi = (0 if info.min == 0 else -(10**12)), 10**12
    arr = rng.integers(lo, hi, size=shape, endpoint=True, dtype=np.int64 if dt != np.uint64 else np.uint64)
    arr = arr.astype(dt)
    flat = arr.reshape(-1, order="F")  # view in on-disk order
    flat[0] = info.min
    flat[-1] = info.max
    return flat.reshape(shape, order="F")


def new_header(raw: np.ndarray, zooms, endian: str = "<", pair: bool = False):
    cls = nib.nifti1.Nifti1PairHeader if pair else nib.Nifti1Header
    hdr = cls(endianness=endian)
    hdr.set_data_dtype(raw.dtype)
    hdr.set_data_shape(raw.shape)
    hdr.set_zooms(tuple(zooms) + (1.0,) * (raw.ndim - len(zooms)))
    hdr.set_xyzt_units("mm", "sec")
    hdr["descrip"] = b"adfit test fixture"
    # Like nibabel.save for unscaled data: NaN slope/inter = "no scaling".
    hdr["scl_slope"], hdr["scl_inter"] = np.nan, np.nan
    return hdr


def set_quaternion(hdr, bcd, qfac, offset, code=1):
    """Write the qform fields directly (no normalisation by nibabel)."""
    hdr["quatern_b"], hdr["quatern_c"], hdr["quatern_d"] = bcd
    hdr["qoffset_x"], hdr["qoffset_y"], hdr["qoffset_z"] = offset
    hdr["pixdim"][0] = qfac
    hdr["qform_code"] = code


def set_srows(hdr, aff, code):
    """Write srow_x/y/z and sform_code directly (a nonzero srow may sit under code 0)."""
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = aff[0], aff[1], aff[2]
    hdr["sform_code"] = code


def header_bytes(hdr) -> bytes:
    bio = io.BytesIO()
    hdr.write_to(bio)  # 348 bytes (+ 4 zero extension bytes for single files)
    return bio.getvalue()


def voxel_bytes(raw: np.ndarray, endian: str) -> bytes:
    # NIfTI stores the first axis fastest (Fortran order).
    return np.asarray(raw, dtype=raw.dtype.newbyteorder(endian)).tobytes(order="F")


def gzip_bytes(data: bytes) -> bytes:
    bio = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=bio, mtime=0) as gz:
        gz.write(data)
    return bio.getvalue()


def write_single(name: str, hdr, raw: np.ndarray) -> None:
    """Write a one-file NIfTI (.nii or .nii.gz) with data at vox_offset."""
    hdr["vox_offset"] = 352
    hb = header_bytes(hdr)
    assert len(hb) == 352, len(hb)
    blob = hb + voxel_bytes(raw, hdr.endianness)
    if name.endswith(".gz"):
        blob = gzip_bytes(blob)
    (OUT_DIR / name).write_bytes(blob)


def write_pair(name: str, hdr, raw: np.ndarray) -> None:
    """Write a .hdr/.img pair (magic ni1, vox_offset 0); `name` is the .hdr."""
    assert name.endswith(".hdr")
    hdr["vox_offset"] = 0
    hb = header_bytes(hdr)
    assert len(hb) == 348, len(hb)
    (OUT_DIR / name).write_bytes(hb)
    (OUT_DIR / (name[:-4] + ".img")).write_bytes(voxel_bytes(raw, hdr.endianness))


# --------------------------------------------------------------------------
# valid fixtures
# --------------------------------------------------------------------------
def make_valid_files() -> list[str]:
    """Write every valid fixture; return the filenames that go in "files"."""
    names = []

    def single(name, raw, hdr):
        write_single(name, hdr, raw)
        names.append(name)

    # 1. uint8, RAS, sform + identical qform (typical scanner output).
    raw = random_values(np.uint8, (5, 6, 7), seed=1)
    hdr = new_header(raw, (0.9, 1.1, 1.3))
    aff = axis_affine("RAS", (0.9, 1.1, 1.3), (-2.0, -3.5, 4.25))
    hdr.set_qform(aff, code=1)
    hdr.set_sform(aff, code=1)
    single("u8_ras.nii", raw, hdr)

    # 2. int8, LPS, sform only (code 2 aligned), qform code 0.
    raw = random_values(np.int8, (4, 3, 5), seed=2)
    hdr = new_header(raw, (1.0, 2.0, 1.5))
    set_srows(hdr, axis_affine("LPS", (1.0, 2.0, 1.5), (10.0, 20.0, -30.0)), code=2)
    single("i8_lps.nii", raw, hdr)

    # 3. int16 little-endian, LAS (radiological FSL-style), sform + qform.
    raw = random_values(np.int16, (6, 5, 4), seed=3)
    hdr = new_header(raw, (2.0, 2.0, 2.5))
    aff = axis_affine("LAS", (2.0, 2.0, 2.5), (5.0, -6.0, -7.0))
    hdr.set_qform(aff, code=1)
    hdr.set_sform(aff, code=4)
    single("i16_las.nii", raw, hdr)

    # 4. int16 big-endian with scl_slope 2.5 / scl_inter -10, PIL sform.
    raw = random_values(np.int16, (5, 4, 6), seed=4)
    hdr = new_header(raw, (1.0, 1.5, 2.0), endian=">")
    set_srows(hdr, axis_affine("PIL", (1.0, 1.5, 2.0), (0.5, 12.0, 8.0)), code=1)
    hdr["scl_slope"], hdr["scl_inter"] = 2.5, -10.0
    single("i16_be_scaled_pil.nii", raw, hdr)

    # 5. uint16 big-endian, ASR sform.
    raw = random_values(np.uint16, (4, 6, 5), seed=5)
    hdr = new_header(raw, (1.25, 0.75, 1.0), endian=">")
    set_srows(hdr, axis_affine("ASR", (1.25, 0.75, 1.0), (-1.0, -2.0, -3.0)), code=1)
    single("u16_be_asr.nii", raw, hdr)

    # 6. int32 big-endian, SLP sform.
    raw = random_values(np.int32, (6, 4, 5), seed=6)
    hdr = new_header(raw, (3.0, 1.0, 2.0), endian=">")
    set_srows(hdr, axis_affine("SLP", (3.0, 1.0, 2.0), (7.0, 8.0, -9.0)), code=1)
    single("i32_be_slp.nii", raw, hdr)

    # 7. uint32, no sform/qform (both codes 0) -> nibabel's pixdim fallback.
    #    The srow/quatern fields hold junk that must be ignored.
    raw = random_values(np.uint32, (5, 6, 4), seed=7)
    hdr = new_header(raw, (1.5, 2.0, 3.0))
    set_srows(hdr, axis_affine("PIL", (9.0, 9.0, 9.0), (1.0, 2.0, 3.0)), code=0)
    set_quaternion(hdr, (0.5, 0.5, 0.5), 1.0, (11.0, 12.0, 13.0), code=0)
    single("u32_pixdim_fallback.nii", raw, hdr)

    # 8. int64 with scl_slope 0 (= no scaling; inter 7 must be ignored), RPI.
    raw = random_values(np.int64, (3, 5, 4), seed=8)
    hdr = new_header(raw, (1.0, 1.0, 1.0))
    set_srows(hdr, axis_affine("RPI", (1.0, 1.0, 1.0), (-4.0, 5.0, 6.0)), code=1)
    hdr["scl_slope"], hdr["scl_inter"] = 0.0, 7.0
    single("i64_slope0_rpi.nii", raw, hdr)

    # 9. uint64 with scl_slope NaN (= no scaling; inter 5 ignored), IAL.
    raw = random_values(np.uint64, (4, 5, 3), seed=9)
    hdr = new_header(raw, (1.0, 2.0, 1.0))
    set_srows(hdr, axis_affine("IAL", (1.0, 2.0, 1.0), (3.0, -3.0, 3.0)), code=1)
    hdr["scl_slope"], hdr["scl_inter"] = np.nan, 5.0
    single("u64_slopenan_ial.nii", raw, hdr)

    # 10. float32 big-endian, qform only: oblique rotation quaternion, qfac -1.
    #     sform_code 0 with a (different) srow that must be ignored.
    raw = random_values(np.float32, (5, 6, 7), seed=10)
    hdr = new_header(raw, (1.2, 0.9, 2.0), endian=">")
    set_quaternion(hdr, (0.25, -0.4, 0.3), -1.0, (-20.0, 15.5, 3.25), code=1)
    set_srows(hdr, axis_affine("RAS", (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), code=0)
    single("f32_be_qform_qfac-1.nii", raw, hdr)

    # 11. Same qform but qfac (pixdim[0]) = 0: nibabel treats it as +1.
    raw = random_values(np.float32, (4, 3, 5), seed=11)
    hdr = new_header(raw, (1.2, 0.9, 2.0))
    set_quaternion(hdr, (0.25, -0.4, 0.3), 0.0, (-20.0, 15.5, 3.25), code=1)
    single("f32_qform_qfac0.nii", raw, hdr)

    # 12. float64 big-endian, oblique sform (code 4) + a different qform
    #     (plain RAS, code 1, different zooms): the sform must win.
    raw = random_values(np.float64, (4, 5, 6), seed=12)
    zooms = (1.1, 0.8, 1.6)
    base = axis_affine("ASR", zooms, (0.0, 0.0, 0.0))
    obl = np.eye(4)
    obl[:3, :3] = rotation((1.0, -2.0, 0.5), 17.0) @ base[:3, :3]
    obl[:3, 3] = (-12.5, 30.0, -4.0)
    hdr = new_header(raw, zooms, endian=">")
    hdr.set_qform(axis_affine("RAS", (2.0, 2.0, 2.0), (1.0, 1.0, 1.0)), code=1)  # sets pixdim 2,2,2
    set_srows(hdr, obl, code=4)
    single("f64_be_oblique_sform.nii", raw, hdr)

    # 13. int16 gzipped, scl_slope 1 / scl_inter 0 (identity scaling), LPI.
    raw = random_values(np.int16, (6, 7, 5), seed=13)
    hdr = new_header(raw, (1.0, 1.0, 1.2))
    aff = axis_affine("LPI", (1.0, 1.0, 1.2), (2.0, 3.0, 4.0))
    hdr.set_qform(aff, code=1)
    hdr.set_sform(aff, code=1)
    hdr["scl_slope"], hdr["scl_inter"] = 1.0, 0.0
    single("i16_slope1_lpi.nii.gz", raw, hdr)

    # 14. .hdr/.img pair (magic ni1), int16 little-endian, LIA sform.
    raw = random_values(np.int16, (5, 3, 4), seed=14)
    hdr = new_header(raw, (1.0, 1.5, 0.5), pair=True)
    set_srows(hdr, axis_affine("LIA", (1.0, 1.5, 0.5), (-1.0, 0.0, 1.0)), code=2)
    write_pair("i16_pair_lia.hdr", hdr, raw)
    names.append("i16_pair_lia.hdr")

    # 15. float32 4D with singleton 4th dim, shape (5, 6, 7, 1), LPS sform.
    raw = random_values(np.float32, (5, 6, 7, 1), seed=15)
    hdr = new_header(raw, (1.0, 1.25, 1.5))
    aff = axis_affine("LPS", (1.0, 1.25, 1.5), (6.0, 7.0, -8.0))
    hdr.set_qform(aff, code=1)
    hdr.set_sform(aff, code=1)
    single("f32_4d_singleton_lps.nii", raw, hdr)

    return names


# --------------------------------------------------------------------------
# malformed fixtures
# --------------------------------------------------------------------------
def _base_nii(shape=(4, 3, 5), dtype=np.int16, seed=100) -> bytes:
    """A valid little-endian .nii written by nibabel.save, as bytes."""
    raw = random_values(dtype, shape, seed)
    img = nib.Nifti1Image(raw, axis_affine("RAS", (1, 1, 1), (0, 0, 0)))
    img.header.set_data_dtype(dtype)
    bio = io.BytesIO()
    img.to_file_map({"image": nib.FileHolder(fileobj=bio), "header": nib.FileHolder(fileobj=bio)})
    return bio.getvalue()


def _patch(blob: bytes, offset: int, fmt: str, *values) -> bytes:
    b = bytearray(blob)
    struct.pack_into(fmt, b, offset, *values)
    return bytes(b)


def make_malformed_files() -> dict[str, str]:
    bad: dict[str, str] = {}
    good = _base_nii()  # 4x3x5 int16, 352-byte header + 120 bytes data
    n_data = 4 * 3 * 5 * 2
    assert len(good) == 352 + n_data

    def put(name, blob, why):
        (OUT_DIR / name).write_bytes(blob)
        bad[name] = why

    put("bad_truncated_data.nii", good[:-30],
        f"truncated data: header implies {n_data} bytes of int16 voxels after offset 352, only {n_data - 30} present")
    gz = gzip_bytes(good)
    put("bad_truncated.nii.gz", gz[: len(gz) // 2],
        "truncated gzip: compressed stream cut in half (no gzip trailer, data short)")
    put("bad_truncated_header.nii", good[:200],
        "truncated header: file is 200 bytes, shorter than the 348-byte NIfTI-1 header")
    put("bad_magic.nii", _patch(good, 344, "4s", b"abc\0"),
        "bad magic: magic is 'abc\\0', not 'n+1\\0' or 'ni1\\0'")
    put("bad_bitpix.nii", _patch(good, 72, "<h", 32),
        "bitpix mismatch: datatype int16 (code 4) needs bitpix 16, header says 32")
    put("bad_huge_dims.nii", _patch(good, 40, "<8h", 3, 30000, 30000, 30000, 1, 1, 1, 1),
        "size mismatch: dims claim 30000x30000x30000 int16 (~54 TB) but the file holds 120 bytes of data")
    put("bad_negative_dim.nii", _patch(good, 40, "<8h", 3, 4, -3, 5, 1, 1, 1, 1),
        "invalid dim: dim[2] = -3")
    put("bad_vox_offset.nii", _patch(good, 108, "<f", 100.0),
        "invalid vox_offset: 100 lies inside the 348-byte header (single-file minimum is 352)")
    put("bad_sizeof_hdr_540.nii", _patch(good, 0, "<i", 540),
        "unsupported header: sizeof_hdr is 540 (NIfTI-2), only NIfTI-1 (348) is supported")
    put("bad_not_gzip.nii.gz",
        b"this is not gzip data\n" + np.random.default_rng(101).integers(0, 256, 200, dtype=np.uint8).tobytes(),
        "not gzip: .nii.gz file does not start with the gzip magic 1f 8b")

    # complex64 (datatype 32): a fully consistent file, just an unsupported type.
    c = random_values(np.float32, (4, 3, 5), seed=102) + 1j * random_values(np.float32, (4, 3, 5), seed=103)
    img = nib.Nifti1Image(c.astype(np.complex64), axis_affine("RAS", (1, 1, 1), (0, 0, 0)))
    nib.save(img, str(OUT_DIR / "bad_complex64.nii"))
    bad["bad_complex64.nii"] = "unsupported datatype: complex64 (code 32, bitpix 64)"

    # 4D with three volumes: consistent file, but not a single 3D volume.
    v = random_values(np.int16, (4, 3, 5, 3), seed=104)
    nib.save(nib.Nifti1Image(v, axis_affine("RAS", (1, 1, 1), (0, 0, 0))), str(OUT_DIR / "bad_4d_three_volumes.nii"))
    bad["bad_4d_three_volumes.nii"] = "not 3D: dim[0]=4 with dim[4]=3 (three volumes), only 3D or 4D with dim[4]=1 accepted"

    # .hdr whose .img is missing.
    pair = nib.Nifti1Pair(random_values(np.int16, (4, 3, 5), seed=105), axis_affine("RAS", (1, 1, 1), (0, 0, 0)))
    nib.save(pair, str(OUT_DIR / "bad_missing_img.hdr"))
    (OUT_DIR / "bad_missing_img.img").unlink()
    bad["bad_missing_img.hdr"] = "missing image file: bad_missing_img.img does not exist"

    return bad


# --------------------------------------------------------------------------
# reference values
# --------------------------------------------------------------------------
def _floats(a) -> list:
    return [float(x) for x in np.asarray(a, dtype=np.float64).reshape(-1)]


def _spatial(img) -> tuple[np.ndarray, list[int]]:
    """get_fdata() with the singleton 4th dim dropped; returns (data, shape)."""
    data = img.get_fdata()
    if data.ndim == 4:
        assert data.shape[3] == 1, data.shape
        data = data[..., 0]
    assert data.ndim == 3
    return data, [int(s) for s in data.shape]


def affine_source(hdr) -> str:
    if hdr["sform_code"] != 0:
        return "sform"
    if hdr["qform_code"] != 0:
        return "qform"
    return "pixdim"


def disk_header(name: str):
    """The header as stored on disk (parsed with nibabel's usual checks/fixes).

    Needed because ``nib.load`` *clears* scl_slope/scl_inter in ``img.header``
    (the scaling moves into ``img.dataobj``), so ``img.header.get_slope_inter()``
    is always (None, None) on a loaded image."""
    cls = nib.nifti1.Nifti1PairHeader if name.endswith(".hdr") else nib.Nifti1Header
    with nib.openers.ImageOpener(str(OUT_DIR / name)) as f:
        return cls.from_fileobj(f)


def describe(name: str, img) -> dict:
    data, shape = _spatial(img)
    disk = disk_header(name)
    slope, inter = disk.get_slope_inter()
    # These are the values ArrayProxy really applies (1, 0 when unscaled).
    assert (slope, inter) == (None, None) or (slope, inter) == (img.dataobj.slope, img.dataobj.inter)
    canon = nib.as_closest_canonical(img)
    cdata, cshape = _spatial(canon)
    return {
        "shape": shape,
        "datatype": img.get_data_dtype().name,
        "voxel_size": _floats(voxel_sizes(img.affine)),
        "affine": [_floats(row) for row in img.affine],
        "affine_source": affine_source(disk),
        "axcodes": list(nib.aff2axcodes(img.affine)),
        "scl_slope": None if slope is None else float(slope),
        "scl_inter": None if inter is None else float(inter),
        "stats": {
            "min": float(data.min()),
            "max": float(data.max()),
            "mean": float(data.mean()),
            "std": float(data.std()),
            "sum": float(data.sum()),
        },
        "data": _floats(data),  # reshape(-1) is C order
        "canonical": {
            "shape": cshape,
            "voxel_size": _floats(voxel_sizes(canon.affine)),
            "affine": [_floats(row) for row in canon.affine],
            "axcodes": list(nib.aff2axcodes(canon.affine)),
            "data": _floats(cdata),
        },
    }


def load(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "vox offset not divisible by 16"
        return nib.load(str(OUT_DIR / name))


def dump_json(obj, indent=0) -> str:
    """JSON with dicts indented but lists of scalars kept on one line."""
    pad = " " * indent
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f'{pad}  {json.dumps(k)}: {dump_json(v, indent + 2)}' for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(x, (dict, list)) for x in obj):
        if all(isinstance(x, list) and not any(isinstance(y, (dict, list)) for y in x) for x in obj):
            return "[" + ", ".join(json.dumps(x, allow_nan=False) for x in obj) + "]"
        items = [f"{pad}  {dump_json(x, indent + 2)}" for x in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, allow_nan=False)


# --------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------
def spec_affine(name: str) -> np.ndarray:
    """Affine computed straight from the header bytes, independently of
    nibabel: NIfTI-1 method 3 (sform) > method 2 (qform; qfac = -1 iff
    pixdim[0] < 0, so 0 counts as +1) > nibabel's pixdim fallback (x flipped,
    origin at the volume centre)."""
    raw = (OUT_DIR / name).read_bytes()
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
    e = "<" if struct.unpack_from("<i", raw, 0)[0] == 348 else ">"
    dim = struct.unpack_from(e + "8h", raw, 40)
    pixdim = struct.unpack_from(e + "8f", raw, 76)
    qform_code, sform_code = struct.unpack_from(e + "2h", raw, 252)
    aff = np.eye(4)
    if sform_code > 0:
        aff[:3] = np.array(struct.unpack_from(e + "12f", raw, 280), dtype=np.float64).reshape(3, 4)
    elif qform_code > 0:
        b, c, d, qx, qy, qz = (float(v) for v in struct.unpack_from(e + "6f", raw, 256))
        a = math.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
        r = np.array([
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
        ])
        qfac = -1.0 if pixdim[0] < 0 else 1.0
        aff[:3, :3] = r @ np.diag([pixdim[1], pixdim[2], qfac * pixdim[3]])
        aff[:3, 3] = (qx, qy, qz)
    else:
        zooms = np.array(pixdim[1:4], dtype=np.float64)
        aff[:3, :3] = np.diag(zooms * [-1, 1, 1])
        aff[:3, 3] = -aff[:3, :3] @ ((np.array(dim[1:4]) - 1) / 2.0)
    return aff


def _close(a, b, what):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    assert np.allclose(a, b, rtol=1e-12, atol=1e-12), f"{what}: values differ"


def verify(ref: dict) -> None:
    """Reload every fixture with nibabel and check it against `ref`."""
    listed = set(ref["files"]) | set(ref["malformed"])
    on_disk = {p.name for p in OUT_DIR.iterdir() if p.name != "reference.json"}
    companions = {n[:-4] + ".img" for n in ref["files"] if n.endswith(".hdr")}
    assert on_disk == listed | companions, f"unlisted/missing files: {on_disk ^ (listed | companions)}"

    for name, exp in ref["files"].items():
        img = load(name)
        got = describe(name, img)
        data, _ = _spatial(img)
        for key in ("shape", "datatype", "affine_source", "axcodes", "scl_slope", "scl_inter"):
            assert got[key] == exp[key], f"{name}: {key} {got[key]} != {exp[key]}"
        _close(got["voxel_size"], exp["voxel_size"], f"{name} voxel_size")
        _close(got["affine"], exp["affine"], f"{name} affine")
        assert np.allclose(spec_affine(name), exp["affine"], rtol=0, atol=1e-6), f"{name}: spec affine"
        _close(got["data"], exp["data"], f"{name} data")
        _close(np.array(exp["data"]).reshape(exp["shape"]), data, f"{name} C-order layout")
        for k in ("min", "max", "mean", "std", "sum"):
            _close(got["stats"][k], exp["stats"][k], f"{name} stats.{k}")
        for k in ("shape", "axcodes"):
            assert got["canonical"][k] == exp["canonical"][k], f"{name}: canonical.{k}"
        for k in ("voxel_size", "affine", "data"):
            _close(got["canonical"][k], exp["canonical"][k], f"{name} canonical.{k}")
        # Canonical must be RAS-ish, and its data the reoriented original.
        assert exp["canonical"]["axcodes"] == ["R", "A", "S"], name
        ornt = nib.orientations.io_orientation(img.affine)
        _close(nib.orientations.apply_orientation(data, ornt).reshape(-1), exp["canonical"]["data"],
               f"{name} canonical = apply_orientation(data)")
        assert not any(isinstance(x, float) and not math.isfinite(x) for x in exp["data"]), name
        print(f"  ok   {name:28s} {exp['datatype']:8s} {str(exp['shape']):12s} "
              f"{exp['affine_source']:6s} {''.join(exp['axcodes'])} -> canonical {exp['canonical']['shape']}")

    logging.getLogger("nibabel").setLevel(logging.CRITICAL)  # we report outcomes ourselves
    for name, why in ref["malformed"].items():
        outcome = _nibabel_outcome(name)
        print(f"  bad  {name:28s} nibabel: {outcome}")


def _nibabel_outcome(name: str) -> str:
    """How nibabel reacts to a malformed file.  Asserts that nibabel either
    raises, or loads something that is clearly outside what adfit accepts
    (judged on the raw header bytes, since nibabel silently fixes some fields
    such as bitpix while loading)."""
    path = OUT_DIR / name
    cls = nib.Nifti1Pair if name.endswith(".hdr") else nib.Nifti1Image
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            img = cls.from_filename(str(path))
            img.get_fdata()
    except Exception as e:  # noqa: BLE001 - we want whatever nibabel raises
        msg = str(e).splitlines()[0] if str(e) else ""
        return f"raises {type(e).__name__}: {msg.replace(str(OUT_DIR) + '/', '')[:90]}"

    raw = path.read_bytes()[:348]
    (datatype, bitpix) = struct.unpack_from("<hh", raw, 70)
    dim = struct.unpack_from("<8h", raw, 40)
    (sizeof_hdr,) = struct.unpack_from("<i", raw, 0)
    problems = []
    if sizeof_hdr != 348:
        problems.append(f"on-disk sizeof_hdr {sizeof_hdr} != 348 (nibabel fixes it)")
    if datatype in (32, 1792, 2048):
        problems.append(f"datatype code {datatype} is complex")
    if dim[0] == 4 and dim[4] != 1:
        problems.append(f"dim[4] = {dim[4]} volumes")
    expected_bitpix = img.get_data_dtype().itemsize * 8
    if bitpix != expected_bitpix:
        problems.append(f"on-disk bitpix {bitpix} != {expected_bitpix} (nibabel fixes it)")
    assert problems, f"{name}: nibabel accepted it and no problem was detected"
    msgs = "; ".join(sorted({str(x.message)[:70] for x in w}))
    return "ACCEPTED, but " + ", ".join(problems) + (f" [warnings: {msgs}]" if msgs else "")


# --------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only verify existing fixtures")
    args = ap.parse_args()

    if not args.check:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        for p in OUT_DIR.iterdir():  # start clean so no stale files linger
            p.unlink()
        names = make_valid_files()
        malformed = make_malformed_files()
        ref = {"files": {n: describe(n, load(n)) for n in names}, "malformed": malformed}
        REFERENCE.write_text(dump_json(ref) + "\n")
        print(f"wrote {len(names)} valid + {len(malformed)} malformed fixtures to {OUT_DIR.relative_to(REPO)}")

    ref = json.loads(REFERENCE.read_text())
    print(f"verifying against nibabel {nib.__version__}, numpy {np.__version__}")
    verify(ref)
    total = sum(p.stat().st_size for p in OUT_DIR.iterdir())
    print(f"all fixtures verified; {len(os.listdir(OUT_DIR))} files, {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
