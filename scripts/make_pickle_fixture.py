#!/usr/bin/env python3
"""Write ``tests/fixtures/model/pretrained_vit_bf16.bin`` (+ ``.json``): fixture 1's ViT as a
bfloat16 PyTorch pickle, laid out like M3D-CLIP's ``pretrained_ViT.bin``.

M3D-CLIP's ``pretrained_ViT.bin`` is ``torch.save(model.vision_encoder.state_dict(), path)``: a
``collections.OrderedDict`` (with the ``_metadata`` attribute every ``nn.Module.state_dict()``
carries) whose keys are the vision encoder's own names, i.e. without the ``vision_encoder.``
prefix, in the default zip-based ``torch.save`` format.  This script builds the same thing from
``tests/fixtures/model/vit.safetensors``:

* the 28 ``vision_encoder.*`` float32 tensors are loaded into the MONAI ViT of fixture 1
  (``generate_reference.VIT_CFG``), the module is cast with ``.to(torch.bfloat16)`` (round to
  nearest even), and ``state_dict()`` is taken, so key order and ``_metadata`` are what
  ``nn.Module.state_dict()`` produces;
* keys M3D-CLIP's checkpoint lacks (MONAI >= 1.4's ``blocks.{i}.norm_cross_attn.*`` and
  ``classification_head.*``) are deleted, and so are their modules' ``_metadata`` entries (also
  ``cross_attn`` and ``attn.to_{q,k,v}``, modules MONAI 1.3 does not have); the remaining key set
  is asserted to be exactly the one of ``vit.safetensors``;
* ``torch.save(state_dict, path)``.

``pretrained_vit_bf16.json`` records, per key (in file order): shape, dtype, the zip record of its
storage, the first 4 values (exact, as float64), ``first4_bits`` (the raw bf16 bit patterns), the
correctly rounded float64 sum of all values (``math.fsum``), ``bits_sum`` (the integer sum of all
raw u16 bit patterns, an exact check), the sha256 of the raw little-endian bf16 bytes, and the max
abs difference from the float32 source.  It also lists the zip records and the file's sha256.

Run (from the repo root, after ``generate_reference.py``; nothing is downloaded):

    /root/.venvs/adfit-ref/bin/python scripts/make_pickle_fixture.py [--out tests/fixtures/model]

Deterministic: two runs give byte-identical files (checked by ``--check``, which writes twice
into a temporary directory and compares sha256).  Python here is only a fixture generator.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import importlib.metadata as md
import json
import math
import pickle
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_reference import DEFAULT_OUT, VIT_CFG, m3d_vit_keys, sha256  # noqa: E402

PREFIX = "vision_encoder."
NAME = "pretrained_vit_bf16"
# Modules of MONAI 1.6.1's ViT that M3D-CLIP's ViT (MONAI 1.3.0) does not have.
NOT_IN_M3D = ("norm_cross_attn", "cross_attn", "to_q", "to_k", "to_v", "classification_head")


def build_state_dict(src: Path) -> tuple[collections.OrderedDict, dict]:
    from monai.networks.nets import ViT

    st = load_file(str(src))
    f32 = {k[len(PREFIX):]: v for k, v in st.items() if k.startswith(PREFIX)}
    assert sorted(f32) == sorted(m3d_vit_keys(VIT_CFG["num_layers"])), sorted(f32)

    torch.manual_seed(0)  # the constructor's random init is overwritten below; seed it anyway
    vit = ViT(**VIT_CFG).eval()
    missing, unexpected = vit.load_state_dict(f32, strict=False)
    assert not unexpected, unexpected
    assert all(any(part in k.split(".") for part in NOT_IN_M3D) for k in missing), missing
    vit = vit.to(torch.bfloat16)

    sd = vit.state_dict()
    for k in [k for k in sd if k not in f32]:
        del sd[k]
    meta = sd._metadata  # type: ignore[attr-defined]
    for k in [k for k in meta if any(part in k.split(".") for part in NOT_IN_M3D)]:
        del meta[k]
    assert list(sd) and sorted(sd) == sorted(f32)
    assert isinstance(sd, collections.OrderedDict)
    for k, t in sd.items():
        assert t.dtype == torch.bfloat16 and t.is_contiguous() and t.storage_offset() == 0, k
        assert torch.equal(t, f32[k].to(torch.bfloat16)), k
    return sd, f32


def storage_records(path: Path) -> dict:
    """key -> storage key, read back from data.pkl without torch (what a Rust reader sees)."""
    with zipfile.ZipFile(path) as z:
        pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        data = z.read(pkl)

    class Rebuilt:
        def __init__(self, storage, offset, size, stride, *rest):
            self.storage, self.offset, self.size, self.stride = storage, offset, list(size), list(stride)

    class U(pickle.Unpickler):
        def persistent_load(self, pid):
            kind, storage_type, key, location, numel = pid
            assert kind == "storage" and location == "cpu", pid
            return {"key": key, "type": getattr(storage_type, "__name__", str(storage_type)), "numel": numel}

        def find_class(self, module, name):
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return Rebuilt
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if module == "torch" and name.endswith("Storage"):
                return type(name, (), {})
            raise pickle.UnpicklingError(f"unexpected global {module}.{name}")

    obj = U(__import__("io").BytesIO(data)).load()
    return {k: v for k, v in obj.items()}


def write(out: Path) -> Path:
    src = out / "vit.safetensors"
    sd, f32 = build_state_dict(src)
    path = out / f"{NAME}.bin"
    torch.save(sd, path)

    back = torch.load(path, map_location="cpu", weights_only=True)
    assert list(back) == list(sd)
    assert all(torch.equal(back[k], sd[k]) and back[k].dtype == torch.bfloat16 for k in sd)
    rec = storage_records(path)
    assert list(rec) == list(sd)

    with zipfile.ZipFile(path) as z:
        records = [{"name": i.filename, "bytes": i.file_size, "compress_type": i.compress_type}
                   for i in z.infolist()]
    tensors = {}
    for k, t in sd.items():
        r = rec[k]
        assert r.offset == 0 and r.size == list(t.shape) and r.storage["numel"] == t.numel(), k
        assert r.storage["type"] == "BFloat16Storage", r.storage
        bits = t.contiguous().view(torch.int16).to(torch.int64) & 0xFFFF
        raw = t.contiguous().view(torch.uint8).numpy().tobytes()  # little-endian (byteorder record)
        vals = t.to(torch.float64).flatten().tolist()
        tensors[k] = {
            "shape": list(t.shape),
            "dtype": "bfloat16",
            "storage": r.storage["key"],
            "record": f"{NAME}/data/{r.storage['key']}",
            "stride": r.stride,
            "first4": vals[:4],
            "first4_bits": [f"0x{b:04x}" for b in bits.flatten()[:4].tolist()],
            "sum": math.fsum(vals),
            "bits_sum": int(bits.sum().item()),
            "sha256_bf16_le": hashlib.sha256(raw).hexdigest(),
            "max_abs_diff_from_f32": (t.to(torch.float32) - f32[k]).abs().max().item(),
        }
    info = {
        "description": "fixture 1's ViT (vit.safetensors, vision_encoder.* with the prefix stripped) as a bfloat16 "
                       "PyTorch pickle laid out like M3D-CLIP's pretrained_ViT.bin; see README.md",
        "source": "vit.safetensors",
        "source_sha256": sha256(src),
        "file": path.name,
        "file_bytes": path.stat().st_size,
        "file_sha256": sha256(path),
        "format": "torch.save default (zip): <archive>/data.pkl (pickle protocol 2), <archive>/data/<storage key> "
                  "(raw little-endian bytes), .format_version, .storage_alignment, byteorder, version, "
                  ".data/serialization_id; records stored uncompressed",
        "archive": NAME,
        "container": "collections.OrderedDict with a _metadata attribute (nn.Module.state_dict()), restored by the "
                     "pickle BUILD opcode",
        "tensor_rebuild": "torch._utils._rebuild_tensor_v2(storage, offset 0, size, stride, False, OrderedDict())",
        "cast": "float32 -> bfloat16 by nn.Module.to(torch.bfloat16): round to nearest, ties to even",
        "sum_note": "sum = math.fsum of the bf16 values (correctly rounded float64); bits_sum = integer sum of the raw "
                    "u16 bit patterns",
        "keys": list(sd),
        "metadata_modules": list(sd._metadata),  # type: ignore[attr-defined]
        "zip_records": records,
        "tensors": tensors,
        "versions": {p: md.version(p) for p in ("torch", "monai", "safetensors")},
    }
    (out / f"{NAME}.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true", help="also write twice to a temp dir and compare sha256")
    args = ap.parse_args()
    path = write(args.out)
    for p in (path, path.with_suffix(".json")):
        print(f"{p.stat().st_size:>10}  {sha256(p)}  {p}")
    if args.check:
        src = args.out / "vit.safetensors"
        digests = []
        for _ in range(2):
            with tempfile.TemporaryDirectory() as d:
                (Path(d) / src.name).write_bytes(src.read_bytes())
                q = write(Path(d))
                digests.append((sha256(q), sha256(q.with_suffix(".json"))))
        assert digests[0] == digests[1] == (sha256(path), sha256(path.with_suffix(".json"))), digests
        print("deterministic: 3 writes, identical sha256")


if __name__ == "__main__":
    main()
