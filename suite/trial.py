"""One search trial: a configuration evaluated with the nested protocol on one dataset.

For every outer fold: a model on inner-train scored on the inner-validation subjects (the Optuna
objective), and a model on the whole outer train predicting the test subject (kept for nested
selection, never reported as the objective). The trial reports after each fold and checkpoints
the folds done, so a restored trial continues at the next fold. Its outputs are written to
``<search dir>/trials/<trial id>.json`` (atomically) for selection after the search.

A plain function of its config (Ray Tune function API); importing it needs no Ray at module level
so the engine path stays usable without Ray.
"""
from __future__ import annotations

import json
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
            "sample_ids": [str(data.sample_id[i]) for i in out.test], "prob": out.prob.tolist()}


def fold_from_json(d: dict, index_of: dict[str, int]) -> FoldOutput:
    return FoldOutput(d["fold"], np.array([index_of[s] for s in d["sample_ids"]], dtype=int), np.array(d["prob"], float),
                      np.array(d["threshold"], float), d["epochs"], d["inner_f1"])


def hyperparameters(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != CONTEXT_KEY}


def run_trial(config: dict) -> None:
    """Ray Tune trainable."""
    import ray
    import torch
    from ray import tune

    ctx = config[CONTEXT_KEY]
    gpu_ids = ray.get_gpu_ids()
    if gpu_ids and ctx["gpus_per_trial"] < 1:
        torch.cuda.set_per_process_memory_fraction(ctx["gpus_per_trial"])
    acc = get_accelerator(cpu=not gpu_ids)  # trials without GPUs never touch one
    spec = get_method(ctx["method"])
    hp = resolve_hparams(spec, {**ctx["fixed"], **hyperparameters(config), "selection": "inner"})
    aus = DATASET_AUS[ctx["dataset"]]
    arrays, _ = load_cache(Path(ctx["cache"]))
    data = DatasetTensors.from_cache(arrays, aus, acc.device, ctx["fingerprint"])
    folds = loso_folds(data.subject, hp["inner_val_fraction"], ctx["seed"])
    done: list[dict] = []
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            done = json.loads((Path(d) / "folds.json").read_text())
    engine = Engine(spec, hp, data, aus, ctx["seed"], acc, feature_cache=Path(ctx["token_cache"]))
    trial_id = tune.get_context().get_trial_id()
    node = ray.get_runtime_context().get_node_id()
    for fold in folds[len(done):]:
        done.append(fold_to_json(engine.run_fold(fold, "inner"), data))
        metrics = {"inner_f1": float(np.mean([f["inner_f1"] for f in done])), "folds_done": len(done),
                   "n_folds": len(folds), "node_id": node}
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "folds.json").write_text(json.dumps(done))
            if len(done) == len(folds):  # the outputs selection reads, complete or absent
                write_json(Path(ctx["trials_dir"]) / f"{trial_id}.json",
                           {"trial_id": trial_id, "params": hyperparameters(config), "hparams": hp, "node_id": node,
                            "device": device_name(acc.device),
                            "dataset": ctx["dataset"], "fingerprint": ctx["fingerprint"], "folds": done})
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
