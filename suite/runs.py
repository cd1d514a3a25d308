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
                   compile: str | None = None) -> list[FoldOutput]:
    """Every LOSO fold (inner-validation split from ``seed``) with the hyper-parameters
    ``hparams_of_fold(fold index)``; one engine per distinct configuration, built from ``seed``."""
    spec, acc = get_method(method), get_accelerator()
    aus = data.aus
    engines: dict[str, Engine] = {}
    outputs = []
    folds = loso_folds(data.subject, hparams_of_fold(0)["inner_val_fraction"], seed)
    for fold in folds:
        hp = hparams_of_fold(fold.index)
        key = json.dumps(hp, sort_keys=True, default=str)
        if key not in engines:
            engines[key] = Engine(spec, hp, data, aus, seed, acc, feature_cache=token_cache_dir(results), compile=compile)
        outputs.append(engines[key].run_fold(fold))
    return outputs


def run(method: str, dataset: str, data_root: Path | None = None, overrides: dict | None = None, seeds: int | list[int] = 1,
        out: Path | None = None, results: Path | None = None, log=print, compile: str | None = None,
        extra: dict | None = None) -> list[Path]:
    """Train ``method`` with each seed (a count N means seeds 0..N-1); return the record paths.
    ``compile``: a ``torch.compile`` backend (e.g. ``inductor``) for long runs; None runs eagerly."""
    spec = get_method(method)
    hp = resolve_hparams(spec, overrides)
    cache, data = load_dataset(dataset, data_root, results, hp.get("image_size", 112), spec.needs_flow, log)
    out_dir = Path(out) if out else results_dir(results) / "runs"
    cid = config_id(method, dataset, hp, cache.fingerprint)
    paths = []
    for seed in (range(seeds) if isinstance(seeds, int) else seeds):
        start = time.time()
        outputs = evaluate_folds(method, lambda _: hp, data, seed, results, compile)
        selection = "fixed_epochs" if hp["selection"] == "fixed" else "inner_validation"
        record_extra = {
            "inner_f1": float(np.mean([o.inner_f1 for o in outputs])) if hp["selection"] == "inner" else None,
            "data_root": str(data_root) if data_root else "synthetic:seed0-small", "compile": compile, **(extra or {}),
        }
        paths.append(write_run(out_dir / dataset / method / cid / f"seed{seed}", predictions_frame(data, outputs, data.aus),
                               method=method, dataset=dataset, aus=data.aus, hparams=hp, seed=seed, selection=selection,
                               fingerprint=cache.fingerprint, device=device_name(data.device),
                               duration_s=time.time() - start, extra=record_extra))
    return paths


def run_chosen(method: str, dataset: str, data_root: Path | None, hparams_by_fold: dict[int, dict], seed: int, stem: Path,
               selection: str, results: Path | None, compile: str | None = None, extra: dict | None = None) -> Path:
    """A search's per-fold choices (``hparams_by_fold``: fold index → resolved hyper-parameters)
    re-run with ``seed``; the choices stay fixed, epochs and thresholds are re-chosen on each
    fold's inner-validation subjects as in the search."""
    spec = get_method(method)
    first = hparams_by_fold[min(hparams_by_fold)]
    cache, data = load_dataset(dataset, data_root, results, first.get("image_size", 112), spec.needs_flow)
    start = time.time()
    outputs = evaluate_folds(method, lambda k: hparams_by_fold[k], data, seed, results, compile)
    distinct = {json.dumps(h, sort_keys=True, default=str) for h in hparams_by_fold.values()}
    return write_run(stem, predictions_frame(data, outputs, data.aus), method=method, dataset=dataset, aus=data.aus,
                     hparams=first if len(distinct) == 1 else {"per_fold": {str(k): h for k, h in hparams_by_fold.items()}},
                     seed=seed, selection=selection, fingerprint=cache.fingerprint, device=device_name(data.device),
                     duration_s=time.time() - start, extra={"compile": compile, **(extra or {})})
