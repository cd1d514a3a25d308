"""The floor every dataset needs: every AU predicted present, no training.

A constant predictor's pooled F1 per AU is 2p / (1 + p) for prevalence p; any method that does
not beat it has learned nothing."""
from __future__ import annotations

import torch

from ..models.detector import Detector, Method


class ConstantPresent(Detector):
    def __init__(self, n_aus: int):
        super().__init__(n_aus)
        self.n_aus = n_aus

    def forward(self, batch: dict) -> dict:
        n = batch["apex"].shape[0]
        return {"logits": torch.full((n, self.n_aus), 20.0, device=batch["apex"].device)}


def build_constant(hp: dict, aus) -> ConstantPresent:
    return ConstantPresent(len(aus))


METHODS = (Method("constant", build_constant, {"epochs": 0}, "floor: every AU predicted present"),)
