#!/usr/bin/env python3
"""Make an adfit backbone directory from RadFM's checkpoint, without loading its LLaMA.

RadFM (HF chaoyi-wu/RadFM) ships one PyTorch pickle, ``pytorch_model.bin`` (after unzipping
RadFM.zip + RadFM.z01-z04), holding LLaMA-13B and, under ``embedding_layer.vision_encoder.*``,
its 3D ViT. This script memory-maps the pickle, keeps only the ViT's tensors and writes:

* ``model.safetensors``: the ViT under ``vision_encoder.`` with RadFM's own names (float32), plus
  what RadFM never had and adfit needs around it, drawn once here from ``--seed``:
  ``vision_encoder.cls_token`` (the learnable CLS the method prepends, as VPT does; normal, std
  0.02), ``mm_vision_proj`` / ``mm_language_proj`` (PyTorch's default Linear initialisation) and
  ``logit_scale`` = ln(1/0.07). RadFM has no contrastive head, so zero-shot with these
  projections is chance: the method trains its own.
* ``config.json``: ``"model_type": "radfm"`` and the ViT's shape, read from the tensors (the
  position tables give the native grid), and the text tower adfit pairs it with
  (``--text-model``, default bert-base-uncased: the paper's "12-layer BERT"; RadFM has none).

Usage (the venv of scripts/requirements.txt):

    python scripts/extract_radfm.py RadFM/pytorch_model.bin backbones/radfm

Then ``adfit params --backbone backbones/radfm`` and ``adfit finetune --backbone backbones/radfm``.
``--read-patch 4,16,16`` makes a directory that reads 128^3 volumes in 4x16x16 patches (a 32x8x8 grid
of 2,048 tokens, as M3D's) instead of RadFM's 4x32x32 (32x4x4, 512 tokens): ``config.json`` then
holds both patches and adfit resamples the patch embedding when it loads the weights.
The text model's folder is found as for any backbone (``--text-model-dir`` / ``ADFIT_TEXT_MODELS``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

PREFIX = "embedding_layer.vision_encoder."


def vit_shape(vit: dict) -> dict:
    """The ViT's configuration, read from its tensors (RadFM's names, no prefix)."""
    layers = sorted({int(k.split(".")[2]) for k in vit if k.startswith("transformer.layers.")})
    if layers != list(range(len(layers))) or not layers:
        raise SystemExit(f"transformer.layers.* are not 0..n-1: {layers[:5]}...")
    hidden, patch_dim = vit["to_patch_embedding.2.weight"].shape
    qkv = vit["transformer.layers.0.0.fn.to_qkv.weight"].shape[0]
    mlp = vit["transformer.layers.0.1.fn.net.0.weight"].shape[0]
    rows = {a: vit[f"pos_embedding.{a}_embed.weight"].shape[0] for a in ("row", "col", "dep")}
    return {"hidden": hidden, "patch_dim": patch_dim, "attention": qkv // 3, "mlp": mlp, "layers": len(layers),
            "rows": rows}


def extract(state: dict, out: Path, *, patch=(4, 32, 32), heads=8, text_model="bert-base-uncased",
            text_hidden=768, projection_dim=768, seed=0, read_patch=None) -> dict:
    """Write the backbone directory ``out`` from a state dict holding ``embedding_layer.vision_encoder.*``
    (or already-stripped ViT keys). ``patch`` is the checkpoint's (D, H, W) patch; ``read_patch``
    another in-plane patch adfit reads volumes with (its embedding resampled when loaded, FlexiViT-style).
    Returns the config written."""
    vit = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    if not vit:
        vit = {k: v for k, v in state.items() if k.startswith(("to_patch_embedding.", "pos_embedding.", "transformer."))}
    if not vit:
        raise SystemExit(f"no {PREFIX}* tensors: is this RadFM's pytorch_model.bin?")
    s = vit_shape(vit)
    pd, ph, pw = patch
    channels = s["patch_dim"] // (pd * ph * pw)
    if channels * pd * ph * pw != s["patch_dim"]:
        raise SystemExit(f"patch {patch} does not divide the patch embedding's {s['patch_dim']} inputs")
    g = torch.Generator().manual_seed(seed)
    h = s["hidden"]
    tensors = {f"vision_encoder.{k}": v.detach().to(torch.float32).contiguous() for k, v in sorted(vit.items())}
    tensors["vision_encoder.cls_token"] = 0.02 * torch.randn((1, 1, h), generator=g)

    def linear(d_in: int, d_out: int, name: str):
        bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default (kaiming_uniform a=sqrt(5)) bounds
        tensors[f"{name}.weight"] = (torch.rand((d_out, d_in), generator=g) * 2 - 1) * bound
        tensors[f"{name}.bias"] = (torch.rand((d_out,), generator=g) * 2 - 1) * bound

    linear(h, projection_dim, "mm_vision_proj")
    linear(text_hidden, projection_dim, "mm_language_proj")
    tensors["logit_scale"] = torch.tensor(math.log(1 / 0.07), dtype=torch.float32)
    r = s["rows"]
    rd, rh, rw = read_patch or (pd, ph, pw)
    config = {
        "model_type": "radfm",
        # (D, H, W) spanned by the position tables at the patch volumes are read with.
        "img_size": [r["dep"] * rd, r["row"] * rh, r["col"] * rw],
        "patch_size": [rd, rh, rw],
        "hidden_size": h,
        "mlp_dim": s["mlp"],
        "num_layers": s["layers"],
        "num_heads": heads,
        "head_dim": s["attention"] // heads,
        "in_channels": channels,
        "language_model_name_or_path": text_model,
        "max_text_len": 128,
        "projection_dim": projection_dim,
        "extracted_with": {"script": "scripts/extract_radfm.py", "seed": seed},
    }
    if read_patch and tuple(read_patch) != (pd, ph, pw):
        config["checkpoint_patch_size"] = [pd, ph, pw]
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tmp = out / "model.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
    tmp.rename(out / "model.safetensors")
    return config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", type=Path, help="RadFM's pytorch_model.bin (or a .safetensors of its ViT)")
    ap.add_argument("out", type=Path, help="backbone directory to write")
    ap.add_argument("--patch", default="4,32,32", help="patch D,H,W (RadFM: frame_patch_size 4, 32×32 in-plane)")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--text-model", default="bert-base-uncased")
    ap.add_argument("--text-hidden", type=int, default=768)
    ap.add_argument("--projection-dim", type=int, default=768)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--read-patch", default=None,
                    help="read volumes with this patch instead, e.g. 4,16,16 (grid 32x8x8 at 128^3 instead of "
                         "32x4x4): the in-plane patch embedding is resampled when adfit loads it")
    a = ap.parse_args()
    if a.checkpoint.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(a.checkpoint))
    else:
        state = torch.load(a.checkpoint, map_location="cpu", mmap=True, weights_only=True)
    cfg = extract(state, a.out, patch=tuple(int(p) for p in a.patch.split(",")), heads=a.heads,
                  text_model=a.text_model, text_hidden=a.text_hidden, projection_dim=a.projection_dim, seed=a.seed,
                  read_patch=tuple(int(p) for p in a.read_patch.split(",")) if a.read_patch else None)
    print(json.dumps(cfg, indent=2))


if __name__ == "__main__":
    main()
