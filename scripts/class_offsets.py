"""Would per-class offsets on a fine-tuned model's log-probabilities, fitted on validation scans,
raise its test balanced accuracy? (The README's Results: they did not, on the synthetic cohort.)

For each run k of an experiment (runs/full/fold{k}-seed{k}/test_predictions.csv) and its
validation predictions (`adfit eval --run RUN --index INDEX --split SPLIT --fold k --part val
--out VAL{k}`), grid-search offsets for MCI and AD (NC fixed at 0; -3..3 by 0.1, ties to the
smallest) that maximise validation balanced accuracy, then score the test scans with and without.

    python scripts/class_offsets.py demo/experiment-synthetic/runs/full VAL_PREFIX [RUNS]

Needs numpy, pandas and scikit-learn.
"""

import sys

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

CLASSES = ["NC", "MCI", "AD"]
GRID = np.round(np.arange(-3, 3.01, 0.1), 1)


def load(path):
    d = pd.read_csv(path)
    d = d[d.label.isin(CLASSES)]
    logp = np.log(d[[f"p_{c}" for c in CLASSES]].values + 1e-12)
    return logp, d.label.map({c: i for i, c in enumerate(CLASSES)}).values


def fit(logp, y):
    best, best_key = (0.0, 0.0), None
    for b1 in GRID:
        for b2 in GRID:
            score = balanced_accuracy_score(y, (logp + [0, b1, b2]).argmax(1))
            key = (round(score, 9), -abs(b1) - abs(b2))
            if best_key is None or key > best_key:
                best, best_key = (b1, b2), key
    return best, best_key[0]


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    runs, val_prefix = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    raw, calibrated = [], []
    for k in range(n):
        (b1, b2), val = fit(*load(f"{val_prefix}{k}/predictions.csv"))
        logp, y = load(f"{runs}/fold{k}-seed{k}/test_predictions.csv")
        raw.append(100 * balanced_accuracy_score(y, logp.argmax(1)))
        calibrated.append(100 * balanced_accuracy_score(y, (logp + [0, b1, b2]).argmax(1)))
        print(f"run {k}: offsets MCI {b1:+.1f}, AD {b2:+.1f} (validation {100 * val:.1f}); "
              f"test {raw[-1]:.1f} → {calibrated[-1]:.1f}")
    for name, v in [("raw", raw), ("calibrated", calibrated)]:
        print(f"{name}: {np.mean(v):.1f} ± {np.std(v, ddof=1):.1f}")


if __name__ == "__main__":
    main()
