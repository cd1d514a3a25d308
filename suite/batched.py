"""Fold-batched training: the models of a round that share an architecture — folds, inner and
outer models, seeds, and configurations that differ only in continuous hyper-parameters (learning
rate, weight decay, loss weights, temperatures) — train as one batched model.

Why: on cached frozen features a model is a small head, and the sequential engine spends its time
on per-step Python and autograd overhead for tiny matrices, once per fold, per inner/outer model,
per configuration. Here every model's parameters carry a leading model dimension
(``torch.func.stack_module_state`` semantics) and one ``vmap`` over ``functional_call`` runs all
of them in each step.

Each model keeps what the sequential engine gives it: its own initial weights (built from the same
seed), its own training subset and minibatch order (a generator seeded per fold, as
``Engine.train``), its own fold statistics (``on_fold_start``), its own AdamW state (its parameter
groups' learning rates included), its own epoch and threshold bookkeeping. Shorter minibatches
are padded to the batch size with zero-weight samples — except in models with batch statistics
(batch norm), where models step together only when their minibatches have the same size and
running statistics are kept per model. A model whose epoch has fewer steps sits the extra steps
out (no update, no AdamW step). A non-finite loss stops that model only and is reported for it.

Two input paths: cached features of a frozen encoder (or of fixed input preprocessing, as the flow
baselines have), or the frames themselves, the encoder then trained inside every model (full or
last-n fine-tuning: each model's tower weights and optimizer state are stacked too, and as many
models as fit in GPU memory train per run). On a CPU a trained tower is compute-bound, so
``--engine auto`` keeps it sequential there.

The stacked parameters are one flat ``[models, P]`` tensor (``StackedParameters``); the optimizer
is ``torch.optim.AdamW(fused=True)`` — the sequential engine's — over each model's row of it (one
leaf per model and parameter group, sharing the flat storage): one fused kernel steps every model,
and a model sits a step out by having no gradient, which PyTorch's optimizers skip (its step count
and moments stay).
Dropout draws differ from the sequential engine's (one RNG stream for the batch), so with
``dropout > 0`` the two engines agree in distribution, and with ``dropout = 0`` to
floating-point tolerance (tested).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
from accelerate.utils import set_seed
from torch.func import functional_call, vmap
from tqdm import tqdm

from .engine import DatasetTensors, FoldOutput, InnerPredictions
from .metrics import f1_per_au
from .protocol import Fold, verify_fold
from .registry import MethodSpec
from .selection import inner_choice

ENGINES = ("auto", "batched", "sequential")
# hyper-parameters that may differ between models trained as one batch (held in buffers or the optimizer)
PER_MODEL = ("lr", "weight_decay", "lambda_gd", "tau_gd", "lambda_cl", "tau_cl")


class EngineChoiceError(ValueError):
    """``--engine batched`` asked for something that cannot be batched."""


def architecture_key(hp: dict) -> str:
    """Models whose hyper-parameters agree outside ``PER_MODEL`` can train as one batch."""
    return json.dumps({k: v for k, v in hp.items() if k not in PER_MODEL}, sort_keys=True, default=str)


def choose_engine(requested: str, method: str, batchable: bool, why_not: str = "", sequential_preferred: str = "") -> str:
    """``auto`` → batched when the model can be batched and batching pays off (``sequential_preferred``:
    why it would not); an explicit ``batched`` that cannot be is an error, never a silent swap."""
    if requested not in ENGINES:
        raise EngineChoiceError(f"--engine {requested!r}: choose one of {ENGINES}")
    if requested == "sequential" or (requested == "auto" and (not batchable or sequential_preferred)):
        return "sequential"
    if not batchable:
        raise EngineChoiceError(f"--engine batched: {method} cannot be fold-batched ({why_not}); use --engine sequential or auto")
    return "batched"


@dataclass
class Job:
    """One model: trained on ``train`` (known AUs) for ``epochs``, predicting ``evaluate`` after
    every epoch (``every_epoch``) or once, after its last."""

    hp: dict
    train: np.ndarray
    evaluate: np.ndarray
    fold_seed: int
    epochs: int
    every_epoch: bool = True
    seed: int | None = None  # the model's initialisation seed (None: the trainer's)


@dataclass
class JobResult:
    epochs: list[int]
    probs: np.ndarray  # [E, n_eval, K] (epochs done; fewer when it failed)
    losses: list[float]
    failed_at: int | None = None
    reason: str | None = None


class StackedParameters:
    """Every model's trainable parameters as one ``[models, P]`` tensor (``flat``) with a named
    view per parameter, and each model's AdamW: one gradient row per model is all a step hands the
    optimizer (a per-parameter leaf list would cost ~3× as much Python per step)."""

    def __init__(self, stacked: dict[str, torch.Tensor], lr_scale: dict[str, float]):
        names = list(stacked)
        models = stacked[names[0]].shape[0]
        self.flat = torch.cat([stacked[n].reshape(models, -1) for n in names], 1)
        self.spans, offset = {}, 0
        self.segments: list[list] = []  # [offset, size, learning-rate multiplier]: consecutive parameters of one group
        for n in names:
            size = stacked[n][0].numel()
            self.spans[n] = (offset, size, stacked[n].shape[1:])
            if self.segments and self.segments[-1][2] == lr_scale[n]:
                self.segments[-1][1] += size
            else:
                self.segments.append([offset, size, lr_scale[n]])
            offset += size

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named parameters [models, ...] as views of ``flat`` (this object's, or a copy of some rows)."""
        return {n: flat[:, o:o + k].view(flat.shape[0], *shape) for n, (o, k, shape) in self.spans.items()}

    def optimizer(self, lr: list[float], weight_decay: list[float]) -> tuple[torch.optim.AdamW, list[list[torch.Tensor]]]:
        """(``torch.optim.AdamW(fused=True)`` over every model's segments of ``flat`` — leaves sharing
        its storage, one parameter group per distinct learning rate and weight decay —, each
        model's leaves in segment order, for ``set_gradients``)."""
        leaves = [[self.flat[m, o:o + k].detach().requires_grad_(True) for o, k, _ in self.segments] for m in range(len(lr))]
        groups: dict[tuple[float, float], list[torch.Tensor]] = {}
        for m, model_leaves in enumerate(leaves):
            for leaf, (_, _, scale) in zip(model_leaves, self.segments):
                groups.setdefault((lr[m] * scale, weight_decay[m]), []).append(leaf)
        return torch.optim.AdamW([{"params": p, "lr": g_lr, "weight_decay": g_wd} for (g_lr, g_wd), p in groups.items()], fused=True), leaves

    def set_gradients(self, leaves: list[torch.Tensor], grad: torch.Tensor) -> None:
        """One model's gradient row ``grad`` [P] onto its leaves (views, no copy)."""
        for leaf, (o, k, _) in zip(leaves, self.segments):
            leaf.grad = grad[o:o + k]


class BatchedTrainer:
    """Trains jobs of one architecture at once, on cached features ``[N, ...]`` (a frozen encoder
    or fixed input preprocessing: one tensor per initialisation seed, since a random-init encoder
    differs between seeds), or, with ``features=None``, on the frames themselves: the encoder is
    then trained, and its weights, trained and frozen, are stacked per model like the heads'.
    ``max_models``: at most this many models in one batched run (memory; None: all)."""

    def __init__(self, spec: MethodSpec, data: DatasetTensors, seed: int, features: torch.Tensor | dict[int, torch.Tensor] | None = None,
                 max_models: int | None = None):
        self.spec, self.data, self.seed, self.max_models = spec, data, seed, max_models
        self.features = None if features is None else features if isinstance(features, dict) else {seed: features}
        self.device = data.device
        self.y = torch.as_tensor(data.labels, dtype=torch.float32, device=self.device)
        self.known = torch.as_tensor(data.known, dtype=torch.float32, device=self.device)
        self.autocast = dict(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        self._initial: dict[str, tuple[dict, dict]] = {}  # (configuration, seed) → its initial state
        self._bases: dict[str, torch.nn.Module] = {}  # architecture → one module to call functionally
        self._model_bytes: dict[str, int] = {}  # architecture → measured GPU peak of one model's step (trained encoder)

    def seed_of(self, job: Job) -> int:
        return self.seed if job.seed is None else job.seed

    def _initial_state(self, hp: dict, seed: int) -> tuple[dict, dict]:
        """(trainable parameters, fixed tensors) of the model built from ``seed`` exactly as
        ``Engine`` builds it. Fixed: every buffer (fold statistics, loss weights, the prompts' text
        features — which differ per seed with a random-init tower) and, when the encoder runs
        inside the model (no cached features), its frozen parameters. Only one module per
        architecture is kept (a frozen encoder can be large)."""
        key = json.dumps([hp, seed], sort_keys=True, default=str)
        if key not in self._initial:
            set_seed(seed)
            model = self.spec.build(hp, self.data.aus, {"n_samples": len(self.data)}).to(self.device)
            fixed = {n: b.detach().clone() for n, b in model.named_buffers()}
            if self.features is None:
                fixed.update({n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad})
            self._initial[key] = ({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}, fixed)
            self._bases.setdefault(architecture_key(hp), model)
        return self._initial[key]

    def _stack(self, jobs: list[Job]):
        """(the architecture's module, stacked trainable parameters, stacked fixed tensors): each
        job from its configuration's initial state with its own fold statistics (``on_fold_start``)."""
        params, fixed = [], []
        for job in jobs:
            trainable, rest = self._initial_state(job.hp, self.seed_of(job))
            base = self._bases[architecture_key(job.hp)]
            base.load_state_dict({**trainable, **rest}, strict=False)
            base.on_fold_start(self.data.labels[job.train], self.data.known[job.train])
            buffers = dict(base.named_buffers())
            params.append(trainable)
            fixed.append({n: buffers[n].detach().clone() if n in buffers else t for n, t in rest.items()})
        return base, {n: torch.stack([p[n] for p in params]) for n in params[0]}, {n: torch.stack([f[n] for f in fixed]) for n in fixed[0]}

    @staticmethod
    def _lr_scales(base: torch.nn.Module, names) -> dict[str, float]:
        """Each trainable parameter's learning-rate multiplier, from the model's ``param_groups``
        (e.g. the image tower at ``backbone_lr_scale``) as the sequential engine's optimizer has it."""
        if not hasattr(base, "param_groups"):
            return dict.fromkeys(names, 1.0)
        name_of = {id(p): n for n, p in base.named_parameters()}
        return {name_of[id(p)]: g["lr"] for g in base.param_groups(1.0, 0.0) for p in g["params"]}

    @staticmethod
    def _running_statistics(base: torch.nn.Module) -> list[str]:
        """Buffers a training forward updates in place (batch norm's running statistics): written
        back to the stacked copies after every step."""
        return [f"{m}.{b}" if m else b for m, mod in base.named_modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)
                for b, _ in mod.named_buffers(recurse=False)]

    def models_per_run(self, job: Job, n: int) -> int:
        """How many of ``n`` models like ``job`` train in one batched run: ``max_models`` when set;
        all on cached features or a CPU; with a trained encoder on a GPU, as many as fit in 80 % of
        the free memory, from the measured peak of one model's training step."""
        if self.max_models:
            return max(1, min(n, self.max_models))
        if self.features is None and self.device.type == "cuda" and n > 1:
            key = architecture_key(job.hp)
            if key not in self._model_bytes:  # measured once per architecture (inner and outer phases share it)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                start = torch.cuda.memory_allocated()
                self.run([Job(job.hp, job.train[:job.hp["batch_size"]], job.evaluate[:0], 0, 1, every_epoch=False, seed=job.seed)])
                self._model_bytes[key] = max(torch.cuda.max_memory_allocated() - start, 1)
            torch.cuda.empty_cache()  # freed blocks would otherwise count as used
            per_model = self._model_bytes[key]
            fit = max(1, min(n, int(0.8 * torch.cuda.mem_get_info()[0] / per_model)))
            tqdm.write(f"fold-batched: {fit} of {n} models per run (one model's training step peaked at {per_model / 2**30:.2f} GiB)")
            return fit
        return n

    def holds(self, features: torch.Tensor | None) -> bool:
        """Whether this trainer trains on ``features`` (its seed's cached features; None: the frames)."""
        mine = None if self.features is None else self.features[self.seed]
        return mine is features or (mine is not None and features is not None and torch.equal(mine, features))

    def release(self) -> None:
        """Forget built models and initial states (a long search sees many configurations)."""
        self._initial.clear()
        self._bases.clear()

    def _inputs(self, jobs: list[Job]):
        """(sel [S], idx [S, B]) → the models' input batch: cached features of each model's seed, or frames."""
        if self.features is None:
            frames = self.data.frames
            return lambda sel, t: {k: v[t] for k, v in frames.items()}
        seeds = sorted({self.seed_of(j) for j in jobs})
        features = torch.cat([self.features[s] for s in seeds])  # [seeds × N, ...]
        # each model's row offset (its seed's block): one index_select gathers every model's
        # minibatch, several times faster than advanced indexing on a [seeds, N, ...] stack
        offset = torch.as_tensor([seeds.index(self.seed_of(j)) * len(self.data) for j in jobs], device=self.device)
        return lambda sel, t: {"features": features.index_select(0, (offset[sel][:, None] + t).flatten()).view(*t.shape, *features.shape[1:])}

    def run(self, jobs: list[Job]) -> list[JobResult]:
        keys = {architecture_key(j.hp) for j in jobs}
        if len(keys) != 1:
            raise ValueError("a batch holds one architecture; group jobs by architecture_key first")
        base, stacked, fixed = self._stack(jobs)
        packed = StackedParameters(stacked, self._lr_scales(base, stacked))
        params = packed.views(packed.flat)
        inputs = self._inputs(jobs)
        running = self._running_statistics(base)
        hp, m_count, k = jobs[0].hp, len(jobs), self.y.shape[1]
        bs, epochs = hp["batch_size"], max(j.epochs for j in jobs)
        optimizer, leaves = packed.optimizer([j.hp["lr"] for j in jobs], [j.hp["weight_decay"] for j in jobs])
        gens = [torch.Generator().manual_seed(j.fold_seed) for j in jobs]
        alive = [True] * m_count
        results = [JobResult([], np.zeros((0, len(j.evaluate), k)), []) for j in jobs]

        def loss_of(p, b, batch, y, w):
            return functional_call(base, (p, b), ({**batch, "au": y, "weight": w},))["loss"].float()

        def logits_of(p, b, batch):
            return functional_call(base, (p, b), (batch,))["logits"].float()

        batched_loss = vmap(loss_of, randomness="different")
        batched_logits = vmap(logits_of, randomness="different")
        eval_probs: list[list[np.ndarray]] = [[] for _ in jobs]
        for epoch in tqdm(range(1, epochs + 1), desc=f"{m_count} models trained as one", unit="epoch", disable=None, leave=False):
            base.train()
            orders = [j.train[torch.randperm(len(j.train), generator=g).numpy()] for j, g in zip(jobs, gens)]
            steps = [-(-len(o) // bs) for o in orders]
            loss_sum = torch.zeros(m_count, device=self.device)
            for s in range(max(steps)):
                # shorter minibatches are padded with zero-weight samples, except where the model
                # has batch statistics (a padded sample would enter them): there models step
                # together only when their minibatches have the same size; finished models drop out
                groups: dict[int, list[int]] = {}
                for i, o in enumerate(orders):
                    if alive[i] and s < steps[i] and epoch <= jobs[i].epochs:
                        groups.setdefault(len(o[s * bs:(s + 1) * bs]) if running else bs, []).append(i)
                for size, members in groups.items():
                    t = np.zeros((len(members), size), dtype=np.int64)
                    valid = np.zeros((len(members), size), dtype=np.float32)
                    for row, i in enumerate(members):
                        part = orders[i][s * bs:s * bs + size]
                        t[row, :len(part)], valid[row, :len(part)] = part, 1.0
                    self._step(batched_loss, inputs, packed, fixed, running, optimizer, leaves, members, m_count,
                               torch.as_tensor(t, device=self.device), torch.as_tensor(valid, device=self.device),
                               epoch, alive, results, loss_sum)
            for i, (j, r) in enumerate(zip(jobs, results)):
                if r.failed_at is None and epoch <= j.epochs:
                    r.epochs.append(epoch)
                    r.losses.append(float(loss_sum[i]) / max(steps[i], 1))
            due = [j.every_epoch and epoch <= j.epochs or epoch == j.epochs for j in jobs]
            if any(due):
                self._evaluate(base, batched_logits, params, fixed, inputs, jobs, results, eval_probs, due)
        zero = [j.epochs == 0 for j in jobs]
        if any(zero):  # nothing to train: the initial models, scored once as epoch 0
            self._evaluate(base, batched_logits, params, fixed, inputs, jobs, results, eval_probs, zero, epoch0=True)
        for r, probs in zip(results, eval_probs):
            if probs:
                r.probs = np.stack(probs)
        return results

    def _step(self, batched_loss, inputs, packed: StackedParameters, fixed, running, optimizer, leaves, members, m_count, t, valid,
              epoch, alive, results, loss_sum) -> None:
        """One optimisation step of the models ``members`` on their minibatches ``t`` [S, B]
        (``valid`` [S, B]: 0 for padding)."""
        every = len(members) == m_count
        sel = slice(None) if every else torch.as_tensor(members, device=self.device)
        # all models: views of the flat parameters themselves; otherwise of a copy of the selected
        # rows. Each view is its own leaf: a gradient with respect to ``flat`` through the views
        # would cost a zero-filled [models, P] tensor per parameter in the backward pass.
        views = {n: v.detach().requires_grad_(True) for n, v in packed.views(packed.flat if every else packed.flat[sel]).items()}
        f_sel = fixed if every else {n: f[sel] for n, f in fixed.items()}
        with torch.autocast(**self.autocast):
            losses = batched_loss(views, f_sel, inputs(sel, t), self.y[t], valid[..., None] * self.known[t])  # padding and unknown labels weigh 0
        if not every:
            for n in running:
                fixed[n][sel] = f_sel[n]
        ok = torch.isfinite(losses)
        for i in torch.nonzero(~ok).flatten().tolist():
            m = members[i]
            results[m].failed_at, results[m].reason = epoch, f"non-finite loss {losses[i].item()} at epoch {epoch}"
            alive[m] = False
        if not ok.any():
            return
        grads = torch.autograd.grad(torch.where(ok, losses, 0.0).sum(), list(views.values()))
        grad = torch.cat([g.reshape(len(members), -1) for g in grads], 1)
        loss_sum[sel] += torch.where(ok, losses.detach(), 0.0)
        for row, (m, finite) in enumerate(zip(members, ok.tolist())):  # only the models whose loss is finite step
            if finite:
                packed.set_gradients(leaves[m], grad[row])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def _evaluate(self, base, batched_logits, params, fixed, inputs, jobs, results, eval_probs, due: list[bool],
                  epoch0: bool = False) -> None:
        """Predict every due job's evaluation samples (one vmapped pass over all models; shorter
        evaluation sets are padded, harmless in evaluation mode)."""
        base.eval()
        n_max = max(len(j.evaluate) for j in jobs)
        if n_max == 0:
            for i, r in enumerate(results):
                if r.failed_at is None and due[i]:
                    eval_probs[i].append(np.zeros((0, self.y.shape[1])))
                    if epoch0:
                        r.epochs.append(0)
            return
        idx = np.zeros((len(jobs), n_max), dtype=np.int64)
        for i, j in enumerate(jobs):
            idx[i, :len(j.evaluate)] = j.evaluate
        with torch.autocast(**self.autocast):
            probs = torch.sigmoid(batched_logits(params, fixed, inputs(slice(None), torch.as_tensor(idx, device=self.device)))).cpu().numpy()
        for i, (j, r) in enumerate(zip(jobs, results)):
            if r.failed_at is None and due[i]:
                eval_probs[i].append(probs[i, :len(j.evaluate)])
                if epoch0:
                    r.epochs.append(0)


def run_jobs(trainer: BatchedTrainer, jobs: list[Job]) -> list[JobResult]:
    """Jobs of any architectures: batched runs per architecture, of at most as many models as fit
    (``BatchedTrainer.models_per_run``), results in job order."""
    groups: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(architecture_key(job.hp), []).append(i)
    results: list[JobResult | None] = [None] * len(jobs)
    for members in groups.values():
        size = trainer.models_per_run(jobs[members[0]], len(members))
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            for i, r in zip(chunk, trainer.run([jobs[i] for i in chunk])):
                results[i] = r
    return results


def run_folds_batched(trainer: BatchedTrainer, tasks: list[tuple]) -> list[FoldOutput | str]:
    """Every (fold, hyper-parameters[, seed]) task as ``Engine.run_fold(fold, "inner")`` with that
    seed (default: the trainer's) computes it, or the reason it failed. Two batched phases: all inner models (predicting their inner-validation
    subjects after every epoch, which chooses each task's epoch count and thresholds), then all
    outer models, each stopping at its own task's epoch count and predicting its test subject."""
    data = trainer.data
    tasks = [(t[0], t[1], t[2] if len(t) > 2 else trainer.seed) for t in tasks]
    inner_jobs = []
    for fold, hp, seed in tasks:
        verify_fold(data.subject, fold)
        inner_jobs.append(Job(hp, data.any_known(fold.inner_train), data.any_known(fold.inner_val),
                              seed * 100_003 + fold.index, hp["epochs"], seed=seed))
    try:
        inner = run_jobs(trainer, inner_jobs)
        outputs = _finish_tasks(trainer, tasks, inner_jobs, inner)
    finally:
        trainer.release()
    return outputs


def _finish_tasks(trainer: BatchedTrainer, tasks: list[tuple], inner_jobs: list[Job], inner: list[JobResult]) -> list[FoldOutput | str]:
    """Each task's choices from its inner model, then all outer models as one batched phase."""
    data = trainer.data
    outputs: list[FoldOutput | str | None] = [None] * len(tasks)
    outer_jobs, waiting = [], []
    for t, ((fold, hp, _), job, res) in enumerate(zip(tasks, inner_jobs, inner)):
        if res.failed_at is not None:
            outputs[t] = res.reason
            continue
        y, known, metric = data.labels[job.evaluate], data.known[job.evaluate], hp["metric"]
        chosen, threshold, inner_f1 = inner_choice(y, res.probs, data.subject[job.evaluate], metric, known)
        best_epoch = res.epochs[chosen]
        history = [{"epoch": e, **({"loss": res.losses[i]} if i < len(res.losses) else {}),
                    "val_f1": float(f1_per_au(y, p >= 0.5, metric, known).mean())} for i, (e, p) in enumerate(zip(res.epochs, res.probs))]
        outer_jobs.append(Job(hp, data.any_known(fold.train), fold.test, job.fold_seed, max(best_epoch, 1) if hp["epochs"] else 0,
                              every_epoch=False, seed=job.seed))
        waiting.append((t, fold, threshold, best_epoch, inner_f1, history, InnerPredictions(job.evaluate, res.epochs, res.probs)))
    for (t, fold, threshold, best_epoch, inner_f1, history, inner_preds), res in zip(waiting, run_jobs(trainer, outer_jobs) if outer_jobs else []):
        outputs[t] = res.reason if res.failed_at is not None else \
            FoldOutput(fold.index, fold.test, res.probs[-1], threshold, best_epoch, inner_f1, history, inner_preds)
    return outputs
