#!/usr/bin/env python3
"""Attention scaling: time and peak memory of forward + backward through ViT blocks at M3D-CLIP
width against the token count, adfit and PyTorch in one run.

Both sides run the shapes of ``benches/vit.rs`` / ``scripts/bench_torch.py`` (768 wide, 12 heads,
MLP 3072, VPT-deep prompts trainable, every block weight frozen; ``--layers`` blocks, batch 1) at
each of ``--tokens``:

* adfit ``block-wise``: its attention op, which keeps no n×n tensor for the backward pass;
* adfit ``decomposed``: Burn's matmul/softmax/matmul under autodiff (the path before the op);
* PyTorch ``eager`` (softmax(q kᵀ) v, what MONAI's SABlock runs by default) and ``sdpa``
  (``F.scaled_dot_product_attention``, PyTorch's fused kernel).

Each configuration runs in its own process; ``delta_rss_mib`` is its RSS high-water mark minus
its RSS once weights and input exist, the memory the pass itself needed. Writes
``PREFIX.csv``, ``PREFIX.md`` and ``PREFIX.png`` (default ``results/attention-scaling``).

    /root/.venvs/adfit-ref/bin/python scripts/bench_scaling.py
    /root/.venvs/adfit-ref/bin/python scripts/bench_scaling.py --tokens 512 1024 --layers 1 --out /tmp/s

Run it on an otherwise idle machine: both sides use every core.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ADFIT_MODES = {"forward_backward": "adfit block-wise", "forward_backward_decomposed": "adfit decomposed"}
TORCH_IMPLS = {"eager": "PyTorch eager", "sdpa": "PyTorch SDPA"}


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def run(cmd: list[str], env: dict | None = None) -> str:
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--tokens", type=int, nargs="+", default=[512, 1024, 2070, 4096])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", default="results/attention-scaling", help="output prefix (default %(default)s)")
    a = ap.parse_args()

    run(["cargo", "bench", "--locked", "--bench", "vit", "--no-run"])
    rows = []
    for n in a.tokens:
        env = {"ADFIT_BENCH_TOKENS": str(n), "ADFIT_BENCH_LAYERS": str(a.layers), "ADFIT_BENCH_REPEAT": str(a.repeat),
               "ADFIT_BENCH_BATCHES": "1", "ADFIT_BENCH_MODES": ",".join(ADFIT_MODES)}
        for r in json_lines(run(["cargo", "bench", "--locked", "--bench", "vit"], env)):
            rows.append((ADFIT_MODES[r["mode"]], n, r["seconds"], r["delta_rss_mib"]))
            print(rows[-1], flush=True)
        torch = run([sys.executable, "scripts/bench_torch.py", "--tokens", str(n), "--layers", str(a.layers),
                     "--batch", "1", "--mode", "forward_backward", "--repeat", str(a.repeat), "--no-check"])
        for r in json_lines(torch):
            rows.append((TORCH_IMPLS[r["impl"]], n, r["seconds"], r["delta_rss_mib"]))
            print(rows[-1], flush=True)

    out = REPO / a.out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv.tmp"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["implementation", "tokens", "seconds", "extra_mib"])
        w.writerows([(i, n, f"{s:.4f}", f"{m:.1f}") for i, n, s, m in rows])
    os.replace(out.with_suffix(".csv.tmp"), out.with_suffix(".csv"))

    impls = list(ADFIT_MODES.values()) + list(TORCH_IMPLS.values())
    by = {(i, n): (s, m) for i, n, s, m in rows}
    lines = [f"Forward + backward through {a.layers} ViT blocks at M3D-CLIP width (768, 12 heads), batch 1, "
             f"prompts trainable; `{' '.join(['python', 'scripts/bench_scaling.py'] + sys.argv[1:])}`, "
             f"{os.cpu_count()} cores.", "",
             "| tokens | " + " | ".join(f"{i} s" for i in impls) + " | " + " | ".join(f"{i} MiB" for i in impls) + " |",
             "|---" * (1 + 2 * len(impls)) + "|"]
    def cell(i, n, k, fmt):
        return format(by[(i, n)][k], fmt) if (i, n) in by else "-"
    for n in a.tokens:
        lines.append(f"| {n} | " + " | ".join(cell(i, n, 0, ".2f") for i in impls) + " | "
                     + " | ".join(cell(i, n, 1, ".0f") for i in impls) + " |")
    out.with_suffix(".md.tmp").write_text("\n".join(lines) + "\n")
    os.replace(out.with_suffix(".md.tmp"), out.with_suffix(".md"))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for i in impls:
        pts = [(n, *by[(i, n)]) for n in a.tokens if (i, n) in by]
        style = "-o" if i.startswith("adfit") else "--s"
        ax_t.plot([p[0] for p in pts], [p[1] for p in pts], style, label=i)
        ax_m.plot([p[0] for p in pts], [p[2] for p in pts], style, label=i)
    for ax, title in ((ax_t, "seconds per forward + backward"), (ax_m, "extra memory (MiB, peak RSS)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(a.tokens, [str(n) for n in a.tokens])
        ax.set_xlabel("tokens")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax_t.legend()
    fig.suptitle(f"Attention scaling: {a.layers} ViT-B blocks, batch 1, {os.cpu_count()} CPU cores")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".tmp.png"), dpi=110)
    os.replace(out.with_suffix(".tmp.png"), out.with_suffix(".png"))
    print("\n".join(lines))
    print(f"wrote {out}.csv, .md, .png")


if __name__ == "__main__":
    main()
