"""Subject-level uncertainty of pooled F1, and paired comparisons between methods.

LOSO results are clustered by subject: a subject's clips share a face, a coder and a session, so
the resampling unit is the subject, never the clip. Everything here works on per-subject
confusion counts ``[runs, subjects, AUs, 4]`` (tp, fp, fn, tn over the clips whose label is known;
``runs`` are the seeds of one row), so a pooled F1 is recomputed from summed counts, exactly as
``suite.metrics`` computes it from the predictions.

* ``bootstrap_interval``: a 95 % subject-bootstrap interval of the pooled F1 (mean over runs),
  by default ``INTERVAL_METHOD``: a studentised (percentile-t) bootstrap over subjects on the
  logit scale whose t* quantiles are taken at ``CALIBRATED_T_LEVEL``, the level at which it covered
  the population pooled F1 in ≥ 95 % of simulated CASME II-like datasets of 26 subjects
  (``tests/simulate_regimes.py``; scipy's BCa, the method before, covered 86–88 % there, the plain
  95 % percentile-t 92–94 %; docs/protocol.md, "Interval coverage"). The interval is conditional on the chosen models — it says how much the figure moves
  when other subjects are drawn, not how much retraining or re-searching would move it.
  ``interval_label(n_subjects)`` is the text to show with it: below ``MIN_RELIABLE_SUBJECTS`` it
  says "too few subjects for a reliable interval".
* ``paired_test``: scipy's paired permutation test over subjects (each subject's predictions of
  the two methods swapped or not) of the difference of the two rows' F1 as the cells show it (the
  mean over runs of each run's pooled F1);
  ``holm`` corrects a family of such p-values (scipy has no Holm step-down).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import special, stats

from .metrics import confusion_counts, f1_from_counts

N_BOOTSTRAP = 2000
N_PERMUTATIONS = 9999
CONFIDENCE = 0.95
SEED = 0
# Interval methods (``bootstrap_interval(method=...)``): scipy's "BCa" and "percentile" on the
# pooled F1; "percentile-t": studentised subject bootstrap on the logit scale at the nominal
# level; "percentile-t-calibrated" (the default): the same with its t* quantiles at
# CALIBRATED_T_LEVEL, chosen by simulation (tests/simulate_regimes.py, docs/protocol.md).
INTERVAL_METHODS = ("BCa", "percentile", "percentile-t", "percentile-t-calibrated")
INTERVAL_METHOD = "percentile-t-calibrated"
INTERVAL_METHOD_NAME = "studentised subject bootstrap on the logit scale, simulation-calibrated"
CALIBRATED_T_LEVEL = 0.975
_LOGIT_EPS = 1e-4
INTERVAL_LABEL = f"95% subject-bootstrap interval ({INTERVAL_METHOD_NAME}, 2000 resamples), conditional on the chosen models"


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


def _jackknife_sd(g: np.ndarray, axis: int) -> np.ndarray:
    """Jackknife standard error from leave-one-out values along ``axis``."""
    n = g.shape[axis]
    return np.sqrt((n - 1) / n * np.sum((g - g.mean(axis, keepdims=True)) ** 2, axis))


def _logit(x: np.ndarray) -> np.ndarray:
    return special.logit(np.clip(x, _LOGIT_EPS, 1 - _LOGIT_EPS))


def _loo_f1(sums: np.ndarray, subject_counts_: np.ndarray, variant: str) -> np.ndarray:
    """Row F1 with each subject left out: sums [..., R, K, 4], counts [..., R, S, K, 4] → [..., S]."""
    loo = sums[..., :, None, :, :] - subject_counts_  # [..., R, S, K, 4]
    return f1_from_counts(loo, variant).mean(-1).mean(-2)  # AUs, then runs


def _studentised(counts: np.ndarray, variant: str, n_resamples: int, seed: int, level: float) -> tuple[float, float]:
    """Percentile-t (bootstrap-t) interval over subjects on the logit scale: t* = (g(F1*) − g(F1)) / se*,
    the standard error of every resample from its own jackknife over its subjects (the pooled F1 is
    a function of summed counts, so a leave-one-out is a subtraction); the interval is
    g⁻¹(g(F1) − t*_{hi} se, g(F1) − t*_{lo} se) with the t* quantiles at (1 ± level) / 2. scipy
    draws the resamples and evaluates t*; the quantiles come from its bootstrap distribution."""
    g, g_inv = _logit, special.expit
    counts = counts.astype(float)
    sums = counts.sum(1)  # [R, K, 4]
    theta = g(pooled_f1(counts, variant).mean())
    se = _jackknife_sd(g(_loo_f1(sums, counts, variant)), -1)

    def statistic(i, axis=-1):  # i [..., S]
        resampled = np.moveaxis(counts[:, i], 0, -4)  # [..., R, S, K, 4]
        rsums = resampled.sum(-3)
        est = g(f1_from_counts(rsums, variant).mean(-1).mean(-1))
        se_star = _jackknife_sd(g(_loo_f1(rsums, resampled, variant)), -1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(se_star > 0, (est - theta) / se_star, np.where(est == theta, 0.0, np.sign(est - theta) * np.inf))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # resamples of one repeated subject: t* = ±inf, below
        res = stats.bootstrap((np.arange(counts.shape[1]),), statistic, vectorized=True, n_resamples=n_resamples, batch=250,
                              confidence_level=level, method="percentile", rng=np.random.default_rng(seed))
    if not se > 0:  # no subject moves the F1: the caller's zero-width interval
        return float("nan"), float("nan")
    # a resample whose subjects all score alike has no spread (t* = ±inf): such tails reach the
    # bounds 0 and 1, i.e. no information, rather than a zero-width interval
    t = np.nan_to_num(res.bootstrap_distribution, posinf=1e6, neginf=-1e6)
    alpha = (1 - level) / 2
    t_lo, t_hi = np.quantile(t, [alpha, 1 - alpha])
    value = _row_f1(counts, variant)  # a bound at t* = 0 is the estimate itself, not its logit round trip
    return (value if t_hi == 0 else float(g_inv(theta - t_hi * se)), value if t_lo == 0 else float(g_inv(theta - t_lo * se)))


def _scipy_interval(counts: np.ndarray, variant: str, n_resamples: int, seed: int, method: str) -> tuple[float, float]:
    def statistic(i, axis=-1):  # i [..., S]: resampled subject indices
        resampled = np.moveaxis(counts[:, i], 0, -4)  # [..., R, S, K, 4]
        return pooled_f1(resampled, variant).mean(-1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples: handled below
        res = stats.bootstrap((np.arange(counts.shape[1]),), statistic, vectorized=True, n_resamples=n_resamples,
                              confidence_level=CONFIDENCE, method=method, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def bootstrap_interval(counts: np.ndarray, variant: str, n_resamples: int = N_BOOTSTRAP, seed: int = SEED,
                       method: str | None = None) -> tuple[float, float]:
    """95 % interval of the row's F1 (mean over runs of the pooled F1) over resampled subjects;
    ``counts`` [R, S, K, 4]; ``method`` one of ``INTERVAL_METHODS`` (default ``INTERVAL_METHOD``).
    A statistic that cannot move (e.g. every resample scores the same) gives a zero-width
    interval at the value."""
    method = INTERVAL_METHOD if method is None else method
    if method not in INTERVAL_METHODS:
        raise ValueError(f"unknown interval method {method!r}; choose one of {INTERVAL_METHODS}")
    counts = np.asarray(counts)
    value = _row_f1(counts, variant)
    if counts.shape[1] < 2:
        return value, value
    if method.startswith("percentile-t"):
        level = CALIBRATED_T_LEVEL if method == "percentile-t-calibrated" else CONFIDENCE
        lo, hi = _studentised(counts, variant, n_resamples, seed, level)
    else:
        lo, hi = _scipy_interval(counts, variant, n_resamples, seed, method)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return value, value
    return lo, hi


# Coverage of the population pooled F1 by INTERVAL_METHOD's interval, measured by
# ``python tests/simulate_regimes.py --populations 500`` (seed 0, 2000 resamples; docs/protocol.md):
# (regime, variant, subjects) -> share of 500 simulated datasets whose interval held the truth.
SIMULATED_COVERAGE: dict[tuple[str, str, int], float] = {
    ("casme2", "binary", 26): 0.968, ("casme2", "macro", 26): 0.972, ("casme2", "binary", 8): 0.960, ("casme2", "macro", 8): 0.944,
    ("samm", "binary", 29): 0.960, ("samm", "macro", 29): 0.952, ("samm", "binary", 8): 0.960, ("samm", "macro", 8): 0.958,
}
SIMULATED_REGIMES = {"casme2": ("CASME II-like", 26), "samm": ("SAMM-like", 29)}
MIN_RELIABLE_SUBJECTS = 15
TOO_FEW_SUBJECTS = "too few subjects for a reliable interval"


def interval_reliable(n_subjects: int) -> bool:
    """Whether an interval over ``n_subjects`` may be shown as a plain 95 % interval."""
    return n_subjects >= MIN_RELIABLE_SUBJECTS


def interval_label(n_subjects: int, variant: str = "binary", dataset: str = "casme2") -> str:
    """The text to show with an interval over ``n_subjects`` subjects: its method and the coverage
    measured in the simulated regime of ``dataset`` (``SIMULATED_REGIMES``; another release: says it was not simulated) at the
    regime's own subject count; with fewer than ``MIN_RELIABLE_SUBJECTS`` subjects, "too few
    subjects for a reliable interval" with the coverage the simulation gave at 8 subjects."""
    if dataset not in SIMULATED_REGIMES:  # never borrow another release's coverage
        what = TOO_FEW_SUBJECTS if not interval_reliable(n_subjects) else "95 % subject-bootstrap interval"
        return (f"{what} ({n_subjects} subjects; {INTERVAL_METHOD_NAME}; its coverage has not been simulated for "
                f"{dataset}'s regime: tests/simulate_regimes.py)")
    regime = dataset
    name, full = SIMULATED_REGIMES[regime]
    variant = variant if variant in ("binary", "macro") else "binary"
    if not interval_reliable(n_subjects):
        at8 = SIMULATED_COVERAGE[regime, variant, 8]
        return (f"{TOO_FEW_SUBJECTS} ({n_subjects} subjects; the subject-bootstrap interval, {INTERVAL_METHOD_NAME}, "
                f"covered {100 * at8:.0f} % with 8 subjects in a {name} simulation, resting on that simulation's assumptions)")
    cov = SIMULATED_COVERAGE[regime, variant, full]
    return (f"95 % subject-bootstrap interval ({INTERVAL_METHOD_NAME}; covered {100 * cov:.0f} % "
            f"in a {name} simulation with {full} subjects)")


def paired_test(a: np.ndarray, b: np.ndarray, variant: str, n_resamples: int = N_PERMUTATIONS, seed: int = SEED) -> dict:
    """Two-sided paired permutation test over subjects of row F1(a) − row F1(b), where a row's F1
    is what its cell shows: the mean over its runs of each run's pooled F1. ``a``, ``b`` counts
    [Ra, S, K, 4] and [Rb, S, K, 4] on the same subjects in the same order. A permutation swaps a
    subject's clips between the methods in every run; rows with different run counts are tiled to
    a common count (lcm), which leaves each row's mean over runs unchanged, so the observed
    difference is exactly the difference of the displayed cells. Returns difference and p-value."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    runs = int(np.lcm(len(a), len(b)))
    tiled = [np.tile(x, (runs // len(x), 1, 1, 1)) for x in (a, b)]
    both = np.concatenate([np.swapaxes(x, 0, 1) for x in tiled])  # [2S, runs, K, 4]: subject first
    n = a.shape[1]

    def row_f1(i):  # i [..., S] → [...]
        return pooled_f1(np.swapaxes(both[i], -3, -4), variant).mean(-1)

    def statistic(ia, ib, axis=-1):
        return row_f1(ia) - row_f1(ib)

    res = stats.permutation_test((np.arange(n), np.arange(n, 2 * n)), statistic, permutation_type="samples", vectorized=True,
                                 n_resamples=n_resamples, alternative="two-sided", batch=max(1, 2_000_000 // both[0].size // n),
                                 rng=np.random.default_rng(seed))
    return {"difference": float(res.statistic), "p": float(res.pvalue)}


def holm(pvalues: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error over the comparisons), input order."""
    p = np.asarray(pvalues, float)
    order = np.argsort(p)
    adjusted = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]).clip(max=1.0)
    out = np.empty_like(p)
    out[order] = adjusted
    return out.tolist()
