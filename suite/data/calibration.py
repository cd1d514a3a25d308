"""Check that a dataset rewards looking at motion: a linear probe on the onset→apex difference
should detect AUs; the same probe on one frame's appearance should not do much better than
predicting every AU present. Used to calibrate the synthetic generator (``docs/datasets.md``;
``tests/test_validate_cache.py`` keeps it so) and usable on a real cache as a sanity check from
Python (``probe_f1``; there is no command for it)."""
from __future__ import annotations

import cv2
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score


def _features(frames: np.ndarray, size: int = 16) -> np.ndarray:
    gray = np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (size, size), interpolation=cv2.INTER_AREA) for f in frames])
    return gray.reshape(len(frames), -1).astype(np.float32) / 255.0


def probe_f1(arrays: dict, aus: tuple[int, ...]) -> dict[str, float]:
    """Mean pooled LOSO F1 over ``aus`` for: the constant 'all present' floor, a logistic
    regression on the apex frame alone, and one on apex − onset."""
    known = np.array([not set(aus) & set(unknown) for unknown in arrays["aus_unknown"]], bool)  # every probed AU known
    subjects = np.asarray(arrays["subject"])[known]
    y = np.array([[a in set(row) for a in aus] for row, k in zip(arrays["aus"], known) if k], int)
    onset, apex = _features(arrays["onset"][known]), _features(arrays["apex"][known])
    inputs = {"apex_only": apex, "motion": (apex - onset) * 10}
    out = {"constant": float(np.mean([f1_score(y[:, k], np.ones(len(y)), zero_division=0) for k in range(len(aus))]))}
    for name, x in inputs.items():
        pred = np.zeros_like(y)
        for subject in np.unique(subjects):
            test = subjects == subject
            for k in range(len(aus)):
                if len(np.unique(y[~test, k])) < 2:
                    pred[test, k] = y[~test, k][0]
                    continue
                clf = LogisticRegression(C=0.1, max_iter=300, class_weight="balanced")
                pred[test, k] = clf.fit(x[~test], y[~test, k]).predict(x[test])
        out[name] = float(np.mean([f1_score(y[:, k], pred[:, k], zero_division=0) for k in range(len(aus))]))
    return out
