"""Training runs outside a search: one method with fixed hyper-parameters over every outer fold of
an evaluation (``suite.train``, baselines; ``suite.evaluation``: a release under LOSO, a transfer,
a composite), or a search's chosen configurations — one per fold — re-run with other seeds (final
seeds). Each run writes one record and its predictions (``suite.results``)."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .data import ReaderOptions, prepare, release_roots
from .engine import DatasetTensors, FoldOutput, device_name, get_accelerator
from .evaluation import Evaluation, evaluation_of, load_tensors
from .folds import FoldRunner, FoldTask, engine_label, engine_request, raise_failures
from .paths import results_dir, token_cache_dir
from .protocol import Protocol
from .registry import get_method, needs_flow, resolve_hparams
from .results import config_id, predictions_frame, write_run


def load_dataset(dataset: str, data_root, results: Path | None, image_size: int, flow: bool, log=None,
                 reader: ReaderOptions = ReaderOptions()) -> tuple[Evaluation, dict, DatasetTensors]:
    """(the evaluation ``dataset`` names, its releases' caches, its data resident on this
    process's accelerator device); each release read as ``reader`` says. ``data_root``: a release
    folder, a folder of release folders, ``casme2=PATH,…`` or a mapping (``release_roots``); None:
    the synthetic default."""
    evaluation = evaluation_of(dataset)
    reader.check(evaluation.releases)
    roots = release_roots(evaluation.releases, data_root)
    caches = {}
    for release, root in roots.items():
        cache = caches[release] = prepare(release, root, results, image_size=image_size, flow=flow, reader=reader)
        if log:
            log(f"data: {release} {'(synthetic default)' if root is None else root} — cache {'hit' if cache.hit else 'built'}: {cache.path}")
            if cache.findings_note:
                log(cache.findings_note)
    data = load_tensors(evaluation, {r: (c.path, c.fingerprint) for r, c in caches.items()}, get_accelerator().device)
    return evaluation, caches, data


def evaluate_folds(method: str, evaluation: Evaluation, hparams_of_fold: Callable[[int], dict], data: DatasetTensors, seeds: list[int],
                   results: Path | None, compile: str | None = None, engine: str = "auto") -> tuple[dict[int, list[FoldOutput]], str, str]:
    """Every outer fold of ``evaluation`` (inner-validation split from each seed) with the resolved hyper-parameters
    ``hparams_of_fold(fold index)`` — each fold its own, features included, all under one protocol
    (``Protocol``: the splits follow it) —, for every seed, through the fold protocol
    (``suite.folds``); ({seed: outputs}, the engine(s) that ran them, why).
    A failed task is an error naming seed and fold: a run's record needs every fold."""
    request, reason = engine_request(engine, compile=compile)
    runner = FoldRunner(get_method(method), data, request, reason, feature_cache=token_cache_dir(results), compile=compile)
    protocol = Protocol.of(hparams_of_fold(0))
    folds = {seed: evaluation.folds(data.subject, protocol, seed) for seed in seeds}
    tasks = [FoldTask(f, hparams_of_fold(f.index), seed) for seed in seeds for f in folds[seed]]
    other = sorted({t.fold.index for t in tasks if Protocol.of(t.hparams) != protocol})
    if other:
        raise ValueError(f"{method}: fold(s) {other} carry another protocol than fold 0 ({protocol}): one run, one protocol")
    outcomes = runner.run(tasks)
    raise_failures(outcomes, method)
    by_seed: dict[int, list[FoldOutput]] = {seed: [] for seed in seeds}
    for o in outcomes:
        by_seed[o.task.seed].append(o.output)
    engines = sorted({o.engine for o in outcomes})
    return by_seed, ", ".join(engines), "; ".join(sorted({o.engine_reason for o in outcomes if o.engine_reason}))


def run(method: str, dataset: str, data_root=None, overrides: dict | None = None, seeds: int | list[int] = 1,
        out: Path | None = None, results: Path | None = None, log=print, compile: str | None = None,
        extra: dict | None = None, engine: str = "auto", reader: ReaderOptions = ReaderOptions(),
        copied_from: str | None = None, protocol: Protocol | None = None) -> list[Path]:
    """Train ``method`` with each seed (a count N means seeds 0..N-1); return the record paths.
    ``protocol``: how the run is evaluated and chooses (default ``Protocol()``: fixed epochs);
    protocol keys among ``overrides`` (``--set selection=inner``) change it.
    ``copied_from``: the search whose deployment configuration ``overrides`` holds — the records
    are labelled ``deployment_copy`` (chosen on all subjects), never an independent configuration.
    ``compile``: a ``torch.compile`` backend (e.g. ``inductor``) for long runs; None runs eagerly.
    ``engine``: auto | batched | sequential (``evaluate_folds``). ``reader``: how the release is read."""
    spec = get_method(method)
    hp = resolve_hparams(spec, overrides, protocol)
    evaluation, caches, data = load_dataset(dataset, data_root, results, hp.get("image_size", 112), needs_flow(spec, hp), log, reader)
    out_dir = Path(out) if out else results_dir(results) / "runs"
    cid = config_id(method, dataset, hp, data.fingerprint, engine_label(engine, compile=compile))
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    start = time.time()
    by_seed, used, reason = evaluate_folds(method, evaluation, lambda _: hp, data, seeds, results, compile, engine)
    if log:
        log(f"{method}: {used} engine{f' ({reason})' if reason else ''}, seeds {seeds}, {len(by_seed[seeds[0]])} folds")
    seconds = (time.time() - start) / len(seeds)  # seeds ran together: each record gets an equal share
    paths = []
    for seed in seeds:
        outputs = by_seed[seed]
        selection = "deployment_copy" if copied_from else "fixed_epochs" if hp["selection"] == "fixed" else "inner_validation"
        record_extra = {
            "inner_f1": float(np.mean([o.inner_f1 for o in outputs])) if hp["selection"] == "inner" else None,
            "compile": compile, "engine": used, "engine_reason": reason,
            **({"from_search": copied_from} if copied_from else {}), **(extra or {}),
        }
        paths.append(write_run(out_dir / dataset / method / cid / f"seed{seed}", predictions_frame(data, outputs, data.aus),
                               method=method, dataset=dataset, aus=data.aus, hparams=hp, seed=seed, selection=selection,
                               cache_path=[c.path for c in caches.values()], device=device_name(data.device),
                               duration_s=seconds, extra=record_extra))
    return paths


def run_chosen(method: str, dataset: str, data_root, hparams_by_fold: dict[int, dict], seeds: list[int],
               stems: list[Path], selection: str, results: Path | None, compile: str | None = None, extra: dict | None = None,
               engine: str = "auto", reader: ReaderOptions = ReaderOptions()) -> list[Path]:
    """A search's per-fold choices (``hparams_by_fold``: fold index → resolved hyper-parameters)
    re-run with each of ``seeds`` (records at ``stems``); the choices stay fixed, epochs and
    thresholds are re-chosen on each fold's inner-validation subjects as in the search."""
    spec = get_method(method)
    first = hparams_by_fold[min(hparams_by_fold)]
    evaluation, caches, data = load_dataset(dataset, data_root, results, first.get("image_size", 112), needs_flow(spec, first), reader=reader)
    start = time.time()
    by_seed, used, reason = evaluate_folds(method, evaluation, lambda k: hparams_by_fold[k], data, seeds, results, compile, engine)
    seconds = (time.time() - start) / len(seeds)
    distinct = {json.dumps(h, sort_keys=True, default=str) for h in hparams_by_fold.values()}
    hparams = first if len(distinct) == 1 else {"per_fold": {str(k): h for k, h in hparams_by_fold.items()}}
    return [write_run(stem, predictions_frame(data, by_seed[seed], data.aus), method=method, dataset=dataset, aus=data.aus,
                      hparams=hparams, seed=seed, selection=selection, cache_path=[c.path for c in caches.values()],
                      device=device_name(data.device),
                      duration_s=seconds, extra={"compile": compile, "engine": used, "engine_reason": reason, **(extra or {})})
            for seed, stem in zip(seeds, stems)]
