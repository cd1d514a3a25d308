"""Frozen-encoder features cached on disk, shared by every trial and seed that can reuse them.

A search over head hyper-parameters (GDLoss, MiAUCL, GDA shape) with a frozen CLIP tower encodes
the same frames with the same weights in every trial. The features are stored once under
``<results>/cache/tokens/<key>.pt``; the key covers everything the features depend on:

* the dataset cache's content fingerprint (frames, crops, image size);
* the model's ``encode_config`` (e.g. Micro-AU CLIP's ``motion`` and token layer);
* a digest of the frozen encoder's weights (so a random-init tower under another seed, or another
  local weights file, is a different entry);
* the device type and precision the features were computed in (bf16 on GPU, fp32 on CPU).

Files are written atomically, so concurrent trials race harmlessly: both compute, one wins.
"""
from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .results import write_atomic

FORMAT_VERSION = 1


def weights_digest(module: nn.Module) -> str:
    """blake2b over every tensor of ``module``'s state dict (names, shapes, dtypes, bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def feature_key(fingerprint: str, encode_config: dict, encoder: nn.Module, precision: str) -> str:
    doc = {"v": FORMAT_VERSION, "data": fingerprint, "encode": encode_config, "weights": weights_digest(encoder),
           "precision": precision}
    return hashlib.blake2b(json.dumps(doc, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def load_or_compute(directory: Path, key: str, compute: Callable[[], torch.Tensor], device) -> tuple[torch.Tensor, bool]:
    """(features on ``device``, True when read from disk)."""
    path = Path(directory) / f"{key}.pt"
    if path.exists():
        return torch.load(path, map_location=device, weights_only=True), True
    features = compute()
    buffer = io.BytesIO()
    torch.save(features.cpu(), buffer)
    write_atomic(path, buffer.getvalue())
    return features, False
