"""What a frozen backbone's image embeddings hold about the diagnosis and the hippocampus.

Reads a preprocessed cohort (`adfit preprocess` output: index.csv and its .vol cache), writes each
cached volume as NIfTI, embeds them all with `adfit embed`, then fits, under 5-fold cross-validation
grouped by subject:
  - logistic regression from the standardised embeddings to NC/MCI/AD (balanced accuracy);
  - ridge regression to the table's hippocampal volume (R^2 per fold).
A reference for the fine-tuned model: the method steers the frozen backbone and cannot add what
its features lack.

  python scripts/probe_frozen.py --index demo/adni/index.csv --backbone backbones/phantom-64

Needs numpy, nibabel and scikit-learn (a virtualenv outside the repository) and a release build.
"""
import argparse
import csv
import json
import os
import subprocess
import tempfile

import nibabel as nib
import numpy as np
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

CACHE_HEADER = 256  # bytes before the float32 voxels in a .vol file (src/data/cache.rs)


def read_cached(path):
    raw = open(path, "rb").read()
    if raw[:8] != b"ADFITV1\0":
        raise SystemExit(f"{path}: not an adfit cache file")
    shape = np.frombuffer(raw[8:20], dtype="<u4")
    return np.frombuffer(raw[CACHE_HEADER:], dtype="<f4").reshape(shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--adfit", default="target/release/adfit")
    args = ap.parse_args()

    root = os.path.dirname(args.index)
    rows = [r for r in csv.DictReader(open(args.index)) if r["label"] in ("NC", "MCI", "AD")]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [args.adfit, "embed", "--backbone", args.backbone, "--out", f"{tmp}/emb.json", "-q"]
        for i, r in enumerate(rows):
            path = f"{tmp}/{i}.nii"
            nib.save(nib.Nifti1Image(np.ascontiguousarray(read_cached(f"{root}/{r['cache']}")), np.eye(4)), path)
            cmd += ["--volume", path]
        subprocess.run(cmd, check=True)
        x = np.array(json.load(open(f"{tmp}/emb.json"))["image_embeddings"])

    y = np.array([r["label"] for r in rows])
    groups = np.array([r["subject"] for r in rows])
    hippocampus = np.array([float(r["Hippocampus"] or "nan") for r in rows])
    folds = list(GroupKFold(5).split(x, y, groups))
    scores = []
    for train, test in folds:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000)).fit(x[train], y[train])
        scores.append(balanced_accuracy_score(y[test], model.predict(x[test])))
    known = ~np.isnan(hippocampus)
    r2 = []
    for train, test in folds:
        train, test = train[known[train]], test[known[test]]
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
        pred = model.fit(x[train], hippocampus[train]).predict(x[test])
        target = hippocampus[test]
        r2.append(1 - ((pred - target) ** 2).sum() / ((target - target.mean()) ** 2).sum())
    print(f"{args.backbone}: {len(rows)} scans, embeddings of size {x.shape[1]}")
    print(f"diagnosis, balanced accuracy: {np.mean(scores):.3f} ± {np.std(scores):.3f} (folds {np.round(scores, 3)})")
    print(f"hippocampal volume, R^2: {np.mean(r2):.2f} (folds {np.round(r2, 2)})")


if __name__ == "__main__":
    main()
