"""The fold protocol, once: run a list of tasks — (outer fold, configuration, seed) — of one method
on one dataset. The search's trials, ``suite.train`` and the baselines, the final seeds and
``suite.bench`` all come here.

Per task (``run_tasks``), selection ``inner`` (the search's protocol):
    inner model on inner-train, predicting the inner-validation subjects after every epoch
      → epoch count, per-AU thresholds and the cross-fitted inner F1 (``suite.selection.inner_choice``)
    outer model on the whole outer train for that epoch count → the test subject's probabilities.
Selection ``fixed``: one model on the outer train for the fixed epochs, thresholds 0.5.
The test subject never influences a choice (``suite.protocol.verify_fold`` on every task).

The engines are executors of the protocol's model jobs (``suite.jobs``): the sequential
``SequentialEngine.run_job`` and the fold-batched ``suite.batched.run_jobs``. Neither selects anything.
``FoldRunner.engine_for`` is the one engine policy; a failed model (non-finite loss) makes its
task a ``TaskFailed`` with the reason, whichever engine ran it — the caller decides whether that
is recorded (a search trial) or an error (a run: ``raise_failures``).

The invariant: a task's outputs are a function of its own inputs only — data, fold, configuration,
seed and the engine (``docs/protocol.md`` says where the engines differ): features from its own
configuration, random draws from its own streams (``suite.streams``), never from what shares its
batch, chunk, process, resume or GPU.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from .batched import BatchedTrainer, architecture_key, batch_refusal, per_model_names, run_jobs
from .engine import DatasetTensors, SequentialEngine, FoldOutput, InnerPredictions, build_detector, device_name, frozen_features, get_accelerator
from .jobs import JobResult, ModelJob
from .metrics import f1_per_au
from .models.detector import Detector
from .protocol import Fold, verify_fold
from .registry import MethodSpec
from .selection import inner_choice
from .streams import model_stream

ENGINES = ("auto", "batched", "sequential")
# 2: per-task streams and features (a task's numbers depend on the task alone); 1: before. Part of
# every search's and run's identity: outputs of another version are never resumed or reused.
PROTOCOL_VERSION = 2


class EngineChoiceError(ValueError):
    """An engine was asked for that cannot run the configuration (or the options around it)."""


@dataclass(frozen=True)
class FoldTask:
    """One configuration (resolved hyper-parameters) on one outer fold, with one seed."""

    fold: Fold
    hparams: dict
    seed: int


@dataclass(frozen=True)
class TaskFailed:
    """A task whose model could not be trained (e.g. a non-finite loss), or that the engine asked
    for refused (``refused``): the reason, for the record."""

    reason: str
    refused: bool = False


@dataclass(frozen=True)
class TaskOutcome:
    task: FoldTask
    output: FoldOutput | TaskFailed
    engine: str  # sequential | batched: what ran it
    engine_reason: str  # "asked for", or why auto chose it
    device: str

    @property
    def ok(self) -> bool:
        return isinstance(self.output, FoldOutput)


def engine_request(engine: str, fold_workers: int = 1, compile: str | None = None) -> tuple[str, str]:
    """The engine asked for once the options that only the sequential engine has are taken into
    account: (auto | batched | sequential, why). ``auto`` with fold workers or ``torch.compile``
    means sequential — said, recorded and part of a search's identity, never a silent switch."""
    if engine not in ENGINES:
        raise EngineChoiceError(f"--engine {engine!r}: choose one of {ENGINES}")
    only_sequential = [o for o, on in ((f"--fold-workers {fold_workers}", fold_workers > 1), (f"--compile {compile}", bool(compile))) if on]
    if only_sequential and engine == "batched":
        raise EngineChoiceError(f"--engine batched trains a slice as one model in one process: drop {' and '.join(only_sequential)}, "
                                "or use --engine sequential")
    if only_sequential and engine == "auto":
        return "sequential", f"{' and '.join(only_sequential)} run on the sequential engine"
    return engine, "asked for" if engine != "auto" else ""


def engine_label(engine: str, fold_workers: int = 1, compile: str | None = None) -> str:
    """How a search or run was computed, as its identity carries it: the engine asked for
    (``engine_request``) and the ``torch.compile`` backend — both change numbers in the last digits,
    which a chaotic configuration amplifies."""
    asked = engine_request(engine, fold_workers, compile)[0]
    return f"{asked}+compile:{compile}" if compile else asked


def _history(y, known, metric: str, res: JobResult) -> list[dict]:
    return [{"epoch": e, **({"loss": res.losses[i]} if e > 0 and i < len(res.losses) else {}),
             "val_f1": float(f1_per_au(y, p >= 0.5, metric, known).mean())} for i, (e, p) in enumerate(zip(res.epochs, res.probs))]


def job_role(task: FoldTask) -> str:
    """The first model's role: ``fixed`` (fixed epochs) or ``inner`` (the inner model)."""
    return "fixed" if task.hparams["selection"] == "fixed" else "inner"


def run_tasks(execute, data: DatasetTensors, tasks: list[FoldTask]) -> list[FoldOutput | TaskFailed]:
    """The nested protocol for every task with one executor (``execute(jobs) → results``): all
    inner (or fixed) models, then all outer models, each with its own stream."""
    first: list[ModelJob] = []
    for t in tasks:
        verify_fold(data.subject, t.fold)
        hp = t.hparams
        if hp["selection"] == "fixed":
            first.append(ModelJob(hp, t.seed, model_stream(t.seed, t.fold.index, "fixed", hp), data.any_known(t.fold.train),
                                  t.fold.test, hp["epochs"], every_epoch=False))
        elif hp["selection"] == "inner":
            first.append(ModelJob(hp, t.seed, model_stream(t.seed, t.fold.index, "inner", hp), data.any_known(t.fold.inner_train),
                                  data.any_known(t.fold.inner_val), hp["epochs"]))
        else:
            raise ValueError(f"selection {hp['selection']!r}: choose 'fixed' or 'inner'")
    outputs: list[FoldOutput | TaskFailed | None] = [None] * len(tasks)
    outer_jobs, waiting = [], []
    for i, (t, job, res) in enumerate(zip(tasks, first, execute(first))):
        if res.failed_at is not None:
            outputs[i] = TaskFailed(f"{job_role(t)} model: {res.reason}")
            continue
        k = len(data.aus)
        if t.hparams["selection"] == "fixed":
            outputs[i] = FoldOutput(t.fold.index, t.fold.test, res.probs[-1], np.full(k, 0.5), t.hparams["epochs"],
                                    recognition=res.recognition)
            continue
        y, known, metric = data.labels[job.evaluate], data.known[job.evaluate], t.hparams["metric"]
        chosen, threshold, inner_f1 = inner_choice(y, res.probs, data.subject[job.evaluate], metric, known)
        best_epoch = res.epochs[chosen]
        # an untrained model (epoch 0 chosen, or nothing to train) is predicted untrained
        outer = ModelJob(t.hparams, t.seed, model_stream(t.seed, t.fold.index, "outer", t.hparams), data.any_known(t.fold.train),
                         t.fold.test, best_epoch, every_epoch=False)
        outer_jobs.append(outer)
        waiting.append((i, threshold, best_epoch, inner_f1, _history(y, known, metric, res), InnerPredictions(job.evaluate, res.epochs, res.probs)))
    for (i, threshold, best_epoch, inner_f1, history, inner), res in zip(waiting, execute(outer_jobs) if outer_jobs else []):
        t = tasks[i]
        outputs[i] = TaskFailed(f"outer model: {res.reason}") if res.failed_at is not None else \
            FoldOutput(t.fold.index, t.fold.test, res.probs[-1], threshold, best_epoch, inner_f1, history, inner, res.recognition)
    return outputs


class FoldRunner:
    """One method on one dataset resident on one device: runs tasks with the engine the policy
    gives each configuration. Features are computed per (architecture, seed) from that
    configuration — never borrowed from another task's — and kept while the next call uses them."""

    def __init__(self, spec: MethodSpec, data: DatasetTensors, engine: str = "auto", reason: str = "",
                 accelerator: Accelerator | None = None, feature_cache: Path | None = None, compile: str | None = None):
        if engine not in ENGINES:
            raise EngineChoiceError(f"--engine {engine!r}: choose one of {ENGINES}")
        self.spec, self.data, self.engine, self.reason = spec, data, engine, reason
        self.acc = accelerator or get_accelerator()
        self.feature_cache, self.compile = feature_cache, compile
        self._engine: tuple[str, SequentialEngine] | None = None  # the sequential engine: one configuration at a time
        self._features: dict[str, torch.Tensor | None] = {}
        self._models: dict[str, Detector] = {}  # within one run(): (configuration, seed) → the model built from the seed

    def model(self, hp: dict, seed: int) -> Detector:
        """The model of this configuration built from ``seed`` (``set_seed`` then build, as the
        sequential engine builds it), once per call of ``run``: the engine policy, the features and
        the batched engine's initial states all read this one build."""
        key = json.dumps([hp, seed], sort_keys=True, default=str)  # the whole configuration: per-model values live in buffers
        if key not in self._models:
            set_seed(seed)
            self._models[key] = build_detector(self.spec, hp, self.data.aus)
        return self._models[key]

    def _features_key(self, hp: dict, seed: int) -> str:
        """Configurations that agree outside the per-model hyper-parameters share their features."""
        return json.dumps([architecture_key(hp, per_model_names(self.model(hp, seed))), seed])

    # --- the engine policy --------------------------------------------------------------
    def engine_for(self, hp: dict, seed: int = 0) -> tuple[str, str]:
        """(sequential | batched, why): ``auto`` batches when the model has a batched form for this
        configuration that keeps its numbers its own (``batch_refusal``: frozen features, no trained
        convolution); ``batched`` on what cannot be batched is an error."""
        if self.engine == "sequential":
            return "sequential", self.reason or "asked for"
        why_not = batch_refusal(self.model(hp, seed), self.spec.name)
        if self.engine == "batched":
            if why_not:
                raise EngineChoiceError(f"--engine batched: {self.spec.name} cannot be fold-batched ({why_not}); use --engine sequential or auto")
            return "batched", "asked for"
        if why_not:
            return "sequential", why_not
        return "batched", ""

    # --- executors ----------------------------------------------------------------------
    def _sequential(self, jobs: list[ModelJob]) -> list[JobResult]:
        out = []
        for job in jobs:
            key = json.dumps([job.hp, job.seed], sort_keys=True, default=str)
            if self._engine is None or self._engine[0] != key:
                if self._engine is not None:  # one engine at a time: Accelerate holds every prepared model until freed
                    self._engine = None
                    self.acc.free_memory()
                self._engine = (key, SequentialEngine(self.spec, job.hp, self.data, self.data.aus, job.seed, self.acc, self.feature_cache, self.compile))
            out.append(self._engine[1].run_job(job))
        return out

    def features_of(self, hp: dict, seed: int) -> torch.Tensor | None:
        """The cached features of this configuration built from ``seed`` (None: it encodes inside its step)."""
        key = self._features_key(hp, seed)
        if key not in self._features:
            self._features[key] = frozen_features(self.model(hp, seed), self.data, self.acc, self.feature_cache)[0]
        return self._features[key]

    # --- tasks --------------------------------------------------------------------------
    def run(self, tasks: list[FoldTask]) -> list[TaskOutcome]:
        """Every task's outcome, in task order; tasks on the batched engine train together. A task
        the engine asked for refuses fails on its own (the others go on)."""
        choice: list[tuple[str, str]] = []
        outcomes: list[TaskOutcome | None] = [None] * len(tasks)
        for i, t in enumerate(tasks):
            try:
                choice.append(self.engine_for(t.hparams, t.seed))
            except EngineChoiceError as e:
                choice.append(("refused", str(e)))
                outcomes[i] = TaskOutcome(t, TaskFailed(str(e), refused=True), self.engine, str(e), device_name(self.data.device))
        used_features = set()
        trainer = BatchedTrainer(self.spec, self.data, self.features_of, self.model)  # one for both phases: one build per model
        try:
            for engine, execute in (("batched", lambda jobs: run_jobs(trainer, jobs)), ("sequential", self._sequential)):
                members = [i for i, (e, _) in enumerate(choice) if e == engine]
                if not members:
                    continue
                if engine == "batched":
                    used_features |= {self._features_key(tasks[i].hparams, tasks[i].seed) for i in members}
                outs = run_tasks(execute, self.data, [tasks[i] for i in members])
                for i, out in zip(members, outs):
                    outcomes[i] = TaskOutcome(tasks[i], out, engine, choice[i][1], device_name(self.data.device))
        finally:
            trainer.release()
            self._models.clear()  # the batched engine loads states into the builds it keeps: never reused by the next call
        for key in set(self._features) - used_features:  # features no longer used are released
            del self._features[key]
        return outcomes


def raise_failures(outcomes: list[TaskOutcome], what: str) -> None:
    """Outside a search a failed task leaves no record to write: an error naming seed and fold
    (``EngineChoiceError`` when the engine asked for refused it)."""
    failed = [o for o in outcomes if not o.ok]
    if failed:
        o = failed[0]
        if o.output.refused:
            raise EngineChoiceError(o.output.reason)
        raise FloatingPointError(f"{what}: seed {o.task.seed}, fold {o.task.fold.index} ({o.task.fold.test_subject}): "
                                 f"{o.output.reason}" + (f" (and {len(failed) - 1} more tasks)" if len(failed) > 1 else ""))
