"""The losses every detector shares: per-AU pos_weight from the training fold and a weighted BCE
(``suite.models.detector.Detector`` holds the buffer and builds the output dict).

Losses take a per-label ``weight`` [B, K]: 0 for the padding of a fold-batched minibatch and for
labels the coding sheet leaves unknown (per-AU masks), so neither enters the loss."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def pos_weight_from_labels(labels: np.ndarray, known: np.ndarray, enabled: bool = True, max_weight: float = 20.0) -> torch.Tensor:
    """negatives / positives per AU among the training fold's known labels, clipped to [1, max_weight]."""
    y, known = np.asarray(labels, float), np.asarray(known, bool)
    pos, neg = (y * known).sum(0), ((1 - y) * known).sum(0)
    pw = np.clip(neg / np.maximum(pos, 1), 1.0, max_weight) if enabled else np.ones(y.shape[1])
    return torch.as_tensor(pw, dtype=torch.float32)


def weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-label ``values`` [B, K] (or per-sample [B]: a sample counts when any of its
    labels does) over the entries ``weight`` [B, K] keeps; 0 when it keeps none."""
    if weight is None:
        return values.mean()
    if values.dim() == 1:
        weight = weight.amax(-1)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def weighted_bce(logits: torch.Tensor, y: torch.Tensor, pos_weight: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """BCE with per-AU ``pos_weight``, averaged over the (weighted) labels."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), y.float(), pos_weight=pos_weight, reduction="none")
    return weighted_mean(bce, weight)
