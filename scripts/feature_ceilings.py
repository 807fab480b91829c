"""What a cohort's images, tables and captions hold, outside adfit: the ceilings that adfit's
backbone features and fine-tuned models are measured against in the README.

For a preprocessed cohort (`adfit preprocess` output: index.csv + the 64³ cache) and its
subject-level split (`adfit split`), per fold (trained on the fold's train + val subjects, scored
on its test subjects), pooled over the folds:

1. metadata ceilings: logistic regression of NC/MCI/AD on table columns (volumes, ICV, age),
   balanced accuracy;
2. raw-voxel ceilings: the volumes average-pooled to 8³ (512 values), ridge R² of the
   hippocampal and ventricular shares of ICV, and a logistic regression of the diagnosis;
3. what the frozen text tower reads: all-MiniLM-L6-v2's [CLS] state of a finding written from
   the table (the brain corpus's caption form; the words compare each share with the cohort's
   median NC share), ridge R² of the same shares.

    python scripts/feature_ceilings.py demo/adni demo/split.csv [MINILM_DIR]

Needs numpy, pandas, scikit-learn, torch and transformers (scripts/requirements.txt plus
scikit-learn and pandas). Prints a Markdown table.
"""

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.metrics import balanced_accuracy_score, r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

warnings.filterwarnings("ignore")
VOLUMES = ["Hippocampus", "Ventricles", "WholeBrain", "Entorhinal", "Fusiform", "MidTemp"]


def read_cache(path: Path) -> np.ndarray:
    """One adfit cache file: a 256-byte header (magic, shape, code, affine), then f32 voxels."""
    raw = path.read_bytes()
    if raw[:8] != b"ADFITV1\0":
        raise SystemExit(f"{path}: not an adfit cache file")
    shape = np.frombuffer(raw[8:20], dtype="<u4")
    return np.frombuffer(raw[256:], dtype="<f4").reshape(shape)


def pooled(vol: np.ndarray, to: int = 8) -> np.ndarray:
    d, h, w = vol.shape
    return vol.reshape(to, d // to, to, h // to, to, w // to).mean(axis=(1, 3, 5)).ravel()


def folds(index: pd.DataFrame, split: pd.DataFrame):
    for k in sorted(split.fold.unique()):
        part = split[split.fold == k].set_index("subject").part
        where = index.subject.map(part)
        yield (where != "test").values & where.notna().values, (where == "test").values


def classify(x, y, index, split):
    make = lambda: make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-4, 2, 13), max_iter=5000))
    pred = np.full(len(y), None, dtype=object)
    ok = pd.notna(y) & np.isfinite(x).all(axis=1)
    for train, test in folds(index, split):
        train, test = train & ok, test & ok
        pred[test] = make().fit(x[train], y[train]).predict(x[test])
    scored = ok & (pred != None)  # noqa: E711
    return balanced_accuracy_score(y[scored].astype(str), pred[scored].astype(str))


def regress(x, y, index, split):
    pred = np.full(len(y), np.nan)
    ok = np.isfinite(y)
    for train, test in folds(index, split):
        train, test = train & ok, test & ok
        m = RidgeCV(alphas=np.logspace(-3, 5, 17)).fit(x[train], y[train])
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


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    root, split_path = Path(sys.argv[1]), Path(sys.argv[2])
    minilm = sys.argv[3] if len(sys.argv) > 3 else str(Path.home() / ".cache/adfit-assets/all-MiniLM-L6-v2")
    index = pd.read_csv(root / "index.csv", dtype={"subject": str})
    split = pd.read_csv(split_path, dtype={"subject": str})
    label = index.label.values.astype(object)
    rows = []
    for name, cols in [
        ("all six volumes + ICV + age", VOLUMES + ["ICV", "age"]),
        ("hippocampus + ICV + age", ["Hippocampus", "ICV", "age"]),
        ("ventricles + ICV + age", ["Ventricles", "ICV", "age"]),
        ("ventricles + whole brain + ICV + age", ["Ventricles", "WholeBrain", "ICV", "age"]),
    ]:
        rows.append(("table", name, "balanced accuracy", classify(index[cols].values.astype(float), label, index, split)))
    x = np.stack([pooled(read_cache(root / c)) for c in index.cache])
    x = x - x.mean(axis=0)
    hippo = (index.Hippocampus / index.ICV).values
    vent = (index.Ventricles / index.ICV).values
    rows.append(("raw voxels, pooled to 8³", "diagnosis (logistic)", "balanced accuracy", classify(x, label, index, split)))
    rows.append(("raw voxels, pooled to 8³", "hippocampal share (ridge)", "R²", regress(x, hippo, index, split)))
    rows.append(("raw voxels, pooled to 8³", "ventricular share (ridge)", "R²", regress(x, vent, index, split)))
    complete = index.dropna(subset=VOLUMES + ["ICV"]).reset_index(drop=True)
    nc = complete[complete.label == "NC"]
    median = {k: (nc[k] / nc.ICV).median() for k in VOLUMES}
    text = cls_states([caption(r, median) for _, r in complete.iterrows()], minilm)
    text = text - text.mean(axis=0)
    for name, col in [("hippocampal share (ridge)", "Hippocampus"), ("ventricular share (ridge)", "Ventricles")]:
        y = (complete[col] / complete.ICV).values
        rows.append(("MiniLM [CLS] of the finding", name, "R²", regress(text, y, complete, split)))
    print("| input | target | metric | value |\n|---|---|---|---|")
    for src, target, metric, value in rows:
        shown = f"{100 * value:.1f}" if metric == "balanced accuracy" else f"{value:.2f}"
        print(f"| {src} | {target} | {metric} | {shown} |")


if __name__ == "__main__":
    main()
