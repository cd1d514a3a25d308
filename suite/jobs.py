"""What an engine executes: one model job and its result.

The fold protocol (``suite.folds``) turns tasks into jobs; the sequential engine
(``suite.engine.SequentialEngine.run_job``) and the fold-batched one (``suite.batched.run_jobs``) are
interchangeable executors of them: a job says everything its model's numbers depend on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ModelJob:
    """One model: built from ``seed`` with hyper-parameters ``hp``, trained on ``train`` (clips with
    a known label) for ``epochs`` with its own random stream ``stream`` (``suite.streams``),
    predicting ``evaluate`` after every epoch (``every_epoch``) or once, after its last."""

    hp: dict
    seed: int
    stream: int
    train: np.ndarray
    evaluate: np.ndarray
    epochs: int
    every_epoch: bool = True


@dataclass
class JobResult:
    epochs: list[int]  # epoch numbers predicted at (0: the untrained model)
    probs: np.ndarray  # [E, n_eval, K] (epochs done; fewer when it failed)
    losses: list[float]  # mean training loss of every epoch trained
    failed_at: int | None = None
    reason: str | None = None
    recognition: np.ndarray | None = None  # [n_eval, classes] at the last prediction, when the model gives them
