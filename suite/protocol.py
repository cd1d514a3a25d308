"""Leave-one-subject-out outer folds with subject-disjoint inner validation splits.

The promise: no test subject ever contributes to training, epoch choice or thresholds.
``check_disjoint`` is called on every split the engine uses and fails loudly otherwise."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class LeakageError(AssertionError):
    """A subject appears on both sides of a split."""


@dataclass(frozen=True)
class Fold:
    index: int
    test_subject: str
    train: np.ndarray  # sample indices (outer train = inner_train ∪ inner_val)
    test: np.ndarray
    inner_train: np.ndarray
    inner_val: np.ndarray


def check_disjoint(subjects: np.ndarray, a: np.ndarray, b: np.ndarray, what: str) -> None:
    shared = set(subjects[a]) & set(subjects[b])
    if shared:
        raise LeakageError(f"{what}: subject(s) {sorted(shared)} on both sides of the split")


def loso_folds(subjects, inner_val_fraction: float = 0.25, seed: int = 0) -> list[Fold]:
    """One fold per subject (sorted). Inner validation: a seeded, subject-disjoint share of the
    remaining subjects (at least one)."""
    subjects = np.asarray(subjects)
    order = sorted(set(subjects.tolist()))
    if len(order) < 3:
        raise ValueError(f"leave-one-subject-out with inner validation needs at least 3 subjects, got {len(order)}")
    folds = []
    for i, test_subject in enumerate(order):
        rest = [s for s in order if s != test_subject]
        rng = np.random.default_rng([seed, i])
        n_val = max(1, int(round(len(rest) * inner_val_fraction)))
        val_subjects = set(rng.choice(rest, size=n_val, replace=False).tolist())
        test = np.flatnonzero(subjects == test_subject)
        train = np.flatnonzero(subjects != test_subject)
        inner_val = np.flatnonzero(np.isin(subjects, list(val_subjects)))
        inner_train = np.setdiff1d(train, inner_val)
        fold = Fold(i, test_subject, train, test, inner_train, inner_val)
        verify_fold(subjects, fold)
        folds.append(fold)
    return folds


def verify_fold(subjects: np.ndarray, fold: Fold) -> None:
    check_disjoint(subjects, fold.train, fold.test, f"fold {fold.index} train/test")
    check_disjoint(subjects, fold.inner_train, fold.inner_val, f"fold {fold.index} inner train/val")
    check_disjoint(subjects, fold.inner_val, fold.test, f"fold {fold.index} inner val/test")
