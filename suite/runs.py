"""Training runs outside a search: one method with fixed hyper-parameters over every LOSO fold
(``suite.train``, baselines), or a search's chosen configurations — one per fold — re-run with
other seeds (final seeds). Each run writes one record and its predictions (``suite.results``)."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .aus import DATASET_AUS
from .batched import BatchedTrainer, choose_engine, run_folds_batched
from .data import load_cache, prepare
from .engine import DatasetTensors, Engine, FoldOutput, device_name, get_accelerator
from .paths import results_dir, token_cache_dir
from .protocol import loso_folds
from .registry import get_method, resolve_hparams
from .results import config_id, predictions_frame, write_run


def load_dataset(dataset: str, data_root: Path | None, results: Path | None, image_size: int, flow: bool, log=None):
    """(cache, DatasetTensors resident on this process's accelerator device)."""
    cache = prepare(dataset, data_root, results, image_size=image_size, flow=flow)
    if log:
        log(f"data: {dataset} {'(synthetic default)' if data_root is None else data_root} — cache {'hit' if cache.hit else 'built'}: {cache.path}")
    data = DatasetTensors.from_cache(load_cache(cache.path)[0], DATASET_AUS[dataset], get_accelerator().device, cache.fingerprint)
    return cache, data


def evaluate_folds(method: str, hparams_of_fold: Callable[[int], dict], data: DatasetTensors, seed: int, results: Path | None,
                   compile: str | None = None, engine: str = "auto") -> tuple[list[FoldOutput], str]:
    """Every LOSO fold (inner-validation split from ``seed``) with the hyper-parameters
    ``hparams_of_fold(fold index)``; (outputs, the engine that ran them). Sequential: one engine
    per distinct configuration, built from ``seed``. Batched (``suite.batched``): every fold's
    models as one batched model, when the configuration allows (``auto``), or as asked."""
    spec, acc = get_method(method), get_accelerator()
    engines: dict[str, Engine] = {}
    folds = loso_folds(data.subject, hparams_of_fold(0)["inner_val_fraction"], seed)

    def engine_of(hp: dict) -> Engine:
        key = json.dumps(hp, sort_keys=True, default=str)
        if key not in engines:
            engines[key] = Engine(spec, hp, data, data.aus, seed, acc, feature_cache=token_cache_dir(results), compile=compile)
        return engines[key]

    first = hparams_of_fold(folds[0].index)
    ok, why = engine_of(first).batchable
    if first["selection"] != "inner":
        ok, why = False, "selection=fixed runs on the sequential engine"
    used = "sequential" if compile and engine == "auto" else choose_engine(engine, method, ok, why)
    if used == "sequential":
        return [engine_of(hparams_of_fold(f.index)).run_fold(f) for f in folds], "sequential"
    trainer = BatchedTrainer(spec, data, seed, engine_of(first).features)
    outputs = run_folds_batched(trainer, [(f, hparams_of_fold(f.index)) for f in folds])
    for fold, out in zip(folds, outputs):
        if isinstance(out, str):
            raise FloatingPointError(f"fold {fold.index}: {out}")
    return outputs, "batched"


def run(method: str, dataset: str, data_root: Path | None = None, overrides: dict | None = None, seeds: int | list[int] = 1,
        out: Path | None = None, results: Path | None = None, log=print, compile: str | None = None,
        extra: dict | None = None, engine: str = "auto") -> list[Path]:
    """Train ``method`` with each seed (a count N means seeds 0..N-1); return the record paths.
    ``compile``: a ``torch.compile`` backend (e.g. ``inductor``) for long runs; None runs eagerly.
    ``engine``: auto | batched | sequential (``evaluate_folds``)."""
    spec = get_method(method)
    hp = resolve_hparams(spec, overrides)
    cache, data = load_dataset(dataset, data_root, results, hp.get("image_size", 112), spec.needs_flow, log)
    out_dir = Path(out) if out else results_dir(results) / "runs"
    cid = config_id(method, dataset, hp, cache.fingerprint)
    paths = []
    for seed in (range(seeds) if isinstance(seeds, int) else seeds):
        start = time.time()
        outputs, used = evaluate_folds(method, lambda _: hp, data, seed, results, compile, engine)
        if log:
            log(f"{method} seed {seed}: {used} engine ({len(outputs)} folds)")
        selection = "fixed_epochs" if hp["selection"] == "fixed" else "inner_validation"
        record_extra = {
            "inner_f1": float(np.mean([o.inner_f1 for o in outputs])) if hp["selection"] == "inner" else None,
            "data_root": str(data_root) if data_root else "synthetic:seed0-small", "compile": compile, "engine": used,
            **(extra or {}),
        }
        paths.append(write_run(out_dir / dataset / method / cid / f"seed{seed}", predictions_frame(data, outputs, data.aus),
                               method=method, dataset=dataset, aus=data.aus, hparams=hp, seed=seed, selection=selection,
                               fingerprint=cache.fingerprint, device=device_name(data.device),
                               duration_s=time.time() - start, extra=record_extra))
    return paths


def run_chosen(method: str, dataset: str, data_root: Path | None, hparams_by_fold: dict[int, dict], seed: int, stem: Path,
               selection: str, results: Path | None, compile: str | None = None, extra: dict | None = None,
               engine: str = "auto") -> Path:
    """A search's per-fold choices (``hparams_by_fold``: fold index → resolved hyper-parameters)
    re-run with ``seed``; the choices stay fixed, epochs and thresholds are re-chosen on each
    fold's inner-validation subjects as in the search."""
    spec = get_method(method)
    first = hparams_by_fold[min(hparams_by_fold)]
    cache, data = load_dataset(dataset, data_root, results, first.get("image_size", 112), spec.needs_flow)
    start = time.time()
    outputs, used = evaluate_folds(method, lambda k: hparams_by_fold[k], data, seed, results, compile, engine)
    distinct = {json.dumps(h, sort_keys=True, default=str) for h in hparams_by_fold.values()}
    return write_run(stem, predictions_frame(data, outputs, data.aus), method=method, dataset=dataset, aus=data.aus,
                     hparams=first if len(distinct) == 1 else {"per_fold": {str(k): h for k, h in hparams_by_fold.items()}},
                     seed=seed, selection=selection, fingerprint=cache.fingerprint, device=device_name(data.device),
                     duration_s=time.time() - start, extra={"compile": compile, "engine": used, **(extra or {})})
