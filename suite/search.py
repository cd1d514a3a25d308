"""``python -m suite.search``: Ray Tune runs the trials, OptunaSearch proposes them, nested
selection scores the result without ever choosing on a test subject.

    python -m suite.search --space gsd [--datasets casme2,samm] [--data-root DIR] [--trials N]
        [--concurrency C] [--cpus-per-trial X] [--gpus-per-trial F] [--sampler tpe|gp|cmaes|random]
        [--address auto|HOST:PORT] [--name NAME] [--final-seeds 3]

Rerunning the same command resumes an interrupted search (Ray experiment + Optuna journal).
Everything is written under the results folder: ``ray/`` (Tune state), ``searches/<name>/``
(Optuna journal, trial outputs, nested and test-selected records, summary), ``runs/`` (final
seeds and baselines, as ``suite.train`` writes them).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from .aus import DATASET_AUS
from .data import DATASETS, RELEASE_FOLDER, DataError, load_cache, prepare
from .engine import DatasetTensors
from .nested import TrialOutputs, best_by_inner, best_on_test_folds, nested_choice
from .paths import results_dir, token_cache_dir
from .registry import get_method, resolve_hparams
from .results import load_record, predictions_frame, write_json, write_run
from .spaces import SearchSpace, SpaceError, load_space
from .trial import CONTEXT_KEY, fold_from_json, run_trial
from . import train

SAMPLERS = ("tpe", "gp", "cmaes", "random")
DEFAULT_BASELINES = ("constant", "prior", "clip_global")
MAX_FAILURES = 2  # retries of a failing trial before it is recorded as failed


class SearchError(Exception):
    """A problem found before any work starts."""


def make_sampler(name: str, seed: int):
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise SearchError(f"unknown sampler {name!r}; choose one of {SAMPLERS}")


def data_roots(datasets: list[str], data_root: str | None) -> dict[str, Path | None]:
    """``--data-root``: one release folder (one dataset), a folder holding CASME2/ and SAMM/, or
    ``casme2=PATH,samm=PATH``. None → the synthetic default."""
    if not data_root:
        return {d: None for d in datasets}
    if "=" in data_root:
        pairs = dict(item.split("=", 1) for item in data_root.split(","))
        missing = [d for d in datasets if d not in pairs]
        if missing:
            raise SearchError(f"--data-root names no folder for {missing}")
        return {d: Path(pairs[d]) for d in datasets}
    root = Path(data_root)
    if all((root / RELEASE_FOLDER[d]).is_dir() for d in datasets):
        return {d: root / RELEASE_FOLDER[d] for d in datasets}
    if len(datasets) == 1:
        return {datasets[0]: root}
    raise SearchError(f"--data-root {root}: expected subfolders {[RELEASE_FOLDER[d] for d in datasets]} or casme2=PATH,samm=PATH")


def check_resources(cpus: float, gpus: float) -> dict:
    import ray

    total = ray.cluster_resources()
    if cpus > total.get("CPU", 0):
        raise SearchError(f"--cpus-per-trial {cpus} does not fit: the Ray cluster has {total.get('CPU', 0)} CPUs")
    if gpus > total.get("GPU", 0):
        raise SearchError(f"--gpus-per-trial {gpus} does not fit: the Ray cluster has {total.get('GPU', 0)} GPUs")
    return total


def run_tune(space: SearchSpace, dataset: str, ctx: dict, args, results: Path, search_dir: Path):
    """Start or resume the Tune experiment for one dataset; returns its ResultGrid."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from ray import tune

    from .searcher import ResumableOptunaSearch

    exp_name = f"{args.name}-{dataset}"
    storage_path = results / "ray"
    trainable = tune.with_resources(run_trial, {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})
    exp_path = storage_path / exp_name
    if tune.Tuner.can_restore(str(exp_path)):
        print(f"[{dataset}] resuming {exp_path}")
        tuner = tune.Tuner.restore(str(exp_path), trainable, resume_errored=True)
    else:
        searcher = ResumableOptunaSearch(
            space=space.suggest, metric="inner_f1", mode="max", sampler=make_sampler(args.sampler, args.seed),
            study_name=exp_name, storage=JournalStorage(JournalFileBackend(str(search_dir / "optuna.journal"))),
        )
        tuner = tune.Tuner(
            trainable,
            param_space={CONTEXT_KEY: ctx},
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=args.trials, max_concurrent_trials=args.concurrency,
                                        reuse_actors=False),
            # Checkpoints are a few KB of fold outputs: keep them all (num_to_keep would force an
            # experiment snapshot after every fold report).
            run_config=tune.RunConfig(name=exp_name, storage_path=str(storage_path), verbose=1,
                                      failure_config=tune.FailureConfig(max_failures=MAX_FAILURES)),
        )
    return tuner.fit()


def collect(grid, trials_dir: Path, data: DatasetTensors) -> tuple[list[TrialOutputs], list[dict]]:
    index_of = {str(s): i for i, s in enumerate(data.sample_id)}
    done, failed = [], []
    for result in grid:
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
        if result.error is not None:
            failed.append({"trial": trial_id, "config": {k: v for k, v in result.config.items() if k != CONTEXT_KEY},
                           "reason": str(result.error).strip().splitlines()[-1][:500]})
            continue
        path = trials_dir / f"{trial_id}.json"
        if not path.exists():
            failed.append({"trial": trial_id, "config": {}, "reason": "finished without fold outputs"})
            continue
        doc = json.loads(path.read_text())
        folds = {f["fold"]: fold_from_json(f, index_of) for f in doc["folds"]}
        done.append(TrialOutputs(trial_id, doc["params"], doc["hparams"], folds))
    done.sort(key=lambda t: t.trial_id)
    return done, failed


def summarise_dataset(space: SearchSpace, dataset: str, root, cache, trials: list[TrialOutputs], failed: list[dict],
                      args, results: Path, search_dir: Path, tune_seconds: float) -> dict:
    aus = DATASET_AUS[dataset]
    arrays, _ = load_cache(cache.path)
    import torch

    data = DatasetTensors.from_cache(arrays, aus, torch.device("cpu"))
    out = search_dir / dataset
    devices = sorted({json.loads(p.read_text()).get("device", "?") for p in (out / "trials").glob("*.json")})
    common = {"method": space.method, "dataset": dataset, "aus": aus, "seed": args.seed, "fingerprint": cache.fingerprint,
              "device": ", ".join(devices), "duration_s": tune_seconds}
    extra = {"search": args.name, "space": space.name, "n_trials": len(trials), "n_failed": len(failed),
             "command": "python -m suite.search " + " ".join(sys.argv[1:])}
    choice = nested_choice(trials)
    nested_path = write_run(out / "nested", predictions_frame(data, [choice[f].folds[f] for f in sorted(choice)], aus),
                            hparams={"per_fold": {str(f): t.params for f, t in choice.items()}}, selection="nested",
                            extra={**extra, "chosen_trials": {str(f): t.trial_id for f, t in choice.items()}}, **common)
    best_test, _ = best_on_test_folds(trials, data.labels, data.au_known)
    test_path = write_run(out / "selected_on_test_folds", predictions_frame(data, list(best_test.folds.values()), aus),
                          hparams=best_test.hparams, selection="selected_on_test_folds",
                          extra={**extra, "chosen_trials": best_test.trial_id}, **common)
    best = best_by_inner(trials)
    found, missing = existing_baselines(dataset, cache.fingerprint, args.baselines, results)
    jobs = [(space.method, best.hparams, seed) for seed in range(args.final_seeds)] + [(name, None, 0) for name in missing]
    paths = run_on_cluster(jobs, dataset, root, results, args)
    final = paths[:args.final_seeds]
    baselines = {**found, **{name: str(path) for name, path in zip(missing, paths[args.final_seeds:])}}
    nested, on_test = load_record(nested_path), load_record(test_path)
    finals = [load_record(p)["f1_avg"] for p in final]
    return {
        "dataset": dataset, "trials_finished": len(trials), "trials_failed": failed,
        "nested_f1": nested["f1_avg"], "selected_on_test_folds_f1": on_test["f1_avg"],
        "best_inner_trial": best.trial_id, "best_inner_f1": best.mean_inner_f1, "best_params": best.params,
        "final_seeds_f1": finals, "final_seeds_mean": float(np.mean(finals)) if finals else None,
        "final_seeds_std": float(np.std(finals)) if finals else None,
        "records": {"nested": str(nested_path), "selected_on_test_folds": str(test_path), "final": [str(p) for p in final], **baselines},
    }


def _train_task(method: str, dataset: str, root, overrides: dict | None, seed: int, results: Path, gpu_fraction: float) -> str:
    """One ``suite.train`` run inside a Ray task (final seeds, baselines): on a cluster these run
    on the workers, with the trials' resources, not on the head."""
    import ray
    import torch

    from .engine import get_accelerator

    if ray.get_gpu_ids() and gpu_fraction < 1:
        torch.cuda.set_per_process_memory_fraction(gpu_fraction)
    get_accelerator(cpu=not ray.get_gpu_ids())
    return str(train.run(method, dataset, root, overrides, [seed], results=results, log=lambda *_: None)[0])


def run_on_cluster(jobs: list[tuple[str, dict | None, int]], dataset: str, root, results: Path, args) -> list[Path]:
    """Run (method, overrides, seed) trainings as parallel Ray tasks; return record paths in order."""
    import ray

    task = ray.remote(num_cpus=args.cpus_per_trial, num_gpus=args.gpus_per_trial)(_train_task)
    futures = [task.remote(m, dataset, root, o, s, results, args.gpus_per_trial) for m, o, s in jobs]
    return [Path(p) for p in ray.get(futures)]


def existing_baselines(dataset: str, fingerprint: str, names: list[str], results: Path) -> tuple[dict, list[str]]:
    """Baseline records already measured on the same data (by fingerprint), and the names missing."""
    found, missing = {}, []
    for name in names:
        existing = [p for p in sorted((results / "runs" / dataset / name).glob("*/seed*.json"))
                    if json.loads(p.read_text()).get("data_fingerprint") == fingerprint]
        if existing:
            found[name] = str(existing[0])
        else:
            missing.append(name)
    return found, missing


def format_summary(summary: dict) -> str:
    lines = [f"search {summary['name']} (space {summary['space']}, {summary['wall_s']:.0f} s)"]
    for d in summary["datasets"]:
        lines.append(f"  {d['dataset']}: {d['trials_finished']} trials finished, {len(d['trials_failed'])} failed")
        lines.append(f"    nested F1 (headline, unbiased)       {d['nested_f1']:.3f}")
        lines.append(f"    selected on test folds (optimistic)  {d['selected_on_test_folds_f1']:.3f}")
        if d["final_seeds_f1"]:
            lines.append(f"    best-inner config, {len(d['final_seeds_f1'])} seeds            {d['final_seeds_mean']:.3f} ± {d['final_seeds_std']:.3f}")
        for f in d["trials_failed"]:
            lines.append(f"    failed trial {f['trial']}: {f['reason']}")
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m suite.search", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="gsd", help="a space name in search_spaces/ or a path to a YAML file")
    p.add_argument("--datasets", default="casme2")
    p.add_argument("--data-root")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--concurrency", type=int)
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float)
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS)
    p.add_argument("--address", help="an existing Ray cluster: auto or HOST:PORT (default: start a local one)")
    p.add_argument("--name")
    p.add_argument("--final-seeds", type=int, default=3)
    p.add_argument("--baselines", default=",".join(DEFAULT_BASELINES), help="baseline records to produce if missing ('' for none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", type=Path)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.time()
    try:
        space = load_space(args.space)
        datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
        unknown = [d for d in datasets if d not in DATASETS]
        if unknown or not datasets:
            raise SearchError(f"unknown dataset(s) {unknown}; choose from {list(DATASETS)}")
        args.baselines = [b for b in args.baselines.split(",") if b]
        for b in args.baselines:
            get_method(b)
        if args.trials < 1:
            raise SearchError("--trials must be at least 1")
        spec = get_method(space.method)
        image_size = resolve_hparams(spec, space.fixed)["image_size"] if "image_size" in spec.defaults else 112
        results = results_dir(args.results)
        args.name = args.name or space.name
        roots = data_roots(datasets, args.data_root)
        caches = {d: prepare(d, roots[d], results, image_size=image_size, flow=spec.needs_flow) for d in datasets}
    except (SpaceError, SearchError, DataError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # identical for every ray process we start
    import ray
    import torch

    ray.init(address=args.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        if args.gpus_per_trial is None:
            args.gpus_per_trial = 0.25 if ray.cluster_resources().get("GPU", 0) else 0.0
        total = check_resources(args.cpus_per_trial, args.gpus_per_trial)
        if args.concurrency is None:
            by_cpu = int(total.get("CPU", 1) // args.cpus_per_trial)
            by_gpu = int(total.get("GPU", 0) // args.gpus_per_trial) if args.gpus_per_trial else by_cpu
            args.concurrency = max(1, min(by_cpu, by_gpu, args.trials))
    except SearchError as e:
        ray.shutdown()
        print(f"error: {e}", file=sys.stderr)
        return 2
    search_dir = results / "searches" / args.name
    summaries = []
    try:
        for dataset in datasets:
            trials_dir = search_dir / dataset / "trials"
            trials_dir.mkdir(parents=True, exist_ok=True)
            ctx = {"method": space.method, "fixed": space.fixed, "dataset": dataset, "cache": str(caches[dataset].path),
                   "fingerprint": caches[dataset].fingerprint, "trials_dir": str(trials_dir), "seed": args.seed,
                   "token_cache": str(token_cache_dir(results)),
                   "gpus_per_trial": args.gpus_per_trial}
            tune_start = time.time()
            grid = run_tune(space, dataset, ctx, args, results, search_dir)
            tune_seconds = time.time() - tune_start
            finished = grid.num_terminated + grid.num_errors
            if finished < args.trials:  # Tune returns normally after Ctrl-C: never summarise a partial search
                print(f"interrupted: {finished} of {args.trials} trials finished on {dataset}; the state is saved — "
                      f"rerun the same command to resume", file=sys.stderr)
                return 130
            data = DatasetTensors.from_cache(load_cache(caches[dataset].path)[0], DATASET_AUS[dataset], torch.device("cpu"))
            trials, failed = collect(grid, trials_dir, data)
            if not trials:
                print(f"error: no trial finished on {dataset}; failures: {failed}", file=sys.stderr)
                return 1
            summaries.append(summarise_dataset(space, dataset, roots[dataset], caches[dataset], trials, failed, args, results, search_dir,
                                               tune_seconds))
    finally:
        ray.shutdown()
    summary = {"name": args.name, "space": space.name, "method": space.method, "sampler": args.sampler,
               "trials": args.trials, "wall_s": time.time() - start, "datasets": summaries}
    write_json(search_dir / "summary.json", summary)
    text = format_summary(summary)
    (search_dir / "summary.txt").write_text(text + "\n")
    print(text)
    from .leaderboard import render

    board = render(results)
    print(f"summary: {search_dir / 'summary.txt'}  (optuna-dashboard {search_dir / 'optuna.journal'})")
    print(f"leaderboard: {board}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
