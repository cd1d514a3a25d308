"""Selection after a search, from the trials' stored fold outputs.

* **Nested** (headline, unbiased): for each outer fold, the trial with the best *inner-validation*
  F1 on that fold is chosen; the test predictions of those choices, pooled over folds, give the
  nested F1. The test subject never influences which trial is chosen for its fold.
* **Selected on test folds** (as most papers): the trial whose pooled *outer* F1 is best —
  shown next to the nested figure so readers see the optimism of selecting on test data.
* **Selected configuration** for the final seeds: the trial with the best mean inner F1 over
  folds (no test data involved).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .engine import FoldOutput
from .metrics import f1_per_au


@dataclass
class TrialOutputs:
    trial_id: str
    params: dict
    hparams: dict
    folds: dict[int, FoldOutput]  # by fold index

    @property
    def mean_inner_f1(self) -> float:
        return float(np.mean([f.inner_f1 for f in self.folds.values()]))


def _pooled_f1(outputs: list[FoldOutput], labels: np.ndarray, known: np.ndarray) -> float:
    idx = np.concatenate([o.test for o in outputs])
    pred = np.concatenate([o.prob >= o.threshold for o in outputs])
    keep = known[idx]
    return float(f1_per_au(labels[idx][keep], pred[keep]).mean())


def nested_choice(trials: list[TrialOutputs]) -> dict[int, TrialOutputs]:
    """Per fold, the trial with the best inner F1 (ties → the earlier trial in ``trials``)."""
    folds = sorted(set.intersection(*(set(t.folds) for t in trials)))
    return {f: max(trials, key=lambda t: (t.folds[f].inner_f1, -trials.index(t))) for f in folds}


def best_on_test_folds(trials: list[TrialOutputs], labels: np.ndarray, known: np.ndarray) -> tuple[TrialOutputs, float]:
    scored = [(_pooled_f1(list(t.folds.values()), labels, known), -i, t) for i, t in enumerate(trials)]
    f1, _, trial = max(scored, key=lambda x: (x[0], x[1]))
    return trial, f1


def best_by_inner(trials: list[TrialOutputs]) -> TrialOutputs:
    return max(trials, key=lambda t: (t.mean_inner_f1, -trials.index(t)))
