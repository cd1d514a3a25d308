"""One search trial: a configuration evaluated with the nested protocol on one dataset.

For every outer fold: a model on inner-train scored on the inner-validation subjects (the Optuna
objective), and a model on the whole outer train predicting the test subject (kept for nested
selection, never reported as the objective). The trial reports after each fold and checkpoints
the folds done, so a restored trial continues with the folds not yet done. With ``fold_workers``
> 1 the trial holds one placement-group bundle per worker and runs its folds concurrently in
Ray actors there (``fold_outputs``). Its outputs are written to
``<search dir>/trials/<trial id>.json`` (atomically) for selection after the search.

A plain function of its config (Ray Tune function API); importing it needs no Ray at module level
so the engine path stays usable without Ray.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .aus import DATASET_AUS
from .data import load_cache
from .engine import DatasetTensors, Engine, FoldOutput, get_accelerator
from .protocol import loso_folds
from .registry import get_method, resolve_hparams
from .results import write_json
from .train import device_name

CONTEXT_KEY = "_run"  # config entry holding the run context (not a hyper-parameter)


def fold_to_json(out: FoldOutput, data: DatasetTensors) -> dict:
    return {"fold": out.fold, "inner_f1": out.inner_f1, "epochs": out.epochs, "threshold": out.threshold.tolist(),
            "sample_ids": [str(data.sample_id[i]) for i in out.test], "prob": out.prob.tolist(),
            "pid": os.getpid()}  # which worker process ran the fold


def fold_from_json(d: dict, index_of: dict[str, int]) -> FoldOutput:
    return FoldOutput(d["fold"], np.array([index_of[s] for s in d["sample_ids"]], dtype=int), np.array(d["prob"], float),
                      np.array(d["threshold"], float), d["epochs"], d["inner_f1"])


def hyperparameters(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != CONTEXT_KEY}


def build_engine(ctx: dict, config: dict, on_gpu: bool) -> tuple[Engine, DatasetTensors, list]:
    """The trial's engine (data resident on its device, model built once) and its LOSO folds."""
    import torch

    if on_gpu and ctx["gpus_per_trial"] < 1:
        torch.cuda.set_per_process_memory_fraction(ctx["gpus_per_trial"])
    acc = get_accelerator(cpu=not on_gpu)  # trials without GPUs never touch one
    spec = get_method(ctx["method"])
    hp = resolve_hparams(spec, {**ctx["fixed"], **hyperparameters(config), "selection": "inner"})
    aus = DATASET_AUS[ctx["dataset"]]
    data = DatasetTensors.from_cache(load_cache(Path(ctx["cache"]))[0], aus, acc.device, ctx["fingerprint"])
    folds = loso_folds(data.subject, hp["inner_val_fraction"], ctx["seed"])
    engine = Engine(spec, hp, data, aus, ctx["seed"], acc, feature_cache=Path(ctx["token_cache"]), compile=ctx["compile"])
    return engine, data, folds


class FoldWorker:
    """Runs some of a trial's folds in its own process (a Ray actor in one of the trial's
    placement-group bundles), with its own engine built once from the same seed — so its fold
    outputs equal those the trial process would compute."""

    def __init__(self, config: dict):
        import ray

        self.engine, self.data, folds = build_engine(config[CONTEXT_KEY], config, bool(ray.get_gpu_ids()))
        self.folds = {f.index: f for f in folds}

    def run_fold(self, index: int) -> dict:
        return fold_to_json(self.engine.run_fold(self.folds[index], "inner"), self.data)


def fold_outputs(engine: Engine, data: DatasetTensors, todo: list, config: dict, workers: int):
    """Yield the fold outputs (as JSON) of ``todo`` as they finish. With ``workers`` > 1 the folds
    are dealt round-robin to this process and ``workers - 1`` actors in the trial's other
    placement-group bundles; finished remote folds are collected between local ones."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    local, remote = todo[::workers], [f for i, f in enumerate(todo) if i % workers]
    pending = []
    if remote:
        ctx = config[CONTEXT_KEY]
        pg = ray.util.get_current_placement_group()
        actor_cls = ray.remote(num_cpus=ctx["cpus_per_trial"], num_gpus=ctx["gpus_per_trial"])(FoldWorker)
        actors = [actor_cls.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i + 1)).remote(config)
                  for i in range(min(workers - 1, len(remote)))]
        pending = [actors[i % len(actors)].run_fold.remote(f.index) for i, f in enumerate(remote)]

    def finished_remote(block: bool) -> list[dict]:
        """Finished remote folds: whatever is done now, or (``block``) at least one."""
        nonlocal pending
        done, pending = ray.wait(pending, num_returns=1 if block else len(pending), timeout=None if block else 0)
        return ray.get(done)

    for fold in local:
        yield fold_to_json(engine.run_fold(fold, "inner"), data)
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


def run_trial(config: dict) -> None:
    """Ray Tune trainable."""
    import ray
    from ray import tune

    ctx = config[CONTEXT_KEY]
    engine, data, folds = build_engine(ctx, config, bool(ray.get_gpu_ids()))
    done: list[dict] = []
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            done = json.loads((Path(d) / "folds.json").read_text())
    finished = {f["fold"] for f in done}
    trial_id = tune.get_context().get_trial_id()
    node = ray.get_runtime_context().get_node_id()
    todo = [f for f in folds if f.index not in finished]
    for out in fold_outputs(engine, data, todo, config, ctx["fold_workers"]):
        done.append(out)
        done.sort(key=lambda f: f["fold"])
        metrics = {"inner_f1": float(np.mean([f["inner_f1"] for f in done])), "folds_done": len(done),
                   "n_folds": len(folds), "node_id": node}
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "folds.json").write_text(json.dumps(done))
            if len(done) == len(folds):  # the outputs selection reads, complete or absent
                write_json(Path(ctx["trials_dir"]) / f"{trial_id}.json",
                           {"trial_id": trial_id, "params": hyperparameters(config), "hparams": engine.hp, "node_id": node,
                            "device": device_name(engine.device),
                            "dataset": ctx["dataset"], "fingerprint": ctx["fingerprint"], "folds": done})
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
