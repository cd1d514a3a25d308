"""The model contract: ``Detector``, the base class of every method's model, declaring every hook
an engine may call (in the style of Lightning's ``ModelHooks``: typed signatures, a docstring and
a default each), and ``Method``, how a module declares a method for the registry.

A method overrides only the hooks it needs. The engines (``suite.engine``, ``suite.batched``,
``suite.folds``, ``suite.token_cache``) call these hooks and nothing else: they never probe a model
for an attribute. What a model must define itself is ``forward(batch) -> dict``:

* ``batch``: ``"features"`` (the output of ``encode``, when ``encoder_frozen``) or the frames
  (``"onset"``/``"apex"`` uint8 [B, H, W, 3], ``"flow"`` [B, H, W, 2] when cached); in training
  also ``"au"`` [B, K] (0/1) and ``"weight"`` [B, K] (0 for padding and unknown labels);
* returns ``"logits"`` [B, K] and, when the batch has ``"au"``, ``"loss"`` (a scalar); optionally
  ``"recognition"`` [B, C] (prompt-based recognition scores, the sequential engine).

Every detector has a per-AU ``pos_weight`` buffer (negatives / positives among the training fold's
known labels) that the default ``on_fold_start`` sets and ``outputs`` uses in its BCE.

The module imports nothing from the registry (``suite.registry`` imports the method modules, never
the other way round)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from .losses import pos_weight_from_labels, weighted_bce

# Hyper-parameters the engines' optimizers hold per model: they may always differ between models
# trained as one batch (``Detector.per_model_hparams`` declares the others).
OPTIMIZER_HPARAMS = ("lr", "weight_decay")


class Detector(nn.Module):
    """A multi-label AU detector for ``n_aus`` AUs, and every hook an engine may call.

    ``use_pos_weight=False``: the BCE weighs positives and negatives alike (``pos_weight`` stays 1)."""

    #: Whether the fold-batched engine (``suite.batched``) may train many of these as one vmapped
    #: model, on the cached features of a frozen encoder. ``batch_refusal`` may still refuse a
    #: configuration, and the engine refuses trained convolutions and batch norm on its own.
    batchable: bool = False

    def __init__(self, n_aus: int, use_pos_weight: bool = True):
        super().__init__()
        self.use_pos_weight = use_pos_weight
        self.register_buffer("pos_weight", torch.ones(n_aus))

    # --- input encoding: computed once per dataset when the encoder is frozen ------------
    @property
    def encoder_frozen(self) -> bool:
        """True: ``encode`` is a fixed function of the frames (a frozen tower, or a fixed
        preprocessing), so the engine runs it once for the whole dataset and trains on
        ``batch["features"]`` instead of frames. Default: False (the model encodes inside its step)."""
        return False

    def encode(self, batch: dict) -> torch.Tensor:
        """The input features [B, ...] of a batch of frames; called by the engines only when
        ``encoder_frozen``. Default: none (a model that declares a frozen encoder defines it)."""
        raise NotImplementedError(f"{type(self).__name__} declares encoder_frozen but defines no encode(batch)")

    @property
    def encode_config(self) -> dict:
        """What ``encode`` depends on besides the encoder's weights: part of the feature cache's
        key (``suite.token_cache.feature_key``). Default: the class name."""
        return {"method": type(self).__name__}

    @property
    def feature_encoder(self) -> nn.Module | None:
        """The module whose weights ``encode`` depends on: features are stored on disk keyed by a
        digest of its weights (``suite.token_cache``). Default None: a fixed preprocessing without
        weights, recomputed per run (cheap) and never stored."""
        return None

    # --- one job ---------------------------------------------------------------------------
    def on_fold_start(self, labels: np.ndarray, known: np.ndarray) -> None:
        """Fold statistics, from the job's training clips only: ``labels`` int [N, K], ``known``
        bool [N, K] (a label the coding sheet leaves unknown is False). Called by both engines
        after the model is back at its initial weights and before its first step. Default: sets
        ``pos_weight``; a model with more statistics overrides this and calls ``super()``."""
        self.pos_weight.copy_(pos_weight_from_labels(labels, known, self.use_pos_weight))

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The optimizer's parameter groups (each with its ``"lr"`` and ``"weight_decay"``), e.g. a
        lower learning rate for a fine-tuned backbone; the batched engine reads each parameter's
        learning-rate multiplier from ``param_groups(1.0, 0.0)``. Default: every trainable
        parameter at ``lr`` and ``weight_decay``."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr, "weight_decay": weight_decay}]

    # --- the fold-batched engine -----------------------------------------------------------
    @property
    def batch_refusal(self) -> str | None:
        """Why the fold-batched engine cannot train this configuration although the method is
        ``batchable`` (e.g. a text tower re-encoded every step); None: it can. Default: None."""
        return None

    @property
    def per_model_hparams(self) -> dict[str, tuple[str, ...]]:
        """Hyper-parameters — besides the optimizer's ``lr`` and ``weight_decay``, always per model
        — that may differ between models trained as one vmapped batch, each with the names of the
        buffers (``named_buffers``) that hold its value: a value the forward pass reads from a
        buffer is stacked per model; one it reads from ``self.hp`` would be the first model's for
        every model of the batch, so the batched engine refuses a name no buffer holds
        (``suite.batched.check_per_model``). Models whose other hyper-parameters agree form one
        batch (``suite.batched.architecture_key``). Default: none."""
        return {}

    # --- helpers for subclasses ------------------------------------------------------------
    def outputs(self, logits: torch.Tensor, batch: dict) -> dict:
        """The output dict of a BCE detector: ``logits`` and, when the batch has labels, the BCE
        with ``pos_weight`` over the labels ``batch["weight"]`` keeps."""
        out = {"logits": logits}
        if "au" in batch:
            out["loss"] = weighted_bce(logits, batch["au"], self.pos_weight, batch.get("weight"))
        return out


@dataclass(frozen=True)
class Method:
    """A method as its module declares it (``METHODS = (Method(...), ...)``): ``build(hparams,
    aus) -> Detector`` and the method's own defaults (the registry adds the training
    defaults beneath them, ``suite.registry.register``)."""

    name: str
    build: Callable[..., Detector]
    defaults: dict = field(default_factory=dict)
    description: str = ""
    needs_flow: bool = False  # its dataset cache must hold the onset→apex optical flow

    def variant(self, name: str, overrides: dict, description: str) -> "Method":
        """A named configuration of this method (e.g. an ablation)."""
        return replace(self, name=name, defaults={**self.defaults, **overrides}, description=description)
