"""Every choice behind a reported number, and whose labels made it.

The selection graph (arrows: "the labels of … choose …"; ``k`` is an outer fold, ``V_k`` its
inner-validation subjects, ``T_k = {k}`` its test subject)::

    inside one task (suite.folds.run_tasks, selection "inner"):
        V_k            → epoch count, per-AU thresholds applied to T_k
        V_k (halves)   → inner F1 of the run (2-fold cross-fitting): each half of V_k predicted
                         with the epoch and thresholds chosen on the other half, F1 computed once on
                         the pooled out-of-half predictions of all of V_k (a half is never scored
                         alone); < 2 subjects in V_k: fixed epochs and threshold 0.5, nothing chosen
    strictly nested search (the headline, ``strict_nested``):
        V_k            → every proposal of fold k's own Optuna study, and (``--fidelity``) which
                         of them are confirmed at the higher fidelity
        V_k            → the configuration that predicts T_k (best inner F1 in fold k's study)
        T_k            → nothing
    shared search (``shared_nested``, ``--selection shared``):
        V_j for all j  → proposals (an adaptive sampler is told the mean inner F1 over folds,
                         and subject k is in V_j of other folds j); with a data-independent
                         sampler (random) no labels choose proposals
        V_k            → the configuration that predicts T_k
    common candidates (proposals every fold ran, e.g. the sampler's start-up):
        T_k for all k  → ``selected_on_test_folds`` (best pooled test F1, as most papers): optimistic
        V_j for all j  → ``deployment`` configuration (best mean inner F1): chosen on every
                         subject, so its test score is optimistic too
    every proposal of every fold study:
        T_k for all k  → ``selected_per_test_fold``: per fold, the proposal of its study that
                         maximises the pooled test F1 (``chosen_per_test_fold``): optimistic
    single runs (``suite.train``): ``fixed_epochs`` (nothing chosen) or ``inner_validation``
    (V_k → epochs and thresholds of fold k); a configuration copied from a search's deployment
    row (``--from-search``) is ``deployment_copy``: V_j for all j chose it

The labels, their names and whether each is ranked: ``suite.regimes``.

Ties are broken by proposal number (never by Ray's trial ids), epochs by the earliest, thresholds
by the middle of the tied range (see ``choose_thresholds``).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .metrics import f1_from_counts, f1_per_au

THRESHOLD_GRID = np.round(np.linspace(0.05, 0.95, 19), 2)
SCHEMA_VERSION = 2

# --- inside one run: epochs and thresholds -------------------------------------------------
# Every function below takes the F1 ``variant`` (``suite.metrics.F1_VARIANTS``) that chooses, and
# ``known`` [n, K]: the labels the coding sheet leaves unknown never influence a choice.
def _known(y: np.ndarray, known: np.ndarray | None) -> np.ndarray:
    return np.ones(y.shape, bool) if known is None else known


def choose_thresholds(y: np.ndarray, prob: np.ndarray, variant: str = "binary", known: np.ndarray | None = None) -> np.ndarray:
    """Per-AU threshold maximising F1 on ``prob``; 0.5 for an AU without known positives. Ties:
    the middle of the tied grid values (upper middle when even) — neither the lowest threshold,
    which over-predicts positives on new subjects, nor the highest."""
    known = _known(y, known)
    out = np.full(y.shape[1], 0.5)
    for k in range(y.shape[1]):
        if (y[:, k] * known[:, k]).sum() == 0:
            continue
        yk, pk = y[known[:, k], k], prob[known[:, k], k]
        # every grid threshold at once: column t holds the predictions at THRESHOLD_GRID[t]
        scores = f1_per_au(np.repeat(yk[:, None], len(THRESHOLD_GRID), 1), pk[:, None] >= THRESHOLD_GRID[None], variant)
        tied = np.flatnonzero(scores >= scores.max() - 1e-12)
        out[k] = THRESHOLD_GRID[tied[len(tied) // 2]]
    return out


def choose_epoch(y: np.ndarray, probs: np.ndarray, variant: str = "binary", known: np.ndarray | None = None) -> int:
    """Position (in ``probs`` [E, n, K]) of the epoch with the best F1 at threshold 0.5; ties: the earliest."""
    scores = [f1_per_au(y, p >= 0.5, variant, known).mean() for p in probs]
    return int(np.argmax(scores))


def pick(y: np.ndarray, probs: np.ndarray, variant: str = "binary", known: np.ndarray | None = None) -> tuple[int, np.ndarray]:
    """(epoch position, thresholds) chosen on ``probs`` [E, n, K] with labels ``y`` [n, K]."""
    e = choose_epoch(y, probs, variant, known)
    return e, choose_thresholds(y, probs[e], variant, known)


def halves(subjects: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The inner-validation samples split by subject into two halves (sorted subjects, alternating);
    None with fewer than two subjects."""
    order = sorted(set(subjects.tolist()))
    if len(order) < 2:
        return None
    a = np.isin(subjects, order[0::2])
    return np.flatnonzero(a), np.flatnonzero(~a)


def out_of_half_predictions(y: np.ndarray, probs: np.ndarray, subjects: np.ndarray, variant: str = "binary",
                             known: np.ndarray | None = None) -> np.ndarray | None:
    """Binary predictions [n, K] for every inner-validation sample, each half (``halves``) predicted
    with the epoch and thresholds ``pick`` chose on the other half; None with fewer than two subjects."""
    known = _known(y, known)
    split = halves(subjects)
    if split is None:
        return None
    pred = np.zeros(y.shape, bool)
    for choose_on, score_on in (split, split[::-1]):
        e, thr = pick(y[choose_on], probs[:, choose_on], variant, known[choose_on])
        pred[score_on] = probs[e][score_on] >= thr
    return pred


def crossfit_inner_f1(y: np.ndarray, probs: np.ndarray, subjects: np.ndarray, variant: str = "binary",
                      known: np.ndarray | None = None) -> float:
    """Honest inner F1 (2-fold cross-fitting over subjects): each half of the inner-validation
    subjects is predicted with the epoch and thresholds chosen on the other half, and F1 is computed
    once, per AU on the known labels, on these pooled out-of-half predictions of all samples, then
    averaged over AUs — like the pooled headline. A half is never scored on its own: an AU with
    positives in either half counts once, and a half without an AU's positives (frequent with a few
    inner-validation subjects) cannot reward a model that never predicts that AU (macro F1 1.0 on
    such a half alone). An AU with no known positive among all the inner-validation subjects is not
    scored: nothing there tells a detector from a model silent on the AU, and macro F1 would give
    silence 1.0 and any false positive less; with no scorable AU the score is 0 for every
    configuration (a constant: it ranks nothing). Fewer than two subjects: the last epoch at
    threshold 0.5 (nothing is chosen on the scored predictions)."""
    known = _known(y, known)
    pred = out_of_half_predictions(y, probs, subjects, variant, known)
    if pred is None:
        pred = probs[-1] >= 0.5
    scorable = ((y == 1) & known).any(0)
    if not scorable.any():
        return 0.0
    return float(f1_per_au(y, pred, variant, known)[scorable].mean())


def inner_choice(y: np.ndarray, probs: np.ndarray, subjects: np.ndarray, variant: str = "binary",
                 known: np.ndarray | None = None) -> tuple[int, np.ndarray, float]:
    """What one run chooses on its inner-validation predictions ``probs`` [E, n, K]: (epoch
    position, thresholds, cross-fitted inner F1). With fewer than two subjects: the last epoch
    and 0.5, nothing chosen."""
    if halves(subjects) is None:
        chosen, threshold = len(probs) - 1, np.full(y.shape[1], 0.5)
    else:
        chosen, threshold = pick(y, probs, variant, known)
    return chosen, threshold, crossfit_inner_f1(y, probs, subjects, variant, known)


# --- across a search -----------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One configuration evaluated on one outer fold (a task of a round)."""

    fold: int
    number: int  # proposal number in its study (tie-breaker)
    params_key: str  # canonical JSON of the hyper-parameters
    inner_f1: float
    payload: object = field(default=None, compare=False)  # the task's outputs (test predictions)


def per_fold_choice(candidates: Iterable[Candidate]) -> dict[int, Candidate]:
    """Per fold, the candidate with the best inner F1 (ties → the lowest proposal number)."""
    best: dict[int, Candidate] = {}
    for c in candidates:
        b = best.get(c.fold)
        if b is None or (c.inner_f1, -c.number) > (b.inner_f1, -b.number):
            best[c.fold] = c
    return dict(sorted(best.items()))


def common_candidates(candidates: Sequence[Candidate], folds: Sequence[int]) -> dict[str, list[Candidate]]:
    """Configurations evaluated on every fold → their candidates in fold order, keyed by params,
    in order of first proposal number."""
    by_key: dict[str, dict[int, Candidate]] = {}
    for c in sorted(candidates, key=lambda c: (c.number, c.fold)):
        by_key.setdefault(c.params_key, {}).setdefault(c.fold, c)
    return {k: [v[f] for f in folds] for k, v in by_key.items() if all(f in v for f in folds)}


def deployment_choice(common: dict[str, list[Candidate]]) -> str | None:
    """The common configuration with the best mean inner F1 over all folds (ties → first proposed)."""
    if not common:
        return None
    return max(common, key=lambda k: (np.mean([c.inner_f1 for c in common[k]]), -min(c.number for c in common[k])))


def chosen_on_test_folds(common: dict[str, list[Candidate]], pooled_test_score) -> str | None:
    """The common configuration whose pooled test score (``pooled_test_score(list of candidates)``)
    is best (ties → first proposed): what selecting on test folds gives."""
    if not common:
        return None
    return max(common, key=lambda k: (pooled_test_score(common[k]), -min(c.number for c in common[k])))


def chosen_per_test_fold(candidates: Iterable[Candidate], start: dict[int, Candidate], test_counts, variant: str) -> dict[int, Candidate]:
    """Per fold, among every candidate of that fold, the one that maximises the pooled test F1 of
    all folds together (``test_counts(candidate)`` → its confusion counts [K, 4] on its fold's test
    clips): coordinate ascent over folds in order from ``start``, a fold's choice changing only for
    a strictly better pooled F1 (ties → the earlier proposal), until a pass changes nothing. What
    selecting on the test folds over every proposal gives (a local optimum: at least that much)."""
    by_fold: dict[int, list[Candidate]] = {}
    for c in candidates:
        by_fold.setdefault(c.fold, []).append(c)
    counts = {id(c): np.asarray(test_counts(c), float) for cs in by_fold.values() for c in cs}
    choice = dict(start)
    total = sum(counts[id(c)] for c in choice.values())
    score = lambda t: float(f1_from_counts(t, variant).mean())
    changed = True
    while changed:
        changed = False
        for f in sorted(by_fold):
            rest = total - counts[id(choice[f])]
            best = choice[f]
            for c in sorted(by_fold[f], key=lambda c: c.number):
                if score(rest + counts[id(c)]) > score(rest + counts[id(best)]) + 1e-12:
                    best = c
            if best is not choice[f]:
                choice[f], total, changed = best, rest + counts[id(best)], True
    return dict(sorted(choice.items()))


def top_per_fold(candidates: Iterable[Candidate], k: int) -> dict[int, list[Candidate]]:
    """Per fold, its ``k`` best candidates by inner F1 (ties → lower proposal number)."""
    by_fold: dict[int, list[Candidate]] = {}
    for c in candidates:
        by_fold.setdefault(c.fold, []).append(c)
    return {f: sorted(cs, key=lambda c: (-c.inner_f1, c.number))[:k] for f, cs in sorted(by_fold.items())}
