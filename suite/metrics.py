"""Pure metric functions (arrays in, numbers out), checked against scikit-learn in tests.

AU detection: binary F1 per AU on predictions pooled over all outer folds (headline, averaged over
the dataset's AUs), per-fold-mean F1 (what some papers report), per-AU ROC AUC.
Recognition: UF1 (mean per-class F1), UAR (mean per-class recall), WF1 (support-weighted F1),
accuracy."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from .emotions import CASME2_CLASSES, OBJECTIVE_CLASSES, casme2_emotion, objective_class


def binary_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of the positive class; 0 when there are no true and no predicted positives."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    tp = np.sum(y_true & y_pred)
    denom = 2 * tp + np.sum(~y_true & y_pred) + np.sum(y_true & ~y_pred)
    return float(2 * tp / denom) if denom else 0.0


def f1_per_au(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    return np.array([binary_f1(y_true[:, k], y_pred[:, k]) for k in range(y_true.shape[1])])


def fold_mean_f1(y_true: np.ndarray, y_pred: np.ndarray, folds: np.ndarray) -> float:
    """Mean over folds of the AU-averaged F1 computed inside each fold (0 where undefined)."""
    return float(np.mean([f1_per_au(y_true[folds == f], y_pred[folds == f]).mean() for f in np.unique(folds)]))


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney with ties); NaN when only one class is present."""
    y_true = np.asarray(y_true, bool)
    pos, neg = score[y_true], score[~y_true]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))  # average ranks over ties
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def classification_scores(y_true: Sequence, y_pred: Sequence, classes: Sequence) -> dict:
    """UF1, UAR, WF1 and accuracy over ``classes`` (samples whose label is not a class are
    excluded by the caller)."""
    y_true, y_pred = np.asarray(y_true, object), np.asarray(y_pred, object)
    f1s, recalls, support = [], [], []
    for c in classes:
        t, p = y_true == c, y_pred == c
        f1s.append(binary_f1(t, p))
        recalls.append(float(np.sum(t & p) / np.sum(t)) if np.sum(t) else 0.0)
        support.append(int(np.sum(t)))
    present = [i for i, n in enumerate(support) if n > 0]
    support_arr = np.array(support, float)
    return {
        "uf1": float(np.mean([f1s[i] for i in present])) if present else float("nan"),
        "uar": float(np.mean([recalls[i] for i in present])) if present else float("nan"),
        "wf1": float(np.dot(f1s, support_arr) / support_arr.sum()) if support_arr.sum() else float("nan"),
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else float("nan"),
        "n": int(len(y_true)),
    }


def recognition_metrics(dataset: str, pred_sets: list[set[int]], emotions: Sequence[str], objective: Sequence[int]) -> dict:
    """Emotion-label-free ME recognition: predicted AU sets → classes by rule tables, scored
    against the dataset's labels. CASME II: 5 emotion classes and objective classes; SAMM:
    objective classes (no published AU → SAMM-emotion rule table)."""
    out = {}
    if dataset == "casme2":
        keep = [i for i, e in enumerate(emotions) if e in CASME2_CLASSES]
        out["emotion5"] = classification_scores([emotions[i] for i in keep], [casme2_emotion(pred_sets[i]) for i in keep], CASME2_CLASSES)
    keep = [i for i, c in enumerate(objective) if c in OBJECTIVE_CLASSES]
    if keep:
        out["objective"] = classification_scores([objective[i] for i in keep], [objective_class(pred_sets[i]) for i in keep], OBJECTIVE_CLASSES)
    return out


def detection_metrics(y_true: np.ndarray, prob: np.ndarray, pred: np.ndarray, folds: np.ndarray, aus: Sequence[int]) -> dict:
    per_au = f1_per_au(y_true, pred)
    return {
        "f1_avg": float(per_au.mean()),
        "f1_fold_mean": fold_mean_f1(y_true, pred, folds),
        "per_au_f1": {f"AU{a}": float(v) for a, v in zip(aus, per_au)},
        "per_au_auc": {f"AU{a}": roc_auc(y_true[:, k], prob[:, k]) for k, a in enumerate(aus)},
    }
