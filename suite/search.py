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
from .models.clip_backbone import BACKBONE_MODES
from .spaces import SearchSpace, SpaceError, load_space
from .trial import CONTEXT_KEY, fold_from_json, run_trial, trial_resources
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


def check_resources(cpus: float, gpus: float, fold_workers: int) -> dict:
    import ray

    total = ray.cluster_resources()
    workers = f" × --fold-workers {fold_workers}" if fold_workers > 1 else ""
    if cpus * fold_workers > total.get("CPU", 0):
        raise SearchError(f"--cpus-per-trial {cpus}{workers} does not fit: the Ray cluster has {total.get('CPU', 0)} CPUs")
    if gpus * fold_workers > total.get("GPU", 0):
        raise SearchError(f"--gpus-per-trial {gpus}{workers} does not fit: the Ray cluster has {total.get('GPU', 0)} GPUs")
    return total


def fit_experiment(exp_name: str, param_space: dict, make_search_alg, num_samples: int, args, results: Path):
    """Start or resume one Tune experiment (restored by name when its state exists); its ResultGrid."""
    from ray import tune

    storage_path = results / "ray"
    trainable = tune.with_resources(run_trial, trial_resources(args.cpus_per_trial, args.gpus_per_trial, args.fold_workers))
    exp_path = storage_path / exp_name
    if tune.Tuner.can_restore(str(exp_path)):
        print(f"resuming {exp_path}")
        return tune.Tuner.restore(str(exp_path), trainable, resume_errored=True).fit()
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=make_search_alg(), num_samples=num_samples,
                                    max_concurrent_trials=args.concurrency, reuse_actors=False),
        # Checkpoints are a few KB of fold outputs: keep them all (num_to_keep would force an
        # experiment snapshot after every fold report).
        run_config=tune.RunConfig(name=exp_name, storage_path=str(storage_path), verbose=1,
                                  failure_config=tune.FailureConfig(max_failures=MAX_FAILURES)),
    )
    return tuner.fit()


def run_search_stage(space: SearchSpace, dataset: str, ctx: dict, args, results: Path, search_dir: Path):
    """The Optuna search: ``args.trials`` configurations proposed by the sampler."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from .searcher import ResumableOptunaSearch

    exp_name = f"{args.name}-{dataset}"
    return fit_experiment(exp_name, {CONTEXT_KEY: ctx}, lambda: ResumableOptunaSearch(
        space=space.suggest, metric="inner_f1", mode="max", sampler=make_sampler(args.sampler, args.seed),
        study_name=exp_name, storage=JournalStorage(JournalFileBackend(str(search_dir / "optuna.journal"))),
    ), args.trials, args, results)


def run_confirm_stage(top: list[TrialOutputs], dataset: str, ctx: dict, args, results: Path):
    """Fixed configurations (the screening stage's best) evaluated again at the higher fidelity."""
    from ray.tune.search import BasicVariantGenerator

    points = [t.params for t in top]
    # the keys must exist in the param space for the points to fill them
    param_space = {CONTEXT_KEY: ctx, **{k: None for k in points[0]}}
    return fit_experiment(f"{args.name}-{dataset}-confirm", param_space,
                          lambda: BasicVariantGenerator(points_to_evaluate=points), len(points), args, results)


def parse_fidelity(value: str | None, space: SearchSpace, confirm_top: int, trials: int) -> tuple[str, str] | None:
    """``LOW:HIGH`` backbone modes (e.g. ``frozen:full``) → (low, high), checked against the space."""
    if not value:
        return None
    modes = value.split(":")
    if len(modes) != 2 or not all(m in BACKBONE_MODES for m in modes) or modes[0] == modes[1]:
        raise SearchError(f"--fidelity {value!r}: expected LOW:HIGH, two different backbone modes of {BACKBONE_MODES}, e.g. frozen:full")
    if "backbone_mode" not in get_method(space.method).defaults:
        raise SearchError(f"--fidelity: method {space.method!r} has no backbone_mode to vary")
    if "backbone_mode" in space.fixed or any(p.name == "backbone_mode" for p in space.params):
        raise SearchError(f"--fidelity: space {space.name!r} already sets backbone_mode; remove it or drop --fidelity")
    if not 1 <= confirm_top <= trials:
        raise SearchError(f"--confirm-top {confirm_top}: must be between 1 and --trials ({trials})")
    return modes[0], modes[1]


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


class StageIncomplete(Exception):
    """A Tune stage that did not finish: interrupted (exit 130, resumable) or with no trial done."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.message, self.exit_code = message, exit_code


def finished_trials(grid, expected: int, trials_dir: Path, data: DatasetTensors, dataset: str, stage: str):
    finished = grid.num_terminated + grid.num_errors
    if finished < expected:  # Tune returns normally after Ctrl-C: never summarise a partial search
        raise StageIncomplete(f"interrupted: {finished} of {expected} {stage} trials finished on {dataset}; the state is saved — "
                              f"rerun the same command to resume", 130)
    trials, failed = collect(grid, trials_dir, data)
    if not trials:
        raise StageIncomplete(f"error: no {stage} trial finished on {dataset}; failures: {failed}", 1)
    return trials, failed


def search_dataset(space: SearchSpace, dataset: str, root, cache, fidelity: tuple[str, str] | None, args, results: Path,
                   search_dir: Path) -> dict:
    """Search one dataset (and, with ``--fidelity``, confirm its best configurations), then
    select and summarise."""
    import torch

    data = DatasetTensors.from_cache(load_cache(cache.path)[0], DATASET_AUS[dataset], torch.device("cpu"))
    trials_dir = search_dir / dataset / "trials"
    trials_dir.mkdir(parents=True, exist_ok=True)
    ctx = {"method": space.method, "fixed": {**space.fixed, **({"backbone_mode": fidelity[0]} if fidelity else {})},
           "dataset": dataset, "cache": str(cache.path), "fingerprint": cache.fingerprint, "trials_dir": str(trials_dir),
           "seed": args.seed, "token_cache": str(token_cache_dir(results)), "cpus_per_trial": args.cpus_per_trial,
           "gpus_per_trial": args.gpus_per_trial, "fold_workers": args.fold_workers, "compile": args.compile}
    tune_start = time.time()
    trials, failed = finished_trials(run_search_stage(space, dataset, ctx, args, results, search_dir), args.trials, trials_dir,
                                     data, dataset, "search")
    screening = None
    if fidelity:
        top = sorted(trials, key=lambda t: -t.mean_inner_f1)[:args.confirm_top]  # stable: ties keep trial order
        trials_dir = search_dir / dataset / "confirmed" / "trials"
        ctx = {**ctx, "fixed": {**space.fixed, "backbone_mode": fidelity[1]}, "trials_dir": str(trials_dir)}
        confirmed, failed_high = finished_trials(run_confirm_stage(top, dataset, ctx, args, results), len(top), trials_dir,
                                                 data, dataset, "confirmation")
        confirm_f1 = {json.dumps(t.params, sort_keys=True): t.mean_inner_f1 for t in confirmed}
        screening = {"fidelity": {"search": fidelity[0], "confirm": fidelity[1]}, "trials_finished": len(trials),
                     "trials_failed": failed,
                     "confirmed": [{"params": t.params, "search_trial": t.trial_id, "search_inner_f1": t.mean_inner_f1,
                                    "confirm_inner_f1": confirm_f1.get(json.dumps(t.params, sort_keys=True))}  # None: failed
                                   for t in top]}
        trials, failed = confirmed, failed_high
    summary = summarise_dataset(space, dataset, root, cache, data, trials, failed, trials_dir, args, results, search_dir,
                                time.time() - tune_start)
    return {**summary, "trials_dir": str(trials_dir), "screening": screening}


def summarise_dataset(space: SearchSpace, dataset: str, root, cache, data: DatasetTensors, trials: list[TrialOutputs],
                      failed: list[dict], trials_dir: Path, args, results: Path, search_dir: Path, tune_seconds: float) -> dict:
    aus = DATASET_AUS[dataset]
    out = search_dir / dataset
    devices = sorted({json.loads(p.read_text()).get("device", "?") for p in trials_dir.glob("*.json")})
    common = {"method": space.method, "dataset": dataset, "aus": aus, "seed": args.seed, "fingerprint": cache.fingerprint,
              "device": ", ".join(devices), "duration_s": tune_seconds}
    extra = {"search": args.name, "space": space.name, "n_trials": len(trials), "n_failed": len(failed), "fidelity": args.fidelity,
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


def _train_task(method: str, dataset: str, root, overrides: dict | None, seed: int, results: Path, gpu_fraction: float,
                compile: str | None) -> str:
    """One ``suite.train`` run inside a Ray task (final seeds, baselines): on a cluster these run
    on the workers, with the trials' resources, not on the head."""
    import ray
    import torch

    from .engine import get_accelerator

    if ray.get_gpu_ids() and gpu_fraction < 1:
        torch.cuda.set_per_process_memory_fraction(gpu_fraction)
    get_accelerator(cpu=not ray.get_gpu_ids())
    return str(train.run(method, dataset, root, overrides, [seed], results=results, log=lambda *_: None, compile=compile)[0])


def run_on_cluster(jobs: list[tuple[str, dict | None, int]], dataset: str, root, results: Path, args) -> list[Path]:
    """Run (method, overrides, seed) trainings as parallel Ray tasks; return record paths in order."""
    import ray

    task = ray.remote(num_cpus=args.cpus_per_trial, num_gpus=args.gpus_per_trial)(_train_task)
    futures = [task.remote(m, dataset, root, o, s, results, args.gpus_per_trial, args.compile) for m, o, s in jobs]
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
        if d.get("screening"):
            sc = d["screening"]
            lines.append(f"  {d['dataset']}: searched {sc['trials_finished']} configurations with backbone {sc['fidelity']['search']} "
                         f"({len(sc['trials_failed'])} failed); confirmed the best {len(sc['confirmed'])} with {sc['fidelity']['confirm']}:")
            for c in sc["confirmed"]:
                high = "failed" if c["confirm_inner_f1"] is None else f"{c['confirm_inner_f1']:.3f}"
                lines.append(f"    inner F1 {sc['fidelity']['search']} {c['search_inner_f1']:.3f} → {sc['fidelity']['confirm']} {high}  {c['params']}")
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
    p.add_argument("--fold-workers", type=int, default=1,
                   help="run each trial's LOSO folds on this many workers at once, each with --cpus/--gpus-per-trial")
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS)
    p.add_argument("--address", help="an existing Ray cluster: auto or HOST:PORT (default: start a local one)")
    p.add_argument("--name")
    p.add_argument("--compile", nargs="?", const="inductor", metavar="BACKEND",
                   help="torch.compile each trial's model once, reused across its folds (default backend inductor)")
    p.add_argument("--final-seeds", type=int, default=3)
    p.add_argument("--fidelity", help="LOW:HIGH backbone modes, e.g. frozen:full: search with LOW (cached frozen tokens, "
                                      "cheap), then re-run the --confirm-top best configurations with HIGH; selection "
                                      "and the final seeds use the confirmed trials only")
    p.add_argument("--confirm-top", type=int, default=3, help="configurations confirmed with --fidelity (default 3)")
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
        if args.fold_workers < 1:
            raise SearchError("--fold-workers must be at least 1")
        spec = get_method(space.method)
        image_size = resolve_hparams(spec, space.fixed)["image_size"] if "image_size" in spec.defaults else 112
        results = results_dir(args.results)
        fidelity = parse_fidelity(args.fidelity, space, args.confirm_top, args.trials)
        args.name = args.name or (f"{space.name}-{fidelity[0]}-to-{fidelity[1]}" if fidelity else space.name)
        roots = data_roots(datasets, args.data_root)
        caches = {d: prepare(d, roots[d], results, image_size=image_size, flow=spec.needs_flow) for d in datasets}
    except (SpaceError, SearchError, DataError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # identical for every ray process we start
    import ray

    ray.init(address=args.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        if args.gpus_per_trial is None:
            args.gpus_per_trial = 0.25 if ray.cluster_resources().get("GPU", 0) else 0.0
        total = check_resources(args.cpus_per_trial, args.gpus_per_trial, args.fold_workers)
        if args.concurrency is None:
            by_cpu = int(total.get("CPU", 1) // (args.cpus_per_trial * args.fold_workers))
            by_gpu = int(total.get("GPU", 0) // (args.gpus_per_trial * args.fold_workers)) if args.gpus_per_trial else by_cpu
            args.concurrency = max(1, min(by_cpu, by_gpu, args.trials))
    except SearchError as e:
        ray.shutdown()
        print(f"error: {e}", file=sys.stderr)
        return 2
    search_dir = results / "searches" / args.name
    summaries = []
    try:
        for dataset in datasets:
            summaries.append(search_dataset(space, dataset, roots[dataset], caches[dataset], fidelity, args, results, search_dir))
    except StageIncomplete as e:
        print(e.message, file=sys.stderr)
        return e.exit_code
    finally:
        ray.shutdown()
    summary = {"name": args.name, "space": space.name, "method": space.method, "sampler": args.sampler,
               "trials": args.trials, "fidelity": args.fidelity, "confirm_top": args.confirm_top if fidelity else None,
               "wall_s": time.time() - start, "datasets": summaries}
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
