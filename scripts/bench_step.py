#!/usr/bin/env python3
"""PyTorch side of adfit's training-step throughput benchmark (the Rust side is
``cargo bench --bench step``, ``benches/step.rs``; ``scripts/bench_step.sh`` runs both and prints
ratios).

One training step of the method, exactly as ``generate_reference.py``'s ``AdfitRef`` computes
it: the frozen MONAI ViT with 20 deep visual prompts per layer and the [MMSE] token, the frozen
HF BERT with 30 text prompts after [CLS] ([CLS] pooling), ``f_v``/``f_t``, multi-head
cross-attention both ways, scaled cosine logits, symmetric cross-entropy + 0.5 · MSE on MMSE,
backward, and an AdamW step on the trainable parameters. Random weights (the speed does not
depend on them), random volumes, texts of ``--tokens`` ids.

Shapes (``--shape``):
* ``phantom``: adfit's own backbone (backbones/phantom-64): 64³ input, 16³ patches (64 tokens),
  width 64, 4 ViT blocks, 2 BERT layers of width 64; batch 8.
* ``m3d``: M3D-CLIP: 128³ input, 4×16×16 patches (2048 tokens), ViT-B (768, 12 blocks, 12 heads),
  bert-base-uncased; batch 2.

Prints one JSON line: shape, batch, seconds per step (median of ``--repeat`` after one warm-up),
scans per second, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate_reference as ref  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SHAPES = {
    "phantom": dict(img=(64, 64, 64), patch=(16, 16, 16), hidden=64, mlp=256, layers=4, heads=4,
                    text_hidden=64, text_layers=2, text_heads=4, vocab=200, batch=8),
    "m3d": dict(img=(128, 128, 128), patch=(4, 16, 16), hidden=768, mlp=3072, layers=12, heads=12,
                text_hidden=768, text_layers=12, text_heads=12, vocab=30522, batch=2),
}


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="phantom")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--tokens", type=int, default=96, help="text length in tokens ([CLS] … [SEP])")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--attn", choices=["eager", "sdpa"], default="eager", help="attention in both towers: eager (softmax(q kT) v, what M3D-CLIP runs) or sdpa "
                         "(F.scaled_dot_product_attention: MONAI's use_flash_attention, HF's sdpa)")
    ap.add_argument("--tf32", action="store_true", help="let CUDA matrix products and convolutions round their inputs to TF32 "
                    "(what CubeCL's f32 matmul does on GPUs that have it; PyTorch's matmul default is full fp32)")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.allow_tf32 = a.tf32
    dev = torch.device(a.device)
    s = SHAPES[a.shape]
    batch = a.batch or s["batch"]
    torch.set_num_threads(os.cpu_count() or 1)
    torch.use_deterministic_algorithms(False)
    torch.manual_seed(0)
    from monai.networks.nets import ViT
    from transformers import BertConfig, BertModel

    ref.VIT_CFG = dict(in_channels=1, img_size=s["img"], patch_size=s["patch"], hidden_size=s["hidden"],
                       mlp_dim=s["mlp"], num_layers=s["layers"], num_heads=s["heads"], proj_type="perceptron",
                       classification=True, qkv_bias=False, dropout_rate=0.0)
    ref.BERT_CFG = dict(ref.BERT_CFG, vocab_size=s["vocab"], hidden_size=s["text_hidden"],
                        num_hidden_layers=s["text_layers"], num_attention_heads=s["text_heads"],
                        intermediate_size=4 * s["text_hidden"], max_position_embeddings=256)
    ref.ADFIT_CFG = dict(ref.ADFIT_CFG, n_visual_prompts=20, n_text_prompts=30, embed_dim=s["hidden"],
                         mmse_hidden=s["hidden"] // 2, xattn_heads=8 if s["hidden"] % 8 == 0 else 4)
    vit = ViT(**ref.VIT_CFG)
    bert = BertModel(BertConfig(**ref.BERT_CFG, attn_implementation=a.attn), add_pooling_layer=False)
    if a.attn == "sdpa":
        for m in vit.modules():
            if hasattr(m, "use_flash_attention"):
                m.use_flash_attention = True
    for p in list(vit.parameters()) + list(bert.parameters()):
        p.requires_grad_(False)
    model = ref.AdfitRef(vit, bert).to(dev)
    with torch.no_grad():
        for p in (model.visual_prompts, model.mmse_token, model.text_prompts):
            p.normal_(0.0, 0.02)
    opt = torch.optim.AdamW(list(model.own_params().values()), lr=1e-3, weight_decay=0.01)

    x = torch.rand(batch, 1, *s["img"], device=dev)
    ids = torch.randint(5, s["vocab"], (batch, a.tokens), device=dev)
    mask = torch.ones(batch, a.tokens, dtype=torch.long, device=dev)
    mmse = torch.randn(batch, device=dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def step() -> None:
        last = model.vision(x)
        v = F.normalize(model.f_v(last[:, 0]), dim=-1)
        pred = model.f_mmse(last[:, 1])[:, 0]
        _, _, pools = model.text(ids, mask)
        w = F.normalize(model.f_t(pools["cls"]), dim=-1)
        logits = model.logits(*model.cross("multihead", v, w))
        target = torch.arange(batch, device=dev)
        loss = F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)
        loss = loss + 0.5 * ref.masked_mse(pred, mmse, torch.ones(batch, device=dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()

    t = time.perf_counter()
    step()
    warmup = time.perf_counter() - t
    runs = []
    for _ in range(a.repeat):
        t = time.perf_counter()
        step()
        runs.append(time.perf_counter() - t)
    sec = statistics.median(runs)
    gpu_mib = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    print(json.dumps({"tool": "pytorch", "torch": torch.__version__, "device": a.device, "attn": a.attn,
                      "tf32": a.tf32, "peak_gpu_alloc_mib": gpu_mib, "shape": a.shape, "batch": batch,
                      "tokens": a.tokens, "threads": torch.get_num_threads(), "seconds": sec,
                      "scans_per_s": batch / sec, "warmup_s": warmup, "runs_s": runs,
                      "peak_rss_mib": peak_rss_mib()}))


if __name__ == "__main__":
    main()
