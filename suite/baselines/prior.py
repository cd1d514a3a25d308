"""Floor: each AU predicted present at random with its training-fold prevalence.

Its expected pooled F1 per AU equals the prevalence p (vs 2p/(1+p) for ``constant``). Draws are
seeded per fold, so a run is reproducible."""
from __future__ import annotations

import numpy as np
import torch

from ..models.detector import Detector, Method


class PriorDetector(Detector):
    def __init__(self, n_aus: int):
        super().__init__(n_aus)
        self.register_buffer("prevalence", torch.full((n_aus,), 0.5))
        self.generator = torch.Generator()

    def on_fold_start(self, labels: np.ndarray, known: np.ndarray) -> None:
        super().on_fold_start(labels, known)
        y, known = np.asarray(labels, float), np.asarray(known, bool)
        prevalence = (y * known).sum(0) / np.maximum(known.sum(0), 1)
        self.prevalence.copy_(torch.as_tensor(prevalence, dtype=torch.float32))
        self.generator.manual_seed(int(torch.initial_seed() % 2**31))

    def forward(self, batch: dict) -> dict:
        n = batch["apex"].shape[0]
        draw = torch.rand(n, len(self.prevalence), generator=self.generator).to(self.prevalence.device) < self.prevalence
        return {"logits": torch.where(draw, 20.0, -20.0)}


def build_prior(hp: dict, aus) -> PriorDetector:
    return PriorDetector(len(aus))


METHODS = (Method("prior", build_prior, {"epochs": 0}, "floor: each AU present at random with its training-fold prevalence"),)
