"""One Tune trial = one slice of a round: proposal j of every fold's study, each configuration
evaluated on its own outer fold with the nested protocol (``suite.folds``: the same protocol
``suite.train`` and the final seeds run).

A task that fails on its own (a non-finite loss) is recorded as failed with its reason and the
others go on; Tune's retries are for crashed processes. The tasks done are kept on disk as they
finish (the batched ones together, every other one on its own), so a retried or resumed slice
continues with the rest — with the same numbers, since
a task's outputs depend on the task alone (``suite.streams``), not on which tasks share its batch.
With ``fold_workers`` > 1 the tasks are dealt to this process and Ray actors in the trial's other
placement-group bundles. Outputs: one slice file pair per trial, written atomically once complete;
their format has one owner, ``suite.search.slices`` (``write_slice``, ``read_slice``, ``read_slices``).

The Tune trainable (``tune_rounds.SliceTrainable``) keeps one ``TaskRunner`` per actor (``setup``,
kept by ``reset_config`` when Tune reuses the actor) and runs a slice with ``SliceRun``. Importing
this module needs no Ray: ``TaskRunner`` runs tasks without it (``in_process_executor``).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..engine import DatasetTensors, FoldOutput, get_accelerator
from ..evaluation import evaluation_of, load_tensors
from ..folds import EngineChoiceError, FoldRunner, FoldTask, TaskOutcome, engine_request
from ..protocol import Protocol, split_settings
from ..registry import MethodSpec, get_method, resolve_hparams
from ..results import write_json
from .slices import partial_path, read_slice, write_slice

SEARCH_PROTOCOL = Protocol(selection="inner")  # a search's tasks choose epochs and thresholds on inner validation


def task_hparams(spec: MethodSpec, fixed: dict, params: dict, protocol: Protocol) -> dict:
    """The resolved hyper-parameters of a search's task — the one place they are computed: the
    method's defaults, then ``fixed`` (the preset's values, the space's fixed values, a fidelity's
    backbone mode), then the proposal's ``params``, then the search's ``protocol`` (never a
    searched or fixed value: protocol settings are not hyper-parameters)."""
    settings, _ = split_settings({**fixed, **params})
    if settings:
        raise ValueError(f"{sorted(settings)}: protocol settings, not hyper-parameters; a search's protocol is its Protocol")
    return resolve_hparams(spec, {**fixed, **params}, protocol)


@dataclass(frozen=True)
class RunContext:
    """Everything a trial process needs besides the slice it runs (the same for every slice of a
    stage): method, the hyper-parameters the space fixes, the evaluation and its releases' caches,
    the search seed, where outputs go, and how to run (resources, engine)."""

    method: str
    fixed: dict  # the preset's values, the space's fixed values, the fidelity's backbone mode (no protocol setting)
    dataset: str  # the evaluation's key (suite.evaluation: a release under LOSO, SRC-to-DST, A+B)
    caches: tuple  # ((release, cache path, cache fingerprint), …) in the evaluation's release order
    out_dir: str
    seed: int
    protocol: Protocol = SEARCH_PROTOCOL  # inner-validation share, selection inside a task, metric
    token_cache: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    fold_workers: int = 1
    compile: str | None = None
    engine: str = "auto"

    def with_(self, **changes) -> "RunContext":
        return replace(self, **changes)

    @property
    def process_key(self) -> str:
        """What a process's resident state depends on (not the outputs folder)."""
        return json.dumps({k: v for k, v in asdict(self).items() if k != "out_dir"}, sort_keys=True, default=str)


class TaskRunner:
    """An evaluation's data resident on one device, its outer folds, and a ``FoldRunner`` that runs a slice's
    tasks (each configuration built from the search seed, so a task's outputs do not depend on
    which process or slice runs it)."""

    def __init__(self, ctx: RunContext, on_gpu: bool = False, data: DatasetTensors | None = None):
        import torch

        if on_gpu and ctx.gpus_per_trial < 1:
            torch.cuda.set_per_process_memory_fraction(ctx.gpus_per_trial)
        self.ctx = ctx
        self.acc = get_accelerator(cpu=not on_gpu)  # trials without GPUs never touch one
        self.spec = get_method(ctx.method)
        evaluation = evaluation_of(ctx.dataset)
        self.aus = evaluation.aus
        self.data = data if data is not None else load_tensors(evaluation, {r: (p, fp) for r, p, fp in ctx.caches}, self.acc.device)
        self.folds = {f.index: f for f in evaluation.folds(self.data.subject, ctx.protocol, ctx.seed)}
        engine, reason = engine_request(ctx.engine, ctx.fold_workers, ctx.compile)
        self.runner = FoldRunner(self.spec, self.data, engine, reason, self.acc, Path(ctx.token_cache) if ctx.token_cache else None,
                                 ctx.compile)

    def hparams(self, params: dict) -> dict:
        return task_hparams(self.spec, self.ctx.fixed, params, self.ctx.protocol)

    def run(self, tasks: list[dict]) -> list[dict]:
        """Tasks (JSON: fold, number, params, role) → their outputs as JSON (``status`` ok, or
        failed with the reason), in task order."""
        outcomes = self.runner.run([FoldTask(self.folds[t["fold"]], self.hparams(t["params"]), self.ctx.seed) for t in tasks])
        return [outcome_to_json(t, o, self.data) for t, o in zip(tasks, outcomes)]

    def run_iter(self, tasks: list[dict]):
        """The same outputs as they finish: the batched tasks together, then each other task on
        its own, so a slice keeps every finished task on disk before the next one trains."""
        def batched(t: dict) -> bool:
            try:
                return self.runner.engine_for(self.hparams(t["params"]), self.ctx.seed)[0] == "batched"
            except EngineChoiceError:
                return False
        together = [t for t in tasks if batched(t)]
        if together:
            yield from self.run(together)
        for t in tasks:
            if t not in together:
                yield from self.run([t])


def outcome_to_json(task: dict, o: TaskOutcome, data: DatasetTensors) -> dict:
    base = {**task, "pid": os.getpid(), "hparams": o.task.hparams, "engine": o.engine, "engine_reason": o.engine_reason,
            "device": o.device}
    if not o.ok:
        return {**base, "status": "failed", "reason": o.output.reason}
    return {**base, "status": "ok", **fold_to_json(o.output, data)}


def fold_to_json(out: FoldOutput, data: DatasetTensors) -> dict:
    inner = out.inner
    return {"inner_f1": out.inner_f1, "epochs": out.epochs, "threshold": out.threshold.tolist(),
            "test_ids": [str(data.sample_id[i]) for i in out.test], "test_prob": out.prob.tolist(),
            "inner_val_ids": [str(data.sample_id[i]) for i in inner.val], "inner_epochs": inner.epochs,
            "inner_val_f1_per_epoch": [h["val_f1"] for h in out.history if "val_f1" in h],
            "inner_probs": inner.probs.tolist()}


def fold_from_json(d: dict, index_of: dict[str, int]) -> FoldOutput:
    """The test-side outputs of a stored task (what selection and records need)."""
    return FoldOutput(d["fold"], np.array([index_of[s] for s in d["test_ids"]], dtype=int), np.array(d["test_prob"], float),
                      np.array(d["threshold"], float), d["epochs"], d["inner_f1"])


def in_process_executor(data: DatasetTensors | None = None, on_gpu: bool = False):
    """An executor (``execute(slices, ctx, name) → {proposal: slice output}``) running every
    slice in this process, one after another, with the engine the run context asks for — the
    search without Ray: ``suite.bench --nested-search`` and tests. ``data``: the dataset to use
    instead of the context's cache (tests alter labels)."""
    runners: dict[str, TaskRunner] = {}  # per run context: data resident, features kept across slices

    def execute(slices, ctx: RunContext, name: str) -> dict[int, dict]:
        if ctx.process_key not in runners:
            runners[ctx.process_key] = TaskRunner(ctx, on_gpu, data=data)
        runner, out_dir = runners[ctx.process_key], Path(ctx.out_dir)
        out = {}
        for s in slices:
            if read_slice(out_dir, s.round, s.proposal) is None:
                write_slice(out_dir, s.round, s.proposal, runner.run([t.to_json() for t in s.tasks]), runner.aus, {"tune_trial": None})
            out[s.proposal] = read_slice(out_dir, s.round, s.proposal)
        return out
    return execute


def _pool_worker(inbox, outbox, threads: int | None, on_gpu: bool) -> None:
    """A ``process_pool_executor`` worker: its own ``in_process_executor`` (one ``TaskRunner``,
    kept across its slices) for the slices it takes from ``inbox`` until it gets None."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    execute = in_process_executor(on_gpu=on_gpu)
    for s, ctx, name in iter(inbox.get, None):
        try:
            outbox.put((s.proposal, execute([s], ctx, name)[s.proposal], None))
        except Exception as e:  # noqa: BLE001 — handed to the caller, as a pool would
            outbox.put((s.proposal, None, e))


def process_pool_executor(processes: int, on_gpu: bool):
    """An executor running a round's slices ``processes`` at a time, each worker process started
    as Ray starts a packed trial process: its own ``TaskRunner`` (data resident, kept across its
    slices) with its share of the GPU (``gpus_per_trial`` = 1/processes, so the same per-process
    memory fraction) or of the cores (threads). Trial packing measured where Ray is not installed
    (``suite.bench --trial-packing``); returns (execute, close)."""
    import multiprocessing

    threads = None if on_gpu else max(1, (os.cpu_count() or 1) // processes)
    mp = multiprocessing.get_context("spawn")
    inbox, outbox = mp.Queue(), mp.Queue()
    workers = [mp.Process(target=_pool_worker, args=(inbox, outbox, threads, on_gpu), daemon=True) for _ in range(processes)]
    for w in workers:
        w.start()

    def execute(slices, ctx: RunContext, name: str) -> dict[int, dict]:
        ctx = ctx.with_(gpus_per_trial=1 / processes if on_gpu else 0)
        for s in slices:
            inbox.put((s, ctx, name))
        out, error = {}, None
        for _ in slices:
            proposal, doc, e = outbox.get()
            out[proposal], error = doc, error or e
        if error is not None:
            raise error
        return {s.proposal: out[s.proposal] for s in slices}

    def close() -> None:
        for _ in workers:
            inbox.put(None)
        for w in workers:
            w.join()
    return execute, close


class FoldWorker:
    """Runs some of a slice's tasks in its own process (a Ray actor in one of the trial's
    placement-group bundles)."""

    def __init__(self, ctx: RunContext):
        import ray

        self.runner = TaskRunner(ctx, bool(ray.get_gpu_ids()))

    def run(self, task: dict) -> dict:
        return self.runner.run([task])[0]


def task_outputs(runner: TaskRunner, todo: list[dict], workers: int):
    """Yield task outputs as they finish; with ``workers`` > 1 tasks are dealt round-robin to
    this process and ``workers - 1`` actors in the trial's other placement-group bundles."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    local, remote = todo[::workers], [t for i, t in enumerate(todo) if i % workers]
    pending = []
    if remote:
        ctx = runner.ctx
        pg = ray.util.get_current_placement_group()
        actor_cls = ray.remote(num_cpus=ctx.cpus_per_trial, num_gpus=ctx.gpus_per_trial)(FoldWorker)
        actors = [actor_cls.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i + 1)).remote(ctx)
                  for i in range(min(workers - 1, len(remote)))]
        pending = [actors[i % len(actors)].run.remote(t) for i, t in enumerate(remote)]

    def finished_remote(block: bool) -> list[dict]:
        nonlocal pending
        done, pending = ray.wait(pending, num_returns=1 if block else len(pending), timeout=None if block else 0)
        return ray.get(done)

    for task in local:
        yield runner.run([task])[0]
        if pending:
            yield from finished_remote(block=False)
    while pending:
        yield from finished_remote(block=True)


def trial_resources(cpus: float, gpus: float, fold_workers: int):
    """Tune resources of one trial: one bundle per fold worker (the first is the trial process)."""
    from ray import tune

    if fold_workers <= 1:
        return {"cpu": cpus, "gpu": gpus}
    return tune.PlacementGroupFactory([{"CPU": cpus, **({"GPU": gpus} if gpus else {})}] * fold_workers, strategy="PACK")


KILL_AFTER = "SUITE_KILL_AFTER"  # tests: "<slice stem pattern>:<tasks>", e.g. "r001-*:3"


def _killed_here(partial: Path, tasks_written: int) -> None:
    """Fault injection for the resume tests: with ``$SUITE_KILL_AFTER`` naming this slice and
    count, the trial process kills itself with SIGKILL once (a marker beside the partial file),
    right after that many of the slice's tasks were written — a power loss between two task writes."""
    pattern, _, count = os.environ.get(KILL_AFTER, "").rpartition(":")
    marker = partial.with_suffix(".killed")
    if not pattern or count != str(tasks_written) or marker.exists():
        return
    import fnmatch
    import signal

    if not fnmatch.fnmatch(partial.stem, pattern):
        return

    marker.write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


def _node_ip() -> str | None:
    """This process's Ray node address; None outside Ray."""
    try:
        import ray
    except ImportError:
        return None
    return ray.util.get_node_ip_address() if ray.is_initialized() else None


def _task_key(t: dict) -> tuple:
    return t["fold"], t["number"], t["role"]


class SliceRun:
    """One slice of a round as a Tune trial runs it (``tune_rounds.SliceTrainable``), a finished
    task at a time: tasks done so far are kept in ``<out>/partial/`` (atomically), so a retried or
    resumed slice continues with the rest; once every task is done the slice is written
    (``suite.search.slices``) and the partial file removed."""

    def __init__(self, runner: TaskRunner, r: int, proposal: int, tasks: list[dict], node: str):
        self.runner, self.r, self.proposal, self.tasks, self.node = runner, r, proposal, tasks, node
        self.node_ip = _node_ip()  # which machine ran it (a cluster's node address)
        ctx = runner.ctx
        self.partial = partial_path(Path(ctx.out_dir), r, proposal)
        self.done: list[dict] = json.loads(self.partial.read_text()) if self.partial.exists() else []
        finished = {_task_key(t) for t in self.done}
        todo = [t for t in tasks if _task_key(t) not in finished]
        self.outputs = iter((task_outputs(runner, todo, ctx.fold_workers) if ctx.fold_workers > 1 else runner.run_iter(todo))
                            if todo else [])

    @property
    def complete(self) -> bool:
        return len(self.done) >= len(self.tasks)

    def step(self) -> bool:
        """Run until the next task finishes and keep it on disk; False when no task was left."""
        out = next(self.outputs, None)
        if out is None:
            return False
        self.done.append({**out, "node_id": self.node, "node_ip": self.node_ip})
        write_json(self.partial, self.done)
        _killed_here(self.partial, len(self.done))
        return True

    def progress(self) -> dict:
        ok = [t["inner_f1"] for t in self.done if t["status"] == "ok"]
        return {"tasks_done": len(self.done), "n_tasks": len(self.tasks), "inner_f1_mean": float(np.mean(ok)) if ok else float("nan")}

    def finish(self, tune_trial: str | None) -> None:
        order = {_task_key(t): i for i, t in enumerate(self.tasks)}
        self.done.sort(key=lambda t: order[_task_key(t)])
        write_slice(Path(self.runner.ctx.out_dir), self.r, self.proposal, self.done, self.runner.aus,
                    {"tune_trial": tune_trial, "node_id": self.node, "node_ip": self.node_ip})
        self.partial.unlink(missing_ok=True)
