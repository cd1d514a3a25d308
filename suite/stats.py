"""Subject-level uncertainty of pooled F1, and paired comparisons between methods.

LOSO results are clustered by subject: a subject's clips share a face, a coder and a session, so
the resampling unit is the subject, never the clip. Everything here works on per-subject
confusion counts ``[runs, subjects, AUs, 4]`` (tp, fp, fn, tn over the clips whose label is known;
``runs`` are the seeds of one row), so a pooled F1 is recomputed from summed counts, exactly as
``suite.metrics`` computes it from the predictions.

* ``bootstrap_interval``: scipy's BCa bootstrap over subjects of the pooled F1 (mean over runs):
  the interval is conditional on the chosen models — it says how much the figure moves when
  other subjects are drawn, not how much retraining or re-searching would move it.
* ``paired_test``: scipy's paired permutation test over subjects (each subject's predictions of
  the two methods swapped or not) of the difference in pooled F1, with runs averaged per subject;
  ``holm`` corrects a family of such p-values (scipy has no Holm step-down).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from .metrics import confusion_counts, f1_from_counts

N_BOOTSTRAP = 2000
N_PERMUTATIONS = 9999
CONFIDENCE = 0.95
SEED = 0
INTERVAL_LABEL = "95% subject-bootstrap interval (BCa, 2000 resamples), conditional on the chosen models"


def subject_counts(frame: pd.DataFrame, aus, subjects: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(subjects, counts [S, K, 4]) from a predictions table (``suite.results.predictions_frame``)."""
    cols = [f"AU{a}" for a in aus]
    subjects = sorted(frame["subject"].unique()) if subjects is None else subjects
    out = np.zeros((len(subjects), len(cols), 4), np.int64)
    groups = dict(tuple(frame.groupby("subject")))
    for i, s in enumerate(subjects):
        g = groups.get(s)
        if g is not None:
            out[i] = confusion_counts(g[[f"true_{c}" for c in cols]].to_numpy(), g[[f"pred_{c}" for c in cols]].to_numpy(),
                                      g[[f"known_{c}" for c in cols]].to_numpy(bool))
    return subjects, out


def pooled_f1(counts: np.ndarray, variant: str) -> np.ndarray:
    """Pooled F1 averaged over AUs from counts [..., S, K, 4]: the sum over subjects, per AU."""
    return f1_from_counts(counts.sum(-3), variant).mean(-1)


def _row_f1(counts: np.ndarray, variant: str) -> float:
    return float(pooled_f1(counts, variant).mean())


def bootstrap_interval(counts: np.ndarray, variant: str, n_resamples: int = N_BOOTSTRAP, seed: int = SEED) -> tuple[float, float]:
    """BCa interval of the row's F1 (mean over runs of the pooled F1) over resampled subjects;
    ``counts`` [R, S, K, 4]. A statistic that cannot move (e.g. every resample scores the same)
    gives a zero-width interval at the value."""
    counts = np.asarray(counts)
    n_subjects = counts.shape[1]
    if n_subjects < 2:
        value = _row_f1(counts, variant)
        return value, value

    def statistic(i, axis=-1):  # i [..., S]: resampled subject indices
        resampled = np.moveaxis(counts[:, i], 0, -4)  # [..., R, S, K, 4]
        return pooled_f1(resampled, variant).mean(-1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples: handled below
        res = stats.bootstrap((np.arange(n_subjects),), statistic, vectorized=True, n_resamples=n_resamples,
                              confidence_level=CONFIDENCE, method="BCa", rng=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        value = _row_f1(counts, variant)
        return value, value
    return lo, hi


def paired_test(a: np.ndarray, b: np.ndarray, variant: str, n_resamples: int = N_PERMUTATIONS, seed: int = SEED) -> dict:
    """Two-sided paired permutation test over subjects of pooled F1(a) − F1(b); ``a``, ``b``
    counts [Ra, S, K, 4] and [Rb, S, K, 4] on the same subjects in the same order (runs averaged
    per subject, so rows with different seed counts compare). Returns difference and p-value."""
    a, b = np.asarray(a, float).mean(0), np.asarray(b, float).mean(0)
    both = np.concatenate([a, b])
    n = len(a)

    def statistic(ia, ib, axis=-1):
        return pooled_f1(both[ia], variant) - pooled_f1(both[ib], variant)

    res = stats.permutation_test((np.arange(n), np.arange(n, 2 * n)), statistic, permutation_type="samples", vectorized=True,
                                 n_resamples=n_resamples, alternative="two-sided", rng=np.random.default_rng(seed))
    return {"difference": float(res.statistic), "p": float(res.pvalue)}


def holm(pvalues: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error over the comparisons), input order."""
    p = np.asarray(pvalues, float)
    order = np.argsort(p)
    adjusted = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]).clip(max=1.0)
    out = np.empty_like(p)
    out[order] = adjusted
    return out.tolist()
