"""What every detector shares: per-AU pos_weight from the training fold, and the output dict."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def pos_weight_from_labels(labels: np.ndarray, enabled: bool = True, max_weight: float = 20.0) -> torch.Tensor:
    """negatives / positives per AU on the training fold, clipped to [1, max_weight]."""
    y = np.asarray(labels, float)
    pos = y.sum(0)
    pw = np.clip((len(y) - pos) / np.maximum(pos, 1), 1.0, max_weight) if enabled else np.ones(y.shape[1])
    return torch.as_tensor(pw, dtype=torch.float32)


def weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-sample ``values`` [B]; with ``weight`` [B] (0 for padding in a fold-batched
    minibatch) the mean over the weighted samples (0 when none is)."""
    if weight is None:
        return values.mean()
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def weighted_bce(logits: torch.Tensor, y: torch.Tensor, pos_weight: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """BCE with per-AU ``pos_weight``, averaged over AUs and (weighted) samples."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), y.float(), pos_weight=pos_weight, reduction="none")
    return weighted_mean(bce.mean(-1), weight)


class MultiLabelDetector(nn.Module):
    """Base for detectors trained with BCE(pos_weight): holds the buffer, sets it per fold, and
    builds the output dict so subclasses only produce logits."""

    encoder_frozen = False

    def __init__(self, n_aus: int, use_pos_weight: bool = True):
        super().__init__()
        self.use_pos_weight = use_pos_weight
        self.register_buffer("pos_weight", torch.ones(n_aus))

    def on_fold_start(self, train_labels: np.ndarray) -> None:
        self.pos_weight.copy_(pos_weight_from_labels(train_labels, self.use_pos_weight))

    def outputs(self, logits: torch.Tensor, batch: dict) -> dict:
        out = {"logits": logits}
        if "au" in batch:
            out["loss"] = weighted_bce(logits, batch["au"], self.pos_weight, batch.get("weight"))
        return out
