"""Method-agnostic LOSO training and evaluation with Accelerate.

The preprocessed dataset is loaded once and kept on the device; the model is built once and
re-initialised from its stored initial state at every fold; the optimizer is created once and its
state reset per fold. A method whose input encoder is frozen (``encoder_frozen``) has its
``encode`` run once for the whole dataset, so folds train only what is trainable; with a
``feature_cache`` folder those features are also shared across trials and seeds on disk
(``suite.token_cache``).

The only Accelerate-aware lines are ``Accelerator(...)``, ``prepare`` and ``backward``.
Importable without ray or optuna (GPU checks run the engine directly).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from .metrics import f1_per_au
from .protocol import Fold, verify_fold
from .registry import MethodSpec
from .selection import inner_choice
from .token_cache import feature_key, load_or_compute

_ACCELERATOR: Accelerator | None = None


def get_accelerator(cpu: bool | None = None) -> Accelerator:
    """One Accelerator per process (AcceleratorState is a singleton): bf16 on GPU, fp32 on CPU."""
    global _ACCELERATOR
    if _ACCELERATOR is None:
        use_cpu = (not torch.cuda.is_available()) if cpu is None else cpu
        _ACCELERATOR = Accelerator(cpu=use_cpu, mixed_precision="no" if use_cpu else "bf16")
    return _ACCELERATOR


def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''})"


@dataclass
class DatasetTensors:
    """A cached dataset, resident on one device, with labels for the evaluated AUs."""

    sample_id: np.ndarray
    subject: np.ndarray
    emotion: np.ndarray
    objective_class: np.ndarray
    known: np.ndarray  # bool [N, K]: the clip's label for that AU is known (masked from loss and metrics otherwise)
    labels: np.ndarray  # int [N, K]
    frames: dict[str, torch.Tensor]  # "onset"/"apex" uint8 [N, H, W, 3], optional "flow"
    fingerprint: str | None = None  # the Arrow cache's content fingerprint (keys derived caches)
    aus: tuple[int, ...] = ()  # the evaluated AUs, in label-column order

    @classmethod
    def from_cache(cls, arrays: dict, aus: tuple[int, ...], device, fingerprint: str | None = None) -> "DatasetTensors":
        labels = np.array([[a in set(row) for a in aus] for row in arrays["aus"]], dtype=np.int64).reshape(-1, len(aus))
        known = np.array([[a not in set(row) for a in aus] for row in arrays["aus_unknown"]], dtype=bool).reshape(-1, len(aus))
        frames = {k: torch.from_numpy(np.ascontiguousarray(arrays[k])).to(device) for k in ("onset", "apex", "flow") if k in arrays}
        return cls(np.asarray(arrays["sample_id"]), np.asarray(arrays["subject"]), np.asarray(arrays["emotion"]),
                   np.asarray(arrays["objective_class"]), known, labels, frames, fingerprint,
                   tuple(aus))

    @property
    def device(self) -> torch.device:
        return next(iter(self.frames.values())).device

    def __len__(self) -> int:
        return len(self.sample_id)

    def any_known(self, idx: np.ndarray) -> np.ndarray:
        """``idx`` without the clips whose every evaluated AU is unknown (they can neither train nor score)."""
        return idx[self.known[idx].any(1)]


@dataclass
class InnerPredictions:
    """The inner model's predictions on the inner-validation samples at every epoch: what the
    epoch count, the thresholds and the inner F1 were chosen from (stored, so they recompute)."""

    val: np.ndarray  # sample indices (inner-validation subjects, known AUs)
    epochs: list[int]  # epoch numbers (0: an untrained model)
    probs: np.ndarray  # [E, n_val, K]


@dataclass
class FoldOutput:
    fold: int
    test: np.ndarray  # sample indices
    prob: np.ndarray  # [n_test, K]
    threshold: np.ndarray  # [K]
    epochs: int
    inner_f1: float | None = None  # cross-fitted F1 on the inner-validation subjects (search objective)
    history: list = field(default_factory=list)
    inner: InnerPredictions | None = None
    recognition: np.ndarray | None = None  # [n_test, classes]: prompt-based recognition scores (suite.emotions.RECOGNITION_CLASSES)


class Engine:
    def __init__(self, spec: MethodSpec, hparams: dict, data: DatasetTensors, aus: tuple[int, ...], seed: int = 0,
                 accelerator: Accelerator | None = None, feature_cache: Path | None = None, compile: str | None = None):
        self.spec, self.hp, self.data, self.aus, self.seed = spec, hparams, data, tuple(aus), seed
        self.acc = accelerator or get_accelerator()
        set_seed(seed)
        model = spec.build(hparams, self.aus, {"n_samples": len(data)})
        self.model = self.acc.prepare_model(model)
        self.device = self.acc.device
        self.y = torch.as_tensor(data.labels, dtype=torch.float32, device=self.device)
        self.known = torch.as_tensor(data.known, dtype=torch.float32, device=self.device)
        self.features, self.features_from_disk = None, False
        if getattr(model, "encoder_frozen", False):
            self.features, self.features_from_disk = self._frozen_features(model, feature_cache)
        self.initial_state = copy.deepcopy(self.model.state_dict())
        # torch.compile once per engine: every fold re-initialises the same parameters in place,
        # so the compiled graphs are reused across folds (``compile`` names the backend).
        self.forward = torch.compile(self.model, backend=compile) if compile else self.model
        params = model.param_groups(hparams["lr"], hparams["weight_decay"]) if hasattr(model, "param_groups") else \
            [{"params": [p for p in model.parameters() if p.requires_grad]}]
        self.trainable = any(p.requires_grad for g in params for p in g["params"])
        # fused: one kernel for all parameters (many small tensors here), on CPU and GPU
        self.optimizer = self.acc.prepare_optimizer(torch.optim.AdamW(params, lr=hparams["lr"], weight_decay=hparams["weight_decay"], fused=True)) \
            if self.trainable else None

    @property
    def batchable(self) -> tuple[bool, str]:
        """(whether the fold-batched engine can train this configuration, why not)."""
        model = self.acc.unwrap_model(self.model)
        if not getattr(model, "batchable", False):
            return False, f"{self.spec.name} has no batched form"
        if getattr(model, "batch_refusal", None):
            return False, model.batch_refusal
        return True, ""

    @property
    def sequential_preferred(self) -> str:
        """Why ``--engine auto`` keeps this batchable configuration sequential ("" when it does not):
        a trained encoder on a CPU is compute-bound, so training its models as one batch gains nothing."""
        if self.features is None and self.device.type != "cuda":
            return "its encoder is trained and this device is a CPU (compute-bound: batching gains nothing; --engine batched batches anyway)"
        return ""

    # --- data ---------------------------------------------------------------------------
    def _frozen_features(self, model, feature_cache: Path | None) -> tuple[torch.Tensor, bool]:
        """The frozen encoder's features of every sample: from ``feature_cache`` when an entry
        with the same data, encode configuration, weights and precision exists, else computed."""
        if feature_cache is None or self.data.fingerprint is None or not hasattr(model, "encoder"):
            return self._encode_frozen(), False  # no encoder weights (fixed preprocessing): cheap, not stored
        key = feature_key(self.data.fingerprint, model.encode_config, model.encoder,
                          f"{self.device.type}-{self.acc.mixed_precision}")
        return load_or_compute(feature_cache, key, self._encode_frozen, self.device)

    @torch.no_grad()
    def _encode_frozen(self, chunk: int = 128) -> torch.Tensor:
        self.model.eval()
        out = []
        for start in range(0, len(self.data), chunk):
            idx = torch.arange(start, min(start + chunk, len(self.data)), device=self.device)
            with self.acc.autocast():
                out.append(self.model.encode(self._frames(idx)).float())
        return torch.cat(out)

    def _frames(self, idx: torch.Tensor) -> dict:
        return {k: v[idx] for k, v in self.data.frames.items()}

    def batch(self, idx: np.ndarray, with_labels: bool) -> dict:
        """Indices → a batch on the device: cached encoder features when the encoder is frozen
        (the frames are then not needed), otherwise the frames."""
        t = torch.as_tensor(idx, device=self.device)
        b = {"features": self.features[t]} if self.features is not None else self._frames(t)
        if with_labels:
            b["au"], b["weight"] = self.y[t], self.known[t]
        return b

    # --- training -----------------------------------------------------------------------
    def reset(self, fold_seed: int, train_idx: np.ndarray) -> None:
        """Back to the initial weights, fresh optimizer state, fold statistics from train only."""
        self.model.load_state_dict(self.initial_state)
        set_seed(fold_seed)
        if self.optimizer is not None:
            self.optimizer.optimizer.state.clear()
        if hasattr(self.model, "on_fold_start"):
            self.model.on_fold_start(self.data.labels[train_idx], self.data.known[train_idx])

    def train(self, train_idx: np.ndarray, epochs: int, fold_seed: int, val_idx: np.ndarray | None = None):
        """Train on ``train_idx`` (its clips with any known label; unknown labels are masked). With ``val_idx``, predict it
        after every epoch; returns (epoch numbers, validation probabilities [E, n, K], history).
        A model with nothing to train is scored once, as epoch 0."""
        train_idx = self.data.any_known(train_idx)
        self.reset(fold_seed, train_idx)
        gen = torch.Generator().manual_seed(fold_seed)
        history, epoch_numbers, val_probs = [], [], []
        bs = self.hp["batch_size"]
        for epoch in range(1, epochs + 1 if self.trainable else 1):
            self.model.train()
            order = train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]
            losses = []
            for start in range(0, len(order), bs):
                batch = self.batch(order[start:start + bs], with_labels=True)
                with self.acc.autocast():
                    loss = self.forward(batch)["loss"]
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {epoch}")
                self.optimizer.zero_grad(set_to_none=True)
                self.acc.backward(loss)
                self.optimizer.step()
                losses.append(loss.item())
            entry = {"epoch": epoch, "loss": float(np.mean(losses))}
            if val_idx is not None:
                prob = self.predict(val_idx)
                entry["val_f1"] = self._f1(val_idx, prob)
                epoch_numbers.append(epoch)
                val_probs.append(prob)
            history.append(entry)
        if val_idx is not None and not val_probs:
            prob = self.predict(val_idx)
            epoch_numbers, val_probs = [0], [prob]
            history.append({"epoch": 0, "val_f1": self._f1(val_idx, prob)})
        return epoch_numbers, (np.stack(val_probs) if val_idx is not None else None), history

    def _f1(self, idx: np.ndarray, prob: np.ndarray) -> float:
        return float(f1_per_au(self.data.labels[idx], prob >= 0.5, self.hp["metric"], self.data.known[idx]).mean())

    def predict(self, idx: np.ndarray, chunk: int = 256) -> np.ndarray:
        return self.predict_with_recognition(idx, chunk)[0]

    @torch.no_grad()
    def predict_with_recognition(self, idx: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray | None]:
        """(AU probabilities [n, K], prompt-based recognition scores [n, C] when the model gives them)."""
        self.model.eval()
        probs, scores = [], []
        for start in range(0, len(idx), chunk):
            with self.acc.autocast():
                out = self.forward(self.batch(idx[start:start + chunk], with_labels=False))
            probs.append(torch.sigmoid(out["logits"].float()).cpu().numpy())
            if "recognition" in out:
                scores.append(out["recognition"].float().cpu().numpy())
        if not probs:
            return np.zeros((0, len(self.aus))), None
        return np.concatenate(probs), (np.concatenate(scores) if scores else None)

    # --- protocol -----------------------------------------------------------------------
    def run_fold(self, fold: Fold, selection: str | None = None) -> FoldOutput:
        """One outer fold. ``fixed``: fixed epochs and threshold 0.5, trained on the whole outer
        train. ``inner``: a model on inner-train picks the epoch count and per-AU thresholds on
        the inner-validation subjects (``suite.selection.pick``; with fewer than two of them:
        the fixed epochs and 0.5); its cross-fitted inner F1 is the search objective; a model on
        the whole outer train with that epoch count predicts the test subject. The test subject
        never influences a choice."""
        verify_fold(self.data.subject, fold)
        selection = selection or self.hp["selection"]
        fold_seed = self.seed * 100_003 + fold.index
        epochs = self.hp["epochs"]
        if selection == "fixed":
            self.train(fold.train, epochs, fold_seed)
            prob, recognition = self.predict_with_recognition(fold.test)
            return FoldOutput(fold.index, fold.test, prob, np.full(len(self.aus), 0.5), epochs, recognition=recognition)
        if selection != "inner":
            raise ValueError(f"selection {selection!r}: choose 'fixed' or 'inner'")
        val = self.data.any_known(fold.inner_val)
        epoch_numbers, val_probs, history = self.train(fold.inner_train, epochs, fold_seed, val_idx=val)
        chosen, threshold, inner_f1 = inner_choice(self.data.labels[val], val_probs, self.data.subject[val], self.hp["metric"],
                                                   self.data.known[val])
        best_epoch = epoch_numbers[chosen]
        # training is a prefix: the outer model trained for best_epoch epochs equals one trained
        # longer and read at that epoch (same seed, same order, constant learning rate)
        self.train(fold.train, max(best_epoch, 1), fold_seed)
        prob, recognition = self.predict_with_recognition(fold.test)
        return FoldOutput(fold.index, fold.test, prob, threshold, best_epoch, inner_f1, history,
                          InnerPredictions(val, epoch_numbers, val_probs), recognition)
