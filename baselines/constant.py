"""The floor every dataset needs: every AU predicted present, no training.

A constant predictor's pooled F1 per AU is 2p / (1 + p) for prevalence p; any method that does
not beat it has learned nothing."""
from __future__ import annotations

import torch
from torch import nn

from suite.registry import register


class ConstantPresent(nn.Module):
    encoder_frozen = False

    def __init__(self, n_aus: int):
        super().__init__()
        self.n_aus = n_aus

    def forward(self, batch: dict) -> dict:
        n = batch["apex"].shape[0]
        return {"logits": torch.full((n, self.n_aus), 20.0, device=batch["apex"].device)}


@register("constant", {"epochs": 0}, "floor: every AU predicted present")
def build_constant(hp: dict, aus, data_info: dict | None = None) -> ConstantPresent:
    return ConstantPresent(len(aus))
