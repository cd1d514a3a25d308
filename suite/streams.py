"""Per-model random streams: every random draw of a model comes from its own task, never from
what it shares a batch, process or resume with.

A model trained by either engine is one *role* (``inner``: picks epochs and thresholds on the
inner-validation subjects; ``outer``: predicts the test subject; ``fixed``: fixed epochs) of one
task (fold, configuration, seed). ``model_stream`` turns those into one integer; from it come

* the minibatch order (a ``torch.Generator`` seeded with it, one permutation per epoch), and
* the dropout masks: ``KeyedDropout`` draws its mask from a counter-based hash of
  (stream, the model's step number, the layer's index, the element's position) — no generator
  state, so the vmapped fold-batched engine computes exactly the masks the sequential engine
  computes for each model alone, whichever models share the batch and however a batch is padded
  (a padded minibatch only appends positions).

Initial weights come from the task's seed (``accelerate.utils.set_seed(seed)`` before building):
every fold of one configuration and seed starts from the same weights, in both engines.
"""
from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

ROLES = ("inner", "outer", "fixed")


def model_stream(seed: int, fold: int, role: str, hparams: dict) -> int:
    """The model's stream seed (63 bits) from (seed, fold, role, configuration) alone."""
    if role not in ROLES:
        raise ValueError(f"role {role!r}: one of {ROLES}")
    blob = json.dumps([seed, fold, role, hparams], sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little") >> 1


def step_key(stream: int, step: int, layer: int) -> int:
    """The 32-bit dropout key of one layer at one of the model's optimisation steps (0-based, counted over its epochs)."""
    blob = f"{stream}/{step}/{layer}".encode()
    return int.from_bytes(hashlib.blake2b(blob, digest_size=4).digest(), "little")


def _int32(c: int) -> int:
    return c - (1 << 32) if c >= 1 << 31 else c


_GOLDEN, _FMIX1, _FMIX2 = _int32(0x9E3779B1), _int32(0x85EBCA6B), _int32(0xC2B2AE35)


def _shift_right(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int32 values (``>>`` on a signed tensor is arithmetic)."""
    return (x >> s) & ((1 << (32 - s)) - 1)


def keyed_bits(key: torch.Tensor, shape: torch.Size, device) -> torch.Tensor:
    """24 random bits (int32 in [0, 2^24)) per element of ``shape`` from a 32-bit ``key`` (a
    scalar per model under vmap) and the element's flat position: murmur3's finaliser on
    position × golden ratio + key, in int32 arithmetic, which wraps modulo 2^32 on CPU and CUDA
    (tests/test_models.py checks it against a pure-Python reference). int32 halves the memory
    traffic of int64: a third of the time per mask."""
    n = 1
    for s in shape:
        n *= s
    x = torch.arange(n, device=device, dtype=torch.int32).view(shape) * _GOLDEN + key.to(torch.int32)
    x = x ^ _shift_right(x, 16)
    x = x * _FMIX1
    x = x ^ _shift_right(x, 13)
    x = x * _FMIX2
    return _shift_right(x ^ _shift_right(x, 16), 8)


class KeyedDropout(nn.Module):
    """Dropout whose mask is a function of its ``key`` buffer (set by the engine before every
    training step, ``set_dropout_keys``) and the element's position — the same mask in the
    sequential and the fold-batched engine."""

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout {p}: must be in [0, 1)")
        self.p = float(p)
        self.register_buffer("key", torch.zeros((), dtype=torch.int64), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = keyed_bits(self.key, x.shape, x.device) >= round(self.p * (1 << 24))
        return x * keep.to(x.dtype) / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def dropout_keys(model: nn.Module) -> list[str]:
    """Names of the model's ``KeyedDropout`` key buffers, in module order (the layer index of ``step_key``)."""
    return [f"{name}.key" if name else "key" for name, m in model.named_modules() if isinstance(m, KeyedDropout)]


def check_keyed(model: nn.Module) -> None:
    """A model trained with per-model streams must not draw dropout from the global generator."""
    bad = [name for name, m in model.named_modules() if isinstance(m, nn.Dropout) and m.p > 0]
    if bad:
        raise TypeError(f"{type(model).__name__} has torch.nn.Dropout layers with p > 0 ({', '.join(bad[:3])}): their masks come "
                        "from the global generator, shared by every model in a batch — use suite.streams.KeyedDropout")


def set_dropout_keys(model: nn.Module, stream: int, step: int) -> None:
    """Before one training step of a model trained alone (sequential engine)."""
    for layer, (name, m) in enumerate((n, m) for n, m in model.named_modules() if isinstance(m, KeyedDropout)):
        m.key.fill_(step_key(stream, step, layer))
