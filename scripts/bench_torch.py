#!/usr/bin/env python3
"""PyTorch baseline for adfit's ViT benchmark (the Rust side is ``cargo bench --bench vit``,
``benches/vit.rs``, which mirrors the shapes and the two modes measured here).

What is measured (CPU, float32, ``torch.set_num_threads(os.cpu_count())``):

* A stack of ``--layers`` (default 2) pre-norm ViT blocks at M3D-CLIP width: hidden 768,
  12 heads (head_dim 64), MLP 3072, exact (erf) GELU, LayerNorm eps 1e-5, ``qkv`` Linear without
  bias, ``out_proj`` with bias -- the same block as ``tests/fixtures/model/README.md`` section 1:
  ``x += out_proj(attn(norm1 x)); x += linear2(gelu(linear1(norm2 x)))``, qkv rows ``[q | k | v]``,
  heads outermost, scale ``head_dim^-0.5``, no mask, no dropout.  No patch embedding and no final
  norm: only the block stack.
* A sequence of ``--tokens`` (default 2070 = CLS + MMSE + 20 prompts + 2048 patches) tokens,
  batch sizes ``--batch`` (default 1 2).  The input is N(0,1) of shape [B, tokens, 768].
* VPT-deep prompts ``[layers, --prompts (20), 768]``: before block 0 the sequence already holds
  ``prompts[0]`` at positions 2..22 (``cat([x[:, :2], prompts[0], x[:, 22:]])``); before block
  l >= 1 positions 2..22 are replaced by ``prompts[l]`` (the previous block's outputs there are
  dropped).  This is adfit's vision path (README section 3, Vision 2-3).
* Modes:
  - ``forward``: the forward pass under ``torch.no_grad()``;
  - ``forward_backward``: only the prompt tensor requires grad (every block weight has
    ``requires_grad=False``); ``loss = out[:, 0].sum()`` (the CLS row of the last block) and
    ``torch.autograd.grad(loss, prompts)``, so autograd computes input gradients through every
    block but no weight gradients.
* Attention implementations:
  - ``eager``: ``softmax((q @ kᵀ) * scale) @ v`` (what MONAI's SABlock does by default, and what
    M3D-CLIP runs);
  - ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention(q, k, v)`` (on CPU, PyTorch's
    fused flash-attention kernel; MONAI >= 1.4 uses it with ``use_flash_attention=True``).

Before timing, the parent process checks on a short sequence that eager and sdpa agree (output
and prompt gradient).

Timing and memory: every (impl, batch, mode) runs in its own fresh subprocess (this script with
``--single``), which builds the weights (fixed seed; README conventions: LayerNorm weights
1 + 0.1·N(0,1), biases 0.1·N(0,1), 2-D weights N(0,1)/√fan_in, prompts 0.5·N(0,1)) and the input,
records its RSS, runs one warm-up and then ``--repeat`` (default 3) timed runs, and reports:

* ``seconds``: the median of the timed runs (``runs_s`` lists them all, ``warmup_s`` the warm-up);
* ``cpu_util``: process CPU seconds / wall seconds over the timed runs; about ``threads`` when the
  machine was otherwise idle, clearly less when something else competed for the cores;
* ``peak_rss_mib``: the process's RSS high-water mark at the end (``VmHWM`` of
  ``/proc/self/status``, as ``benches/vit.rs`` reads it), i.e. the absolute peak of the process,
  interpreter + torch import + weights included.  ``ru_maxrss_mib`` is
  ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` / 1024, reported for reference only: Python's
  ``subprocess`` starts the child with vfork, and Linux then carries the parent's high-water mark
  into the child's ``ru_maxrss`` (seen here: 633 MiB inherited after the parent's check), so it
  can overstate a small configuration's peak;
* ``delta_rss_mib``: that peak minus the current RSS after imports, weight and input creation
  (``rss_base_mib``), i.e. the extra memory the computation itself needed at its high-water mark.

Run (from the repo root; the venv setup is in ``scripts/requirements.txt``):

    /root/.venvs/adfit-ref/bin/python scripts/bench_torch.py                  # everything
    /root/.venvs/adfit-ref/bin/python scripts/bench_torch.py --repeat 2 --batch 1 \\
        --impl sdpa --mode forward --layers 2 --tokens 2070

Prints diagnostics to stderr and one JSON line per configuration to stdout::

  {"tool": "pytorch", "impl": "eager"|"sdpa", "batch": 1, "mode": "forward"|"forward_backward",
   "layers": 2, "tokens": 2070, "seconds": ..., "peak_rss_mib": ..., "delta_rss_mib": ...,
   "threads": ..., "torch_version": ..., ...}

Python here is only a baseline to compare adfit against; nothing in adfit runs it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

HIDDEN = 768
HEADS = 12
MLP = 3072
LN_EPS = 1e-5
N_PREFIX = 2  # CLS + MMSE
SEED = 4321
IMPLS = ("eager", "sdpa")
MODES = ("forward", "forward_backward")


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def current_rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        resident_pages = int(fh.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """VmHWM: this process's own RSS high-water mark (what benches/vit.rs reads too)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def ru_maxrss_mib() -> float:
    """getrusage's ru_maxrss (KiB on Linux).  Caveat: a child started with vfork (Python's
    subprocess does that) inherits the parent's high-water mark across exec, so this can exceed
    the child's own peak; it is reported only for reference."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
def make_weights(layers: int, n_prompts: int, hidden: int, mlp: int, seed: int = SEED):
    """Random block weights (README conventions) and prompts; weights never require grad."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(shape, generator=g, dtype=torch.float32)

    # In place, so that no temporary raises the process's RSS high-water mark before the run.
    def ln_weight(n):
        return randn(n).mul_(0.1).add_(1.0)

    def bias(n):
        return randn(n).mul_(0.1)

    def weight(out, fan_in):
        return randn(out, fan_in).div_(math.sqrt(fan_in))

    blocks = []
    for _ in range(layers):
        blocks.append({
            "norm1.weight": ln_weight(hidden),
            "norm1.bias": bias(hidden),
            "attn.qkv.weight": weight(3 * hidden, hidden),
            "attn.out_proj.weight": weight(hidden, hidden),
            "attn.out_proj.bias": bias(hidden),
            "norm2.weight": ln_weight(hidden),
            "norm2.bias": bias(hidden),
            "mlp.linear1.weight": weight(mlp, hidden),
            "mlp.linear1.bias": bias(mlp),
            "mlp.linear2.weight": weight(hidden, mlp),
            "mlp.linear2.bias": bias(hidden),
        })
    prompts = randn(layers, n_prompts, hidden).mul_(0.5)
    return blocks, prompts


def block(h: torch.Tensor, w: dict, impl: str, heads: int) -> torch.Tensor:
    b, n, d = h.shape
    hd = d // heads
    x = F.layer_norm(h, (d,), w["norm1.weight"], w["norm1.bias"], LN_EPS)
    qkv = F.linear(x, w["attn.qkv.weight"])  # [b, n, 3d], rows [q | k | v], heads outermost
    q, k, v = qkv.view(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4).unbind(0)  # each [b, heads, n, hd]
    if impl == "eager":
        att = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * (hd ** -0.5), dim=-1)
        a = torch.matmul(att, v)
    elif impl == "sdpa":
        a = F.scaled_dot_product_attention(q, k, v)  # default scale = hd^-0.5
    else:
        raise ValueError(impl)
    a = a.transpose(1, 2).reshape(b, n, d)
    h = h + F.linear(a, w["attn.out_proj.weight"], w["attn.out_proj.bias"])
    x = F.layer_norm(h, (d,), w["norm2.weight"], w["norm2.bias"], LN_EPS)
    return h + F.linear(F.gelu(F.linear(x, w["mlp.linear1.weight"], w["mlp.linear1.bias"])),
                        w["mlp.linear2.weight"], w["mlp.linear2.bias"])


def vpt_forward(x: torch.Tensor, blocks, prompts: torch.Tensor, impl: str, heads: int) -> torch.Tensor:
    """VPT-deep: prompts[l] occupies positions 2..2+P of the sequence entering block l."""
    b = x.shape[0]
    p = prompts.shape[1]
    h = x
    for l, w in enumerate(blocks):
        h = torch.cat([h[:, :N_PREFIX], prompts[l][None].expand(b, -1, -1), h[:, N_PREFIX + p:]], dim=1)
        h = block(h, w, impl, heads)
    return h


def step(mode: str, x, blocks, prompts, impl: str, heads: int):
    if mode == "forward":
        with torch.no_grad():
            return vpt_forward(x, blocks, prompts, impl, heads)
    if mode == "forward_backward":
        prompts = prompts.detach().requires_grad_(True)
        out = vpt_forward(x, blocks, prompts, impl, heads)
        loss = out[:, 0].sum()
        (g,) = torch.autograd.grad(loss, prompts)
        return g
    raise ValueError(mode)


# ----------------------------------------------------------------------------------------------
# One configuration (runs in a fresh subprocess)
# ----------------------------------------------------------------------------------------------
def run_single(args) -> dict:
    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    blocks, prompts = make_weights(args.layers, args.prompts, HIDDEN, MLP)
    g = torch.Generator().manual_seed(SEED + 1)
    x = torch.randn((args.batch, args.tokens, HIDDEN), generator=g, dtype=torch.float32)
    rss_base = current_rss_mib()
    peak_base = peak_rss_mib()

    t0 = time.perf_counter()
    r = step(args.mode, x, blocks, prompts, args.impl, HEADS)
    warm = time.perf_counter() - t0
    assert torch.isfinite(r).all()
    del r
    runs = []
    c0 = os.times()
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        r = step(args.mode, x, blocks, prompts, args.impl, HEADS)
        runs.append(time.perf_counter() - t0)
        del r
    c1 = os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)  # process CPU seconds in the timed runs
    peak = peak_rss_mib()
    ru_peak = ru_maxrss_mib()
    return {
        "tool": "pytorch",
        "impl": args.impl,
        "batch": args.batch,
        "mode": args.mode,
        "layers": args.layers,
        "tokens": args.tokens,
        "prompts": args.prompts,
        "hidden": HIDDEN,
        "heads": HEADS,
        "mlp": MLP,
        "seconds": statistics.median(runs),
        "runs_s": runs,
        "warmup_s": warm,
        "repeat": args.repeat,
        "peak_rss_mib": round(peak, 1),
        "delta_rss_mib": round(peak - rss_base, 1),
        "rss_base_mib": round(rss_base, 1),
        "peak_rss_before_run_mib": round(peak_base, 1),
        "ru_maxrss_mib": round(ru_peak, 1),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "dtype": "float32",
        "cpu_util": round(cpu / sum(runs), 2),
        "torch_version": torch.__version__,
    }


# ----------------------------------------------------------------------------------------------
# Parent: sanity check, then one subprocess per configuration
# ----------------------------------------------------------------------------------------------
def check_impls_agree(layers: int, n_prompts: int) -> None:
    """eager vs sdpa on a short sequence (B=2, 2 + P + 64 tokens): outputs and prompt gradients."""
    blocks, prompts = make_weights(layers, n_prompts, HIDDEN, MLP)
    x = torch.randn((2, N_PREFIX + n_prompts + 64, HIDDEN), generator=torch.Generator().manual_seed(7))
    res = {}
    for impl in IMPLS:
        p = prompts.clone().requires_grad_(True)
        out = vpt_forward(x, blocks, p, impl, HEADS)
        (gp,) = torch.autograd.grad(out[:, 0].sum(), p)
        res[impl] = (out.detach(), gp)
    (oe, ge), (os_, gs) = res["eager"], res["sdpa"]
    do = (oe - os_).abs().max().item()
    dg = ((ge - gs).abs().max() / ge.abs().max()).item()
    log(f"check eager vs sdpa: max|out diff| = {do:.2e}, max|grad diff|/max|grad| = {dg:.2e}")
    assert do < 1e-3 and dg < 1e-3, (do, dg)
    # positions 2..2+P of block 0's input are the prompts, so every prompt row gets a gradient
    assert (ge.abs().sum(-1) > 0).all()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=2070, help="CLS + MMSE + prompts + patches (default %(default)s)")
    ap.add_argument("--prompts", type=int, default=20, help="visual prompts per layer (default %(default)s)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--impl", nargs="+", choices=IMPLS, default=list(IMPLS))
    ap.add_argument("--mode", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default 0 = os.cpu_count())")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration subprocess")
    ap.add_argument("--no-check", action="store_true", help="skip the eager-vs-sdpa agreement check")
    ap.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    assert args.tokens > N_PREFIX + args.prompts, "tokens must exceed CLS + MMSE + prompts"
    assert args.repeat >= 1

    if args.single:
        args.impl, args.mode, args.batch = args.impl[0], args.mode[0], args.batch[0]
        print(json.dumps(run_single(args)), flush=True)
        return

    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    log(f"torch {torch.__version__}, threads {torch.get_num_threads()} (os.cpu_count() = {os.cpu_count()}), "
        f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    log(f"load average {os.getloadavg()} (timings assume an otherwise idle machine)")
    log(f"{args.layers} layers x [B, {args.tokens}, {HIDDEN}], {HEADS} heads, MLP {MLP}, "
        f"{args.prompts} prompts/layer, repeat {args.repeat} after 1 warm-up")
    if not args.no_check:
        check_impls_agree(args.layers, args.prompts)

    for impl in args.impl:
        for batch in args.batch:
            for mode in args.mode:
                cmd = [sys.executable, os.path.abspath(__file__), "--single", "--impl", impl, "--mode", mode,
                       "--batch", str(batch), "--layers", str(args.layers), "--tokens", str(args.tokens),
                       "--prompts", str(args.prompts), "--repeat", str(args.repeat), "--threads", str(threads)]
                t0 = time.perf_counter()
                try:
                    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
                    if p.returncode != 0 or not lines:
                        raise RuntimeError(f"rc {p.returncode}: {p.stderr.strip()[-2000:]}")
                    rec = json.loads(lines[-1])
                except Exception as e:  # noqa: BLE001 -- report and go on with the next configuration
                    rec = {"tool": "pytorch", "impl": impl, "batch": batch, "mode": mode, "layers": args.layers,
                           "tokens": args.tokens, "error": f"{type(e).__name__}: {e}"}
                log(f"  {impl:5} B={batch} {mode:16} wall {time.perf_counter() - t0:6.1f} s")
                print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
