"""The sequential engine, with Accelerate: one model at a time executes the fold protocol's jobs
(``suite.folds`` owns the protocol; ``suite.batched`` is the other executor).

The preprocessed dataset is loaded once and kept on the device; the model is built once and
re-initialised from its stored initial state at every job; the optimizer is created once and its
state reset per job. The model is a ``suite.models.detector.Detector``: the engine calls its
hooks (``on_fold_start``, ``param_groups``, ``encoder_frozen``/``encode``/``encode_config``/
``feature_encoder``) and probes for nothing. A method whose input encoder is frozen
(``encoder_frozen``) has its ``encode`` run once for the whole dataset, so folds train only what
is trainable; with a ``feature_cache`` folder those features are also shared across trials and
seeds on disk (``suite.token_cache``).

What knows of Accelerate: the one ``Accelerator`` (``get_accelerator``), ``prepare_model`` and
``prepare_optimizer``, ``autocast`` around every forward pass and ``backward``.
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

from .jobs import JobResult, ModelJob
from .models.detector import Detector
from .registry import MethodSpec
from .streams import set_dropout_keys
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


def build_detector(spec: MethodSpec, hparams: dict, aus: tuple[int, ...]) -> Detector:
    """The method's model for this configuration, built from the global generator's current state
    (callers ``set_seed`` first); an error unless it is a ``Detector`` (the engines call its hooks)."""
    model = spec.build(hparams, tuple(aus))
    if not isinstance(model, Detector):
        raise TypeError(f"method {spec.name!r} built a {type(model).__name__}: a method's model derives from "
                        "suite.models.detector.Detector (the hooks the engines call)")
    return model


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

    @classmethod
    def concat(cls, parts: list["DatasetTensors"], fingerprint: str) -> "DatasetTensors":
        """Several releases' data as one (a cross-dataset evaluation, ``suite.evaluation``): the
        same AUs and frame inputs in every part; subjects stay namespaced by release."""
        if len({p.aus for p in parts}) != 1 or len({tuple(sorted(p.frames)) for p in parts}) != 1:
            raise ValueError("releases joined in one evaluation need the same AUs and frame inputs (onset/apex/flow)")
        shapes = {k: {tuple(p.frames[k].shape[1:]) for p in parts} for k in parts[0].frames}
        if any(len(v) > 1 for v in shapes.values()):
            raise ValueError(f"releases joined in one evaluation were preprocessed at different sizes: {shapes}")
        cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
        return cls(cat("sample_id"), cat("subject"), cat("emotion"), cat("objective_class"), cat("known"), cat("labels"),
                   {k: torch.cat([p.frames[k] for p in parts]) for k in parts[0].frames}, fingerprint, parts[0].aus)

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


class SequentialEngine:
    """The sequential engine: one model (a configuration built from one seed) trained job after
    job (``run_job``), re-initialised from its stored initial state every time."""

    def __init__(self, spec: MethodSpec, hparams: dict, data: DatasetTensors, aus: tuple[int, ...], seed: int = 0,
                 accelerator: Accelerator | None = None, feature_cache: Path | None = None, compile: str | None = None):
        self.spec, self.hp, self.data, self.aus, self.seed = spec, hparams, data, tuple(aus), seed
        self.acc = accelerator or get_accelerator()
        set_seed(seed)
        model = build_detector(spec, hparams, self.aus)
        self.detector = model  # the hooks' receiver (``self.model``: as Accelerate prepared it)
        self.model = self.acc.prepare_model(model)
        self.device = self.acc.device
        self.y = torch.as_tensor(data.labels, dtype=torch.float32, device=self.device)
        self.known = torch.as_tensor(data.known, dtype=torch.float32, device=self.device)
        self.features, self.features_from_disk = frozen_features(model, data, self.acc, feature_cache)
        self.initial_state = copy.deepcopy(self.model.state_dict())
        # torch.compile once per engine: every job re-initialises the same parameters in place,
        # so the compiled graphs are reused across folds (``compile`` names the backend).
        self.forward = torch.compile(self.model, backend=compile) if compile else self.model
        params = model.param_groups(hparams["lr"], hparams["weight_decay"])
        self.trainable = any(p.requires_grad for g in params for p in g["params"])
        # fused: one kernel for all parameters (many small tensors here), on CPU and GPU
        self.optimizer = self.acc.prepare_optimizer(torch.optim.AdamW(params, lr=hparams["lr"], weight_decay=hparams["weight_decay"], fused=True)) \
            if self.trainable else None

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

    # --- one job ------------------------------------------------------------------------
    def reset(self, job: ModelJob) -> None:
        """Back to the initial weights, fresh optimizer state, fold statistics from the job's
        training clips only; the global generator seeded from the job's stream (for draws a
        sequential-only model makes outside ``KeyedDropout``)."""
        self.model.load_state_dict(self.initial_state)
        set_seed(job.stream % 2**32)
        if self.optimizer is not None:
            self.optimizer.optimizer.state.clear()
        self.detector.on_fold_start(self.data.labels[job.train], self.data.known[job.train])

    def run_job(self, job: ModelJob) -> JobResult:
        """Train for ``job.epochs`` (unknown labels masked) in the job's minibatch order and dropout
        stream, predicting ``job.evaluate`` after every epoch or once at the end. A model with
        nothing to train is predicted once, as epoch 0. A non-finite loss ends the job, with its reason."""
        if job.seed != self.seed or job.hp != self.hp:
            raise ValueError(f"a job for seed {job.seed} and its configuration given to the engine built for seed {self.seed} "
                             "and another configuration")
        self.reset(job)
        gen = torch.Generator().manual_seed(job.stream)
        result = JobResult([], np.zeros((0, len(job.evaluate), len(self.aus))), [])
        probs, bs, step = [], self.hp["batch_size"], 0
        epochs = job.epochs if self.trainable else 0
        for epoch in range(1, epochs + 1):
            self.model.train()
            order = job.train[torch.randperm(len(job.train), generator=gen).numpy()]
            losses = []
            for start in range(0, len(order), bs):
                set_dropout_keys(self.model, job.stream, step)
                step += 1
                batch = self.batch(order[start:start + bs], with_labels=True)
                with self.acc.autocast():
                    loss = self.forward(batch)["loss"]
                if not torch.isfinite(loss):
                    result.failed_at, result.reason = epoch, f"non-finite loss {loss.item()} at epoch {epoch}"
                    break
                self.optimizer.zero_grad(set_to_none=True)
                self.acc.backward(loss)
                self.optimizer.step()
                losses.append(loss.item())
            if result.failed_at is not None:
                break
            result.losses.append(float(np.mean(losses)) if losses else 0.0)
            if job.every_epoch or epoch == epochs:
                prob, result.recognition = self.predict_with_recognition(job.evaluate)
                result.epochs.append(epoch)
                probs.append(prob)
        if epochs == 0:
            prob, result.recognition = self.predict_with_recognition(job.evaluate)
            result.epochs, probs = [0], [prob]
        if probs:
            result.probs = np.stack(probs)
        return result

    def run_jobs(self, jobs: list[ModelJob]) -> list[JobResult]:
        """An executor for ``suite.folds.run_tasks``: the jobs one after another."""
        return [self.run_job(job) for job in jobs]

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


def frozen_features(model: Detector, data: DatasetTensors, acc: Accelerator, feature_cache: Path | None
                    ) -> tuple[torch.Tensor | None, bool]:
    """(the frozen encoder's features of every sample — None when the model encodes inside its
    step —, whether they came from disk): from ``feature_cache`` when an entry with the same data,
    encode configuration, weights and precision exists, else computed. Both engines take their
    features from here, per configuration and seed."""
    if not model.encoder_frozen:
        return None, False
    model = model.to(acc.device)

    @torch.no_grad()
    def encode(chunk: int = 128) -> torch.Tensor:
        model.eval()
        out = []
        for start in range(0, len(data), chunk):
            idx = torch.arange(start, min(start + chunk, len(data)), device=acc.device)
            with acc.autocast():
                out.append(model.encode({k: v[idx] for k, v in data.frames.items()}).float())
        return torch.cat(out)

    if feature_cache is None or data.fingerprint is None or model.feature_encoder is None:
        return encode(), False  # no encoder weights (fixed preprocessing): cheap, not stored
    key = feature_key(data.fingerprint, model.encode_config, model.feature_encoder, f"{acc.device.type}-{acc.mixed_precision}")
    return load_or_compute(feature_cache, key, encode, acc.device)
