"""A whole search: pre-flight checks, Ray, one ``DatasetSearch`` per dataset, the summary and the
leaderboard. Ray runs with its own token authentication (the default of local clusters since
Ray 2.59); nothing here turns it off."""
from __future__ import annotations

import sys
import time

from .options import SearchError, SearchOptions, check_counts, data_roots, parse_fidelity
from .tune_rounds import StageIncomplete


def _preflight(opts: SearchOptions):
    """Everything that can fail before any work: space, datasets, baselines, data, caches."""
    from ..data import DATASETS, prepare
    from ..paths import results_dir
    from ..registry import get_method, resolve_hparams
    from ..spaces import load_space

    check_counts(opts)
    space = load_space(opts.space)
    unknown = [d for d in opts.datasets if d not in DATASETS]
    if unknown or not opts.datasets:
        raise SearchError(f"unknown dataset(s) {unknown}; choose from {list(DATASETS)}")
    for b in opts.baselines:
        get_method(b)
    spec = get_method(space.method)
    image_size = resolve_hparams(spec, space.fixed)["image_size"] if "image_size" in spec.defaults else 112
    results = results_dir(opts.results)
    fidelity = parse_fidelity(opts.fidelity, space, opts.confirm_top, opts.trials)
    name = opts.name or (f"{space.name}-{fidelity[0]}-to-{fidelity[1]}" if fidelity else space.name)
    if opts.selection == "shared":
        name = opts.name or f"{name}-shared"
    roots = data_roots(opts.datasets, opts.data_root)
    caches = {d: prepare(d, roots[d], results, image_size=image_size, flow=spec.needs_flow) for d in opts.datasets}
    return space, fidelity, opts.with_(name=name, results=results), roots, caches


def _resources(opts: SearchOptions) -> SearchOptions:
    import ray

    total = ray.cluster_resources()
    gpus = opts.gpus_per_trial if opts.gpus_per_trial is not None else (0.25 if total.get("GPU", 0) else 0.0)
    workers = f" × --fold-workers {opts.fold_workers}" if opts.fold_workers > 1 else ""
    if opts.cpus_per_trial * opts.fold_workers > total.get("CPU", 0):
        raise SearchError(f"--cpus-per-trial {opts.cpus_per_trial}{workers} does not fit: the Ray cluster has {total.get('CPU', 0)} CPUs")
    if gpus * opts.fold_workers > total.get("GPU", 0):
        raise SearchError(f"--gpus-per-trial {gpus}{workers} does not fit: the Ray cluster has {total.get('GPU', 0)} GPUs")
    concurrency = opts.concurrency
    if concurrency is None:
        by_cpu = int(total.get("CPU", 1) // (opts.cpus_per_trial * opts.fold_workers))
        by_gpu = int(total.get("GPU", 0) // (gpus * opts.fold_workers)) if gpus else by_cpu
        concurrency = max(1, min(by_cpu, by_gpu, opts.round_size))
    return opts.with_(gpus_per_trial=gpus, concurrency=concurrency)


def run_search(opts: SearchOptions) -> int:
    from ..data import DataError
    from ..spaces import SpaceError

    start = time.time()
    try:
        space, fidelity, opts, roots, caches = _preflight(opts)
    except (SpaceError, SearchError, DataError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    import ray

    from ..results import write_atomic, write_json
    from .driver import DatasetSearch
    from .summary import format_summary
    from .tune_rounds import TuneExecutor, submit_to_ray

    ray.init(address=opts.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        opts = _resources(opts)
    except SearchError as e:
        ray.shutdown()
        print(f"error: {e}", file=sys.stderr)
        return 2
    search_dir = opts.results / "searches" / opts.name
    try:
        finishers = []  # a dataset's final seeds and baselines run while the next dataset is searched
        for dataset in opts.datasets:
            search = DatasetSearch(space, dataset, roots[dataset], caches[dataset], fidelity, opts, opts.results, search_dir,
                                   TuneExecutor(opts, opts.results))
            finishers.append(search.run(lambda jobs: submit_to_ray(jobs, opts)))
        summaries = [finish() for finish in finishers]
    except StageIncomplete as e:
        print(e.message, file=sys.stderr)
        return e.exit_code
    finally:
        ray.shutdown()
    summary = {"name": opts.name, "space": space.name, "method": space.method, "sampler": opts.sampler, "selection": opts.selection,
               "trials": opts.trials, "round_size": opts.round_size, "startup_trials": opts.startup_trials, "seed": opts.seed,
               "fidelity": opts.fidelity, "confirm_top": opts.confirm_top if fidelity else None,
               "wall_s": time.time() - start, "datasets": summaries, "command": opts.command}
    write_json(search_dir / "summary.json", summary)
    text = format_summary(summary)
    write_atomic(search_dir / "summary.txt", (text + "\n").encode())
    print(text)
    from ..leaderboard import render

    board = render(opts.results)
    print(f"summary: {search_dir / 'summary.txt'}  (optuna-dashboard {search_dir / 'optuna.journal'})")
    print(f"leaderboard: {board}")
    return 0
