"""What a cohort's images, tables and captions hold, outside adfit: the ceilings that adfit's
backbone features and fine-tuned models are measured against in the README.

For a preprocessed cohort (`adfit preprocess` output: index.csv + the 64³ cache) and its
subject-level split (`adfit split`), per fold (trained on the fold's train + val subjects, scored
on its test subjects), pooled over the folds:

1. metadata ceilings: logistic regression of NC/MCI/AD on table columns (volumes, ICV, age),
   balanced accuracy;
2. raw-voxel ceilings: the volumes average-pooled to 8³ (512 values) and 16³ (4,096), ridge R²
   of the hippocampal and ventricular shares of ICV, and a logistic regression of the diagnosis;
3. what the frozen text tower reads: all-MiniLM-L6-v2's [CLS] state of a finding written from
   the table (the brain corpus's caption form; the words compare each share with the cohort's
   median NC share), ridge R² of the same shares;
4. a perfect segmentation at the cache grid, when the cohort was made with `adfit synth --labels`
   (so that `adfit preprocess` wrote labels/<cache stem>.nii.gz): each structure's voxel count in
   the resampled tissue labels, as a share of the intracranial count. This is what an ideal
   reader of the 64³ image could measure; the table's volumes are measured on the generator's
   finer lattice;
5. with --backbone: what readers of a backbone's frozen image features reach. The cached volumes
   are written as NIfTI to a temporary folder and embedded by `adfit embed --tokens` (--adfit, by
   default target/release/adfit); linear and RBF-kernel readers of the projected embedding and of
   every final token.

    python scripts/feature_ceilings.py demo/adni demo/split.csv [MINILM_DIR] [--backbone DIR]

Needs numpy, pandas, scikit-learn, torch and transformers (scripts/requirements.txt plus
scikit-learn and pandas). Prints a Markdown table.
"""

import argparse
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.model_selection import GridSearchCV
from sklearn.svm import SVC
from sklearn.metrics import balanced_accuracy_score, r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

warnings.filterwarnings("ignore")
VOLUMES = ["Hippocampus", "Ventricles", "WholeBrain", "Entorhinal", "Fusiform", "MidTemp"]
# The labels each table column counts (`adfit synth --labels` writes this legend to labels.json).
LABELS = {
    "Hippocampus": [11, 12],
    "Ventricles": [9, 10],
    "WholeBrain": [5, 6, 7, 8, 11, 12, 13, 14, 15, 16, 17, 18],
    "Entorhinal": [13, 14],
    "Fusiform": [15, 16],
    "MidTemp": [17, 18],
    "ICV": list(range(3, 19)),
}


def read_cache(path: Path):
    """One adfit cache file: a 256-byte header (magic, shape, code, affine), then f32 voxels.
    Returns (voxels, 4x4 affine)."""
    raw = path.read_bytes()
    if raw[:8] != b"ADFITV1\0":
        raise SystemExit(f"{path}: not an adfit cache file")
    shape = np.frombuffer(raw[8:20], dtype="<u4")
    affine = np.frombuffer(raw[24:152], dtype="<f8").reshape(4, 4)
    return np.frombuffer(raw[256:], dtype="<f4").reshape(shape), affine


def pooled(vol: np.ndarray, to: int = 8) -> np.ndarray:
    d, h, w = vol.shape
    return vol.reshape(to, d // to, to, h // to, to, w // to).mean(axis=(1, 3, 5)).ravel()


def folds(index: pd.DataFrame, split: pd.DataFrame):
    for k in sorted(split.fold.unique()):
        part = split[split.fold == k].set_index("subject").part
        where = index.subject.map(part)
        yield (where != "test").values & where.notna().values, (where == "test").values


def logistic():
    return make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-4, 2, 13), max_iter=5000))


def rbf_svc():
    grid = {"svc__C": [0.3, 1.0, 3.0, 10.0]}
    return GridSearchCV(make_pipeline(StandardScaler(), SVC(class_weight="balanced")), grid, cv=4)


def ridge():
    return RidgeCV(alphas=np.logspace(-3, 5, 17))


def scaled_ridge():
    return make_pipeline(StandardScaler(), ridge())


def rbf_ridge():
    grid = {"kernelridge__alpha": [1e-2, 1e-1, 1.0], "kernelridge__gamma": [1e-4, 1e-3, 1e-2]}
    return GridSearchCV(make_pipeline(StandardScaler(), KernelRidge(kernel="rbf")), grid, cv=4)


def classify(x, y, index, split, make=logistic):
    pred = np.full(len(y), None, dtype=object)
    ok = pd.notna(y) & np.isfinite(x).all(axis=1)
    for train, test in folds(index, split):
        train, test = train & ok, test & ok
        pred[test] = make().fit(x[train], y[train]).predict(x[test])
    scored = ok & (pred != None)  # noqa: E711
    return balanced_accuracy_score(y[scored].astype(str), pred[scored].astype(str))


def regress(x, y, index, split, make=ridge):
    pred = np.full(len(y), np.nan)
    ok = np.isfinite(y)
    for train, test in folds(index, split):
        train, test = train & ok, test & ok
        m = make().fit(x[train], y[train])
        pred[test] = m.predict(x[test])
    scored = ok & np.isfinite(pred)
    return r2_score(y[scored], pred[scored])


def caption(row, median):
    share = lambda k: row[k] / row.ICV / median[k]
    shrink = lambda r: "markedly small" if r < 0.8 else "small" if r < 0.92 else "typical" if r < 1.06 else "large"
    grow = lambda r: "markedly enlarged" if r > 2.2 else "enlarged" if r > 1.4 else "typical" if r > 0.75 else "small"
    return (
        f"Intracranial volume: {row.ICV:.0f} mm^3. Hippocampal volume: {row.Hippocampus:.0f} mm^3, "
        f"hippocampi {shrink(share('Hippocampus'))}. Ventricular volume: {row.Ventricles:.0f} mm^3, "
        f"ventricles {grow(share('Ventricles'))}. Whole brain volume: {row.WholeBrain:.0f} mm^3, "
        f"brain {'shrunken' if share('WholeBrain') < 0.97 else 'typical'}. Entorhinal volume: "
        f"{row.Entorhinal:.0f} mm^3, entorhinal cortex {shrink(share('Entorhinal'))}. Fusiform volume: "
        f"{row.Fusiform:.0f} mm^3. Middle temporal volume: {row.MidTemp:.0f} mm^3."
    )


def cls_states(texts, model_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 32):
            batch = tok(texts[i : i + 32], padding=True, truncation=True, max_length=128, return_tensors="pt")
            out.append(model(**batch).last_hidden_state[:, 0].numpy())
    return np.concatenate(out)


def label_shares(root: Path, index: pd.DataFrame) -> pd.DataFrame:
    """Each structure's voxel count in the cache-grid tissue labels, as a share of the ICV count."""
    import nibabel as nib

    rows = []
    for c in index.cache:
        path = root / "labels" / f"{Path(c).stem}.nii.gz"
        lab = np.asarray(nib.load(str(path)).dataobj)
        counts = {k: np.isin(lab, v).sum() for k, v in LABELS.items()}
        rows.append({k: counts[k] / counts["ICV"] for k in VOLUMES})
    return pd.DataFrame(rows)


def frozen_features(caches, backbone: str, adfit: str):
    """`adfit embed --tokens` over the cached volumes ([`read_cache`]'s pairs): (projected
    embeddings, final tokens)."""
    import nibabel as nib
    from safetensors.numpy import load_file

    with tempfile.TemporaryDirectory() as tmp:
        args = [adfit, "embed", "--backbone", backbone, "--text", "a", "-q"]
        for i, (voxels, affine) in enumerate(caches):
            path = Path(tmp, f"{i:05d}.nii.gz")
            nib.save(nib.Nifti1Image(np.array(voxels), affine), str(path))
            args += ["--volume", str(path)]
        out, tokens = Path(tmp, "emb.safetensors"), Path(tmp, "tok.safetensors")
        subprocess.run(args + ["--out", str(out), "--tokens", str(tokens)], check=True, stdout=sys.stderr)
        return load_file(str(out))["image_embeddings"], load_file(str(tokens))["tokens"]


BA, R2 = "balanced accuracy", "R²"


def table_rows(index, split, label):
    for name, cols in [
        ("all six volumes + ICV + age", VOLUMES + ["ICV", "age"]),
        ("hippocampus + ICV + age", ["Hippocampus", "ICV", "age"]),
        ("ventricles + ICV + age", ["Ventricles", "ICV", "age"]),
        ("ventricles + whole brain + ICV + age", ["Ventricles", "WholeBrain", "ICV", "age"]),
    ]:
        yield "table", name, BA, classify(index[cols].values.astype(float), label, index, split)


def voxel_rows(caches, index, split, label, hippo, vent):
    for to in (8, 16):
        x = np.stack([pooled(v, to) for v, _ in caches])
        x = x - x.mean(axis=0)
        src = f"raw voxels, pooled to {to}³"
        yield src, "diagnosis (logistic)", BA, classify(x, label, index, split)
        yield src, "hippocampal share (ridge)", R2, regress(x, hippo, index, split)
        yield src, "ventricular share (ridge)", R2, regress(x, vent, index, split)


def caption_rows(index, split, minilm):
    complete = index.dropna(subset=VOLUMES + ["ICV"]).reset_index(drop=True)
    nc = complete[complete.label == "NC"]
    median = {k: (nc[k] / nc.ICV).median() for k in VOLUMES}
    text = cls_states([caption(r, median) for _, r in complete.iterrows()], minilm)
    text = text - text.mean(axis=0)
    for name, col in [("hippocampal share (ridge)", "Hippocampus"), ("ventricular share (ridge)", "Ventricles")]:
        y = (complete[col] / complete.ICV).values
        yield "MiniLM [CLS] of the finding", name, R2, regress(text, y, complete, split)


def label_rows(root, index, split, label, hippo):
    shares = label_shares(root, index)
    src = "tissue labels at the cache grid (a perfect segmentation)"
    known = np.isfinite(hippo)
    yield src, "hippocampal share (its own count, no fit)", R2, r2_score(hippo[known], shares.Hippocampus[known])
    own = shares[["Hippocampus"]].values
    yield src, "hippocampal share (ridge)", R2, regress(own, hippo, index, split, scaled_ridge)
    for name, cols in [("hippocampus + age", ["Hippocampus"]), ("all six shares + age", VOLUMES)]:
        x = np.c_[shares[cols].values, index.age.values]
        yield src, f"diagnosis from {name} (logistic)", BA, classify(x, label, index, split)


def backbone_rows(caches, index, split, label, hippo, backbone, adfit):
    emb, tokens = frozen_features(caches, backbone, adfit)
    every = tokens.reshape(len(tokens), -1)
    for src, x in [(f"{backbone}: projected embedding", emb), (f"{backbone}: every final token", every)]:
        yield src, "diagnosis (logistic)", BA, classify(x, label, index, split)
        yield src, "hippocampal share (ridge)", R2, regress(x, hippo, index, split)
    src = f"{backbone}: projected embedding"
    yield src, "diagnosis (RBF SVM)", BA, classify(emb, label, index, split, rbf_svc)
    yield src, "hippocampal share (RBF kernel ridge)", R2, regress(emb, hippo, index, split, rbf_ridge)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="a preprocessed cohort folder (index.csv and its cache)")
    ap.add_argument("split", type=Path, help="its subject-level split (adfit split)")
    ap.add_argument("minilm", nargs="?", default=str(Path.home() / ".cache/adfit-assets/all-MiniLM-L6-v2"))
    ap.add_argument("--backbone", help="also read this backbone's frozen image features")
    ap.add_argument("--adfit", default="target/release/adfit", help="the adfit binary for --backbone")
    a = ap.parse_args()
    index = pd.read_csv(a.root / "index.csv", dtype={"subject": str})
    split = pd.read_csv(a.split, dtype={"subject": str})
    label = index.label.values.astype(object)
    hippo = (index.Hippocampus / index.ICV).values
    vent = (index.Ventricles / index.ICV).values
    caches = [read_cache(a.root / c) for c in index.cache]
    rows = [
        *table_rows(index, split, label),
        *voxel_rows(caches, index, split, label, hippo, vent),
        *caption_rows(index, split, a.minilm),
    ]
    if (a.root / "labels").is_dir():
        rows += label_rows(a.root, index, split, label, hippo)
    if a.backbone:
        rows += backbone_rows(caches, index, split, label, hippo, a.backbone, a.adfit)
    print("| input | target | metric | value |\n|---|---|---|---|")
    for src, target, metric, value in rows:
        shown = f"{100 * value:.1f}" if metric == BA else f"{value:.2f}"
        print(f"| {src} | {target} | {metric} | {shown} |")


if __name__ == "__main__":
    main()
