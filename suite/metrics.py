"""Pure metric functions (arrays in, numbers out), checked against scikit-learn in tests.

AU detection, per AU on the clips whose label for that AU is known (``known`` masks), in two F1
variants — the field prints both and they differ by 25–35 points on the same predictions:

* ``binary``: F1 of the positive class (the headline by default: the stricter one for rare AUs);
* ``macro``: mean of the positive- and negative-class F1 over the classes present in truth or
  prediction (scikit-learn's ``f1_score(average="macro")`` on that AU's labels).

Both pooled over all outer folds (headline, averaged over the dataset's AUs) and as the mean over
folds of the F1 inside each fold (what some papers report); per-AU ROC AUC.
Recognition: UF1 (mean per-class F1), UAR (mean per-class recall), WF1 (support-weighted F1),
accuracy."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from .emotions import CASME2_CLASSES, OBJECTIVE_CLASSES, casme2_emotion, objective_class

F1_VARIANTS = ("binary", "macro")
F1_LABELS = {"binary": "binary F1 (positive class)", "macro": "macro F1 (mean of positive- and negative-class F1)"}


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """Per AU (tp, fp, fn, tn) over the clips whose label is known: [K, 4] for [n, K] inputs."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    known = np.ones_like(y_true) if known is None else np.asarray(known, bool)
    return np.stack([np.sum(known & y_true & y_pred, 0), np.sum(known & ~y_true & y_pred, 0),
                     np.sum(known & y_true & ~y_pred, 0), np.sum(known & ~y_true & ~y_pred, 0)], -1).astype(np.int64)


def f1_from_counts(counts: np.ndarray, variant: str = "binary") -> np.ndarray:
    """F1 per leading index from (tp, fp, fn, tn) counts [..., 4]; vectorised (bootstrap).
    A class with no true and no predicted samples scores 0 (binary) or is left out (macro)."""
    counts = np.asarray(counts, float)
    tp, fp, fn, tn = np.moveaxis(counts, -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pos = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        if variant == "binary":
            return pos
        if variant != "macro":
            raise ValueError(f"unknown F1 variant {variant!r}; choose one of {F1_VARIANTS}")
        neg = np.where(tn + fp + fn > 0, 2 * tn / (2 * tn + fp + fn), 0.0)
        present = (tp + fp + fn > 0).astype(float) + (tn + fp + fn > 0)
        return np.where(present > 0, (pos + neg) / np.maximum(present, 1), 0.0)


def binary_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of the positive class of one label vector; 0 when there are no true and no predicted positives."""
    return float(f1_per_au(np.asarray(y_true)[:, None], np.asarray(y_pred)[:, None])[0])


def f1_per_au(y_true: np.ndarray, y_pred: np.ndarray, variant: str = "binary", known: np.ndarray | None = None) -> np.ndarray:
    return f1_from_counts(confusion_counts(y_true, y_pred, known), variant)


def fold_mean_f1(y_true: np.ndarray, y_pred: np.ndarray, folds: np.ndarray, variant: str = "binary",
                 known: np.ndarray | None = None) -> np.ndarray:
    """Per AU, the mean over folds of the F1 inside each fold."""
    known = np.ones(np.shape(y_true), bool) if known is None else known
    return np.mean([f1_per_au(y_true[folds == f], y_pred[folds == f], variant, known[folds == f]) for f in np.unique(folds)], 0)


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


def recognition_metrics(dataset: str, pred_sets: list[set[int]], emotions: Sequence[str], objective: Sequence[int],
                        true_sets: list[set[int]], prompted: dict[str, list] | None = None) -> dict:
    """Emotion-label-free ME recognition: predicted AU sets → classes by rule tables, scored
    against the dataset's labels. CASME II: 5 emotion classes and objective classes; SAMM:
    objective classes (no published AU → SAMM-emotion rule table). Each task also carries its
    ``oracle``: the true labels of the evaluated AUs through the same rules — the ceiling of
    perfect detection, below 1 because the rules also use AUs outside the evaluated set.
    ``prompted``: task → the classes a model recognised through text prompts, scored the same way
    as ``<task>_prompt`` (no rule, so no oracle)."""
    out = {}
    tasks = []
    if dataset == "casme2":
        tasks.append(("emotion5", emotions, CASME2_CLASSES, casme2_emotion))
    tasks.append(("objective", objective, OBJECTIVE_CLASSES, objective_class))
    for name, labels, classes, rule in tasks:
        keep = [i for i, c in enumerate(labels) if c in classes]
        if keep:
            truth = [labels[i] for i in keep]
            out[name] = {**classification_scores(truth, [rule(pred_sets[i]) for i in keep], classes),
                         "oracle": classification_scores(truth, [rule(true_sets[i]) for i in keep], classes)}
            if prompted and name in prompted:
                out[f"{name}_prompt"] = classification_scores(truth, [prompted[name][i] for i in keep], classes)
    return out


def detection_metrics(y_true: np.ndarray, prob: np.ndarray, pred: np.ndarray, folds: np.ndarray, aus: Sequence[int],
                      known: np.ndarray | None = None, metric: str = "binary") -> dict:
    """Both F1 variants, pooled and per-fold mean, per AU and averaged; ``metric`` is the
    headline variant (``f1_avg``, ``f1_fold_mean``, ``per_au_f1``)."""
    known = np.ones(np.shape(y_true), bool) if known is None else np.asarray(known, bool)
    names = [f"AU{a}" for a in aus]
    f1 = {}
    for variant in F1_VARIANTS:
        pooled, per_fold = f1_per_au(y_true, pred, variant, known), fold_mean_f1(y_true, pred, folds, variant, known)
        f1[variant] = {"pooled": float(pooled.mean()), "fold_mean": float(per_fold.mean()),
                       "per_au": dict(zip(names, map(float, pooled))), "per_au_fold_mean": dict(zip(names, map(float, per_fold)))}
    return {
        "metric": metric, "f1_avg": f1[metric]["pooled"], "f1_fold_mean": f1[metric]["fold_mean"], "per_au_f1": f1[metric]["per_au"],
        "f1": f1,
        "per_au_auc": {n: roc_auc(y_true[known[:, k], k], prob[known[:, k], k]) for k, n in enumerate(names)},
        "n_masked": {n: int((~known[:, k]).sum()) for k, n in enumerate(names)},
    }
