"""The fold-batched engine: models of one architecture — folds, inner and outer models, seeds, and
configurations that differ only in continuous hyper-parameters (learning rate, weight decay, loss
weights, temperatures) — train as one batched model. An executor of the fold protocol's jobs
(``suite.folds``), interchangeable with the sequential engine (``suite.engine.SequentialEngine.run_job``).

Why: on cached frozen features a model is a small head, and the sequential engine spends its time
on per-step Python and autograd overhead for tiny matrices. Here every model's parameters carry a
leading model dimension (``torch.func.stack_module_state`` semantics) and one ``vmap`` over
``functional_call`` runs all of them in each step.

A job's numbers depend on the job alone, never on its batch company (``suite.streams``): its own
initial weights (built from its seed), its own features (computed from its own configuration and
seed, ``features_of``; models of one run share a tensor only when their architecture and seed
agree, and so their features), its own minibatch order and dropout masks (from its stream: the
masks are a hash of stream, step, layer and position, so vmapping draws nothing from a shared
generator), its own fold statistics (``on_fold_start``), its own AdamW state. Shorter minibatches
are padded to the batch size with zero-weight samples. A model whose epoch has fewer steps sits the extra steps out (no update, no
AdamW step). A non-finite loss stops that model only and is reported for it.

Input: cached features of a frozen encoder (``features_of``). What the engine refuses
(``batch_refusal``): a trained encoder or any trained convolution — a convolution vmapped over
another number of models takes another kernel and rounds differently, and training amplifies that
(OFF-ApexNet at lr 0.01: test probabilities 0.02–0.09 apart alone vs in a batch of 8; a fine-tuned
tiny tower: 3e-5), so its numbers would depend on its company — and batch norm, which padding
would enter.

The stacked parameters are one flat ``[models, P]`` tensor (``StackedParameters``); the optimizer
is ``torch.optim.AdamW(fused=True)`` — the sequential engine's — over each model's row of it (one
leaf per model and parameter group, sharing the flat storage): one fused kernel steps every model,
and a model sits a step out by having no gradient, which PyTorch's optimizers skip (its step count
and moments stay).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch.func import functional_call, vmap
from tqdm import tqdm

from .engine import DatasetTensors
from .jobs import JobResult, ModelJob
from .models.detector import OPTIMIZER_HPARAMS, Detector
from .registry import MethodSpec
from .streams import check_keyed, dropout_keys, step_key

EVAL_CHUNK = 64  # samples per model in one evaluation pass


def batch_refusal(model: Detector, method: str) -> str | None:
    """Why the fold-batched engine cannot train this model as one of many (None: it can): only a
    model on cached features whose trained layers round alike in any company (linear layers,
    attention, layer norm: bit-identical alone and in a batch, tested) is batched. A trained
    encoder or trained convolution rounds by the number of models in the batch, and batch norm
    amplifies it (docs/protocol.md, "Task independence"). Then the model's own ``batch_refusal``."""
    if not model.batchable:
        return f"{method} has no batched form"
    if not model.encoder_frozen:
        return f"{method}'s encoder is trained: batched, its numbers would depend on the models sharing its batch"
    trained_conv = [n for n, m in model.named_modules()
                    if isinstance(m, torch.nn.modules.conv._ConvNd) and any(p.requires_grad for p in m.parameters())]
    if trained_conv:
        return f"{method} trains convolutions: batched, its numbers would depend on the models sharing its batch"
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return f"{method} has batch norm: a padded minibatch would enter its batch statistics"
    return model.batch_refusal


def per_model_names(model: Detector) -> tuple[str, ...]:
    """The hyper-parameters that may differ between models trained as one batch: the optimizer's
    (``lr``, ``weight_decay``) and those the model holds in buffers (``Detector.per_model_hparams``)."""
    return OPTIMIZER_HPARAMS + tuple(model.per_model_hparams)


def check_per_model(model: Detector, hp: dict, method: str) -> None:
    """An error unless every hyper-parameter the model declares per model (``per_model_hparams``)
    is one of its configuration's and held by buffers with its value: a value the forward pass
    read from anywhere else would be the first model's for the whole batch, silently."""
    buffers = dict(model.named_buffers())
    for name, held in model.per_model_hparams.items():
        where = f"{method} declares {name!r} per model (per_model_hparams)"
        if name in OPTIMIZER_HPARAMS:
            raise ValueError(f"{where}: the optimizer holds it per model already; declare only what buffers hold")
        if name not in hp:
            raise ValueError(f"{where}, but it is not one of the method's hyper-parameters")
        if not held:
            raise ValueError(f"{where} and names no buffer that holds it: batched, every model would use the first one's value")
        missing = [b for b in held if b not in buffers]
        if missing:
            raise ValueError(f"{where}, but {', '.join(missing)} is not a buffer of the model (buffers: "
                             f"{', '.join(buffers) or 'none'}): batched, every model would use the first one's value")
        try:
            value = float(hp[name])
        except (TypeError, ValueError):
            raise ValueError(f"{where}, but its value {hp[name]!r} is not a number a buffer can hold") from None
        wrong = [b for b in held if not bool((buffers[b] == torch.tensor(value, dtype=buffers[b].dtype)).all())]
        if wrong:
            raise ValueError(f"{where}, but buffer {', '.join(wrong)} does not hold its value {hp[name]!r}: batched, "
                             "every model would use the first one's value")


def architecture_key(hp: dict, per_model: Iterable[str]) -> str:
    """Models whose hyper-parameters agree outside ``per_model`` (``per_model_names``) can train
    as one batch."""
    per_model = set(per_model)
    return json.dumps({k: v for k, v in hp.items() if k not in per_model}, sort_keys=True, default=str)


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
    """Trains jobs of one architecture at once. ``features_of(hp, seed)``: the cached features
    ``[N, ...]`` of that configuration built from that seed (a frozen encoder; a random-init
    encoder differs between seeds); ``build(hp, seed)``: the model built from that seed (its
    initial state is copied before the first job loads another state into it)."""

    def __init__(self, spec: MethodSpec, data: DatasetTensors, features_of: Callable[[dict, int], torch.Tensor | None],
                 build: Callable[[dict, int], Detector]):
        self.spec, self.data, self.features_of, self.build = spec, data, features_of, build
        self.device = data.device
        self.y = torch.as_tensor(data.labels, dtype=torch.float32, device=self.device)
        self.known = torch.as_tensor(data.known, dtype=torch.float32, device=self.device)
        self.autocast = dict(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        self._initial: dict[str, tuple[dict, dict]] = {}  # (configuration, seed) → its initial state
        self._bases: dict[str, Detector] = {}  # architecture → one module to call functionally

    def architecture(self, job: ModelJob) -> str:
        """The job's ``architecture_key``: jobs that agree in it train as one batch."""
        return architecture_key(job.hp, per_model_names(self.build(job.hp, job.seed)))

    def _initial_state(self, hp: dict, seed: int) -> tuple[dict, dict]:
        """(trainable parameters, fixed tensors) of the model built from ``seed`` exactly as
        ``SequentialEngine`` builds it. Fixed: every buffer (fold statistics, loss weights, the prompts' text
        features — which differ per seed with a random-init tower —, dropout keys). Only one module
        per architecture is kept (a frozen encoder can be large)."""
        key = json.dumps([hp, seed], sort_keys=True, default=str)
        if key not in self._initial:
            model = self.build(hp, seed).to(self.device)
            refusal = batch_refusal(model, self.spec.name)
            if refusal:
                raise ValueError(f"the fold-batched engine cannot train this configuration: {refusal}")
            check_per_model(model, hp, self.spec.name)
            check_keyed(model)
            fixed = {n: b.detach().clone() for n, b in model.named_buffers()}
            self._initial[key] = ({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}, fixed)
            self._bases.setdefault(architecture_key(hp, per_model_names(model)), model)
        return self._initial[key]

    def _stack(self, jobs: list[ModelJob]):
        """(the architecture's module, stacked trainable parameters, stacked fixed tensors): each
        job from its configuration's initial state with its own fold statistics (``on_fold_start``)."""
        params, fixed = [], []
        for job in jobs:
            trainable, rest = self._initial_state(job.hp, job.seed)
            base = self._bases[self.architecture(job)]
            base.load_state_dict({**trainable, **rest}, strict=False)
            base.on_fold_start(self.data.labels[job.train], self.data.known[job.train])
            buffers = dict(base.named_buffers())
            params.append(trainable)
            fixed.append({n: buffers[n].detach().clone() if n in buffers else t for n, t in rest.items()})
        return base, {n: torch.stack([p[n] for p in params]) for n in params[0]}, {n: torch.stack([f[n] for f in fixed]) for n in fixed[0]}

    @staticmethod
    def _lr_scales(base: Detector) -> dict[str, float]:
        """Each trainable parameter's learning-rate multiplier, from the model's ``param_groups``
        (e.g. the image tower at ``backbone_lr_scale``) as the sequential engine's optimizer has it."""
        name_of = {id(p): n for n, p in base.named_parameters()}
        return {name_of[id(p)]: g["lr"] for g in base.param_groups(1.0, 0.0) for p in g["params"]}

    def release(self) -> None:
        """Forget built models and initial states (a long search sees many configurations)."""
        self._initial.clear()
        self._bases.clear()

    def _inputs(self, jobs: list[ModelJob], features: dict[int, torch.Tensor]):
        """(sel [S], idx [S, B]) → the models' input batch: each model's own features (those of
        its configuration and seed)."""
        seeds = sorted(features)
        stacked = torch.cat([features[s] for s in seeds])  # [seeds × N, ...]
        # each model's row offset (its seed's block): one index_select gathers every model's
        # minibatch, several times faster than advanced indexing on a [seeds, N, ...] stack
        offset = torch.as_tensor([seeds.index(j.seed) * len(self.data) for j in jobs], device=self.device)
        return lambda sel, t: {"features": stacked.index_select(0, (offset[sel][:, None] + t).flatten()).view(*t.shape, *stacked.shape[1:])}

    def _features(self, jobs: list[ModelJob]) -> dict[int, torch.Tensor]:
        """Per seed, the features of this run's configuration (one architecture: every
        hyper-parameter that ``encode`` reads agrees)."""
        per_seed = {s: self.features_of(jobs[0].hp, s) for s in sorted({j.seed for j in jobs})}
        for s, f in per_seed.items():
            if f is None or f.shape[0] != len(self.data) or f.device != self.device:
                raise ValueError(f"features of seed {s}: {None if f is None else (tuple(f.shape), str(f.device))}, "
                                 f"expected {len(self.data)} samples on {self.device}")
        return per_seed

    def run(self, jobs: list[ModelJob]) -> list[JobResult]:
        keys = {self.architecture(j) for j in jobs}
        if len(keys) != 1:
            raise ValueError("a batch holds one architecture; group jobs by architecture_key first")
        features = self._features(jobs)
        base, stacked, fixed = self._stack(jobs)
        packed = StackedParameters(stacked, self._lr_scales(base))
        params = packed.views(packed.flat)
        inputs = self._inputs(jobs, features)
        keyed = dropout_keys(base)
        hp, m_count, k = jobs[0].hp, len(jobs), self.y.shape[1]
        bs, epochs = hp["batch_size"], max(j.epochs for j in jobs)
        optimizer, leaves = packed.optimizer([j.hp["lr"] for j in jobs], [j.hp["weight_decay"] for j in jobs])
        gens = [torch.Generator().manual_seed(j.stream) for j in jobs]
        alive = [True] * m_count
        taken = [0] * m_count  # each model's optimisation steps so far (its dropout keys' counter)
        results = [JobResult([], np.zeros((0, len(j.evaluate), k)), []) for j in jobs]

        def loss_of(p, b, batch, y, w):
            return functional_call(base, (p, b), ({**batch, "au": y, "weight": w},))["loss"].float()

        def logits_of(p, b, batch):
            return functional_call(base, (p, b), (batch,))["logits"].float()

        batched_loss = vmap(loss_of, randomness="error")  # every random draw is a model's own keyed stream
        batched_logits = vmap(logits_of, randomness="error")
        eval_probs: list[list[np.ndarray]] = [[] for _ in jobs]
        for epoch in tqdm(range(1, epochs + 1), desc=f"{m_count} models trained as one", unit="epoch", disable=None, leave=False):
            base.train()
            orders = [j.train[torch.randperm(len(j.train), generator=g).numpy()] for j, g in zip(jobs, gens)]
            steps = [-(-len(o) // bs) for o in orders]
            loss_sum = torch.zeros(m_count, device=self.device)
            for s in range(max(steps)):
                # shorter minibatches are padded with zero-weight samples; finished models drop out
                members = [i for i in range(m_count) if alive[i] and s < steps[i] and epoch <= jobs[i].epochs]
                if not members:
                    continue
                t = np.zeros((len(members), bs), dtype=np.int64)
                valid = np.zeros((len(members), bs), dtype=np.float32)
                for row, i in enumerate(members):
                    part = orders[i][s * bs:(s + 1) * bs]
                    t[row, :len(part)], valid[row, :len(part)] = part, 1.0
                keys = {n: torch.as_tensor([step_key(jobs[i].stream, taken[i], layer) for i in members], device=self.device)
                        for layer, n in enumerate(keyed)}
                for i in members:
                    taken[i] += 1
                self._step(batched_loss, inputs, packed, fixed, keys, optimizer, leaves, members, m_count,
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

    def _step(self, batched_loss, inputs, packed: StackedParameters, fixed, keys, optimizer, leaves, members, m_count, t, valid,
              epoch, alive, results, loss_sum) -> None:
        """One optimisation step of the models ``members`` on their minibatches ``t`` [S, B]
        (``valid`` [S, B]: 0 for padding; ``keys``: each model's dropout key per layer)."""
        every = len(members) == m_count
        sel = slice(None) if every else torch.as_tensor(members, device=self.device)
        # all models: views of the flat parameters themselves; otherwise of a copy of the selected
        # rows. Each view is its own leaf: a gradient with respect to ``flat`` through the views
        # would cost a zero-filled [models, P] tensor per parameter in the backward pass.
        views = {n: v.detach().requires_grad_(True) for n, v in packed.views(packed.flat if every else packed.flat[sel]).items()}
        f_sel = {**(fixed if every else {n: f[sel] for n, f in fixed.items()}), **keys}
        with torch.autocast(**self.autocast):
            losses = batched_loss(views, f_sel, inputs(sel, t), self.y[t], valid[..., None] * self.known[t])  # padding and unknown labels weigh 0
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
        # chunks of a fixed size: a matmul's rounding may depend on its row count, which must not
        # depend on how many samples the other models evaluate
        n_pad = -(-n_max // EVAL_CHUNK) * EVAL_CHUNK
        idx = torch.zeros((len(jobs), n_pad), dtype=torch.int64, device=self.device)
        for i, j in enumerate(jobs):
            idx[i, :len(j.evaluate)] = torch.as_tensor(j.evaluate, device=self.device)
        with torch.autocast(**self.autocast):
            probs = torch.cat([torch.sigmoid(batched_logits(params, fixed, inputs(slice(None), idx[:, c:c + EVAL_CHUNK])))
                               for c in range(0, n_pad, EVAL_CHUNK)], 1).cpu().numpy()
        for i, (j, r) in enumerate(zip(jobs, results)):
            if r.failed_at is None and due[i]:
                eval_probs[i].append(probs[i, :len(j.evaluate)])
                if epoch0:
                    r.epochs.append(0)


def run_jobs(trainer: BatchedTrainer, jobs: list[ModelJob]) -> list[JobResult]:
    """Jobs of any architectures: one batched run per architecture, results in job order. How
    jobs are grouped changes speed, never a number."""
    groups: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(trainer.architecture(job), []).append(i)
    results: list[JobResult | None] = [None] * len(jobs)
    for members in groups.values():
        for i, r in zip(members, trainer.run([jobs[i] for i in members])):
            results[i] = r
    return results
