"""A whole search: pre-flight checks, Ray, one ``DatasetSearch`` per dataset, the summary and the
leaderboard.

Ray always runs with token authentication (``start_ray``): a local cluster gets Ray's token
(``~/.ray/auth_token``, generated on first use) and refuses clients without it — its ports listen
on every interface, so the token is what keeps others out; joining a cluster (``--address``)
needs that cluster's token. An auth mode of ``disabled`` in the environment is refused."""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..paths import all_rounds_dirs, search_data_file, search_dir, search_engine_file, search_journal, search_summary, search_summary_text
from .driver import StageIncomplete
from .options import SearchError, SearchOptions, check_counts, parse_fidelity, token_auth_environment
from .slices import slice_files


@dataclass
class Plan:
    """One space searched on every dataset: the main space, or a baseline's (--search-baselines)."""

    space: object
    fidelity: tuple[str, str] | None
    opts: SearchOptions
    caches: dict


def _caches(space, opts: SearchOptions, roots: dict, results) -> dict:
    from ..data import prepare
    from ..registry import get_method, needs_flow
    from .driver import fixed_values, search_protocol
    from .trial import task_hparams

    spec = get_method(space.method)
    hp = task_hparams(spec, fixed_values(space, opts), {}, search_protocol(space, opts))
    image_size = hp.get("image_size", 112)
    flow = needs_flow(spec, hp) or any(p.name == "motion" and "flow" in (p.choices or ()) for p in space.params)
    return {d: prepare(d, roots[d], results, image_size=image_size, flow=flow, reader=opts.reader) for d in opts.datasets}


def _preflight(opts: SearchOptions) -> tuple[list[Plan], dict]:
    """Everything that can fail before any work: spaces, datasets, baselines, data, caches. The
    plans: the main space, then each searched baseline's (its name: ``<main name>-<baseline>``,
    the same budget and seeds, no baselines of its own); baselines left are run by the main one."""
    from ..data import DATASETS, release_roots
    from ..evaluation import EvaluationError
    from ..paths import results_dir
    from ..registry import get_method
    from ..spaces import SPACES_DIR, load_space

    check_counts(opts)
    space = load_space(opts.space)
    unknown = [d for d in opts.datasets if d not in DATASETS]
    if unknown or not opts.datasets:
        raise SearchError(f"unknown dataset(s) {unknown}; choose from {list(DATASETS)}")
    try:
        evaluations = opts.evaluations
    except EvaluationError as e:
        raise SearchError(str(e)) from None
    outside = sorted({r for e in evaluations for r in e.releases} - set(opts.datasets))
    if outside:
        raise SearchError(f"--protocol {opts.protocol}: reads {outside}, which --datasets does not list")
    for b in opts.baselines:
        get_method(b)
    results = results_dir(opts.results)
    fidelity = parse_fidelity(opts.fidelity, space, opts.confirm_top, opts.trials)
    opts.preset_overrides(space.method)  # an unknown preset, or one for another method, fails here
    name = opts.name or (f"{space.name}-{fidelity[0]}-to-{fidelity[1]}" if fidelity else space.name) + (f"-{opts.preset}" if opts.preset else "")
    if opts.selection == "shared":
        name = opts.name or f"{name}-shared"
    if evaluations[0].kind != "loso":  # its own search folder: a LOSO search's summary is never replaced by a transfer's
        name = opts.name or f"{name}-{evaluations[0].key}"
    roots = release_roots(opts.datasets, opts.data_root)
    opts.reader.check(opts.datasets)
    searched = [b for b in opts.baselines if opts.search_baselines and (SPACES_DIR / f"{b}.yaml").exists()]
    main = opts.with_(name=name, results=results, baselines=tuple(b for b in opts.baselines if b not in searched))
    plans = [Plan(space, fidelity, main, _caches(space, main, roots, results))]
    for b in searched:
        b_space = load_space(b)
        b_opts = main.with_(name=f"{name}-{b}", baselines=(), fidelity=None, preset=None)
        plans.append(Plan(b_space, None, b_opts, _caches(b_space, b_opts, roots, results)))
    for plan in plans:
        _check_same_data(plan)
        _check_same_engine(plan)
        _check_same_choices(plan)
    return plans, roots


def _data_file(plan: Plan) -> Path:
    """The data fingerprints a search folder's stored outputs were computed on."""
    return search_data_file(search_dir(plan.opts.results, plan.opts.name))


def _stored_fingerprints(plan: Plan) -> dict:
    """Per dataset, the fingerprint the folder's outputs were computed on (none: nothing stored).
    A folder from before ``data.json`` existed: its headline record says."""
    path = _data_file(plan)
    stored = json.loads(path.read_text()) if path.exists() else {}
    for dataset in plan.caches:
        record = path.parent / dataset / f"{plan.opts.selection_label}.json"
        if dataset not in stored and record.exists():
            stored[dataset] = json.loads(record.read_text())["data_fingerprint"]
    return stored


def _check_same_data(plan: Plan) -> None:
    """A search folder is resumed (its stored slices, studies and records reused) only on the data
    it was run on: a corrected release under the same search name would mix outputs of two data."""
    stored = _stored_fingerprints(plan)
    for dataset, cache in plan.caches.items():
        if stored.get(dataset, cache.fingerprint) != cache.fingerprint:
            raise SearchError(f"search {plan.opts.name!r} ({_data_file(plan).parent}) was run on other {dataset} data (fingerprint "
                              f"{stored[dataset][:12]}, now {cache.fingerprint[:12]}: the release or how it is read changed); "
                              "its stored outputs would mix with the new data. Start another search with --name, or move "
                              "that folder away to redo this one")


def _engine_file(plan: Plan) -> Path:
    """The engine a search folder's stored outputs were computed with."""
    return search_engine_file(search_dir(plan.opts.results, plan.opts.name))


def _check_same_engine(plan: Plan) -> None:
    """A search is resumed only with the engine and fold protocol it ran with: the engines agree
    only within tolerance (docs/protocol.md), so a resume that switched engine, compile backend or
    protocol version would mix two computations' numbers. A folder with outputs but no
    ``engine.json`` was computed before the per-task streams (protocol 1): never resumed."""
    from ..folds import PROTOCOL_VERSION

    path = _engine_file(plan)
    folder = path.parent
    if not path.exists():
        if any(slice_files(d) for d in all_rounds_dirs(folder)) or search_summary(folder).exists():
            raise SearchError(f"search {plan.opts.name!r} ({folder}) was computed by an earlier version of the fold protocol (before "
                              "each task had its own features and random streams); its outputs would mix with this version's. Start "
                              "another search with --name, or move that folder away to redo this one")
        return
    stored = json.loads(path.read_text())
    if stored.get("protocol") != PROTOCOL_VERSION:
        raise SearchError(f"search {plan.opts.name!r} ({folder}) was computed by version {stored.get('protocol', 1)} of the fold "
                          f"protocol, this is version {PROTOCOL_VERSION}: start another search with --name")
    label = plan.opts.engine_label
    if stored["engine"] != label:
        engine, _, backend = stored["engine"].partition("+compile:")
        how = {"sequential": "--engine sequential (or --fold-workers with auto)", "batched": "--engine batched",
               "auto": "--engine auto without --fold-workers"}[engine] + (f" and --compile {backend}" if backend else " without --compile")
        raise SearchError(f"search {plan.opts.name!r} ({folder}) ran with --engine {stored['engine']}; these options ask for {label}, "
                          f"and the engines agree only within tolerance (docs/protocol.md): its stored outputs would mix two "
                          f"computations' numbers. Resume with {how}, or start another search with --name")


# The options that decide what a search proposes and which stored outputs it may reuse: a resume
# with another value would read the stored slices (named by round and proposal only) and journal as
# its own — e.g. a TPE search resumed as --sampler random, or a shared one as --selection strict,
# would carry outputs whose proposals saw other folds' (test) labels under a label that says none did.
CHOICE_OPTIONS = ("selection", "sampler", "metric", "fidelity", "confirm_top", "startup_trials", "round_size", "seed", "preset")


def _choices(plan: Plan) -> dict:
    import hashlib

    return {**{k: getattr(plan.opts, k) for k in CHOICE_OPTIONS},
            "space": hashlib.sha256(plan.space.path.read_bytes()).hexdigest()[:16]}


def _check_same_choices(plan: Plan) -> None:
    """A search folder is resumed only with the options it proposed and selected with
    (``CHOICE_OPTIONS`` and the space file); more ``--trials``, other final seeds, baselines or
    resources are fine."""
    path = _engine_file(plan)
    stored = json.loads(path.read_text()).get("choices") if path.exists() else None
    if stored is None:
        return
    now = json.loads(json.dumps(_choices(plan), default=str))
    changed = [k for k in now if stored.get(k) != now[k]]
    if changed:
        differences = ", ".join(f"{'the space file' if k == 'space' else '--' + k.replace('_', '-')} "
                                f"{'changed' if k == 'space' else f'was {stored.get(k)!r}, now {now[k]!r}'}" for k in changed)
        raise SearchError(f"search {plan.opts.name!r} ({path.parent}) was run with other choices: {differences}. Its stored "
                          "proposals and slices were made under those; resumed with these they would carry a label they do not "
                          "deserve. Resume with the same options, or start another search with --name")


def _record_data(plan: Plan) -> None:
    from ..results import write_json

    write_json(_data_file(plan), {**_stored_fingerprints(plan), **{d: c.fingerprint for d, c in plan.caches.items()}})
    from ..folds import PROTOCOL_VERSION

    write_json(_engine_file(plan), {"engine": plan.opts.engine_label, "protocol": PROTOCOL_VERSION, "choices": _choices(plan)})


def _identity(plan: Plan, roots: dict) -> str:
    return plan.opts.identity(plan.space.path.read_text(), roots, {d: c.fingerprint for d, c in plan.caches.items()})


def _finished(plans: list[Plan], roots: dict) -> list[str] | None:
    """The stored summaries when every plan's search finished with the same identity (None otherwise)."""
    if plans[0].opts.rerun:
        return None
    texts = []
    for plan in plans:
        folder = search_dir(plan.opts.results, plan.opts.name)
        try:
            summary = json.loads(search_summary(folder).read_text())
            text = search_summary_text(folder).read_text().rstrip()
        except (OSError, ValueError):
            return None
        if summary.get("identity") != _identity(plan, roots):
            return None
        texts.append(text)
    return texts


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


def start_ray(address: str | None) -> None:
    """``ray.init`` once ``token_auth_environment`` has set the mode (before Ray was imported),
    then a check that Ray did enable token authentication."""
    import ray

    token_auth_environment(address)
    # Tune's console output off, once for the whole search: with verbose=0 its newer reporter still
    # prints a header naming its placeholder search algorithm (Optuna proposes here) and a
    # TensorBoard hint; tune_rounds.SliceProgress reports instead
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    # nor a traceback per failed trial: tune_rounds.SliceProgress names a lost machine or the trial's error file
    os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] = "0"
    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":  # Ray sets it when it enables token auth
        ray.shutdown()
        raise SearchError("Ray started without token authentication (Ray older than 2.59?); refusing to go on")
    token = os.path.expanduser("~/.ray/auth_token")
    if address is None and os.path.exists(token):
        os.chmod(token, 0o600)  # Ray writes it with the umask's mode: readable by other users of the machine


def run_search(opts: SearchOptions) -> int:
    from ..data import DataError
    from ..presets import PresetError
    from ..spaces import SpaceError

    start = time.time()
    try:
        plans, roots = _preflight(opts)
    except (SpaceError, SearchError, DataError, KeyError, PresetError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    opts = plans[0].opts
    for cache in plans[0].caches.values():
        if cache.findings_note:
            print(cache.findings_note, file=sys.stderr, flush=True)
    if opts.dry_run:
        for plan in plans:
            o = plan.opts
            data = ", ".join(f"{d} ({json.loads((plan.caches[d].path / 'meta.json').read_text())['n_samples']} clips)" for d in o.datasets)
            print(f"pre-flight passed: search {o.name} — space {plan.space.name} over {plan.space.method}"
                  f"{' with preset ' + o.preset if o.preset else ''} "
                  f"({len(plan.space.params)} parameters), {o.trials} configurations per fold study ({o.selection}), on {data}; "
                  f"baselines {', '.join(o.baselines) or 'none'}; {o.final_seeds} final seeds")
        print("nothing was run (--dry-run)")
        return 0
    finished = _finished(plans, roots)
    if finished:
        from ..leaderboard import render

        for text in finished:
            print(text)
        print(f"this search is finished (same options, space and data); its stored summary is above — nothing was rerun "
              f"(--rerun runs it again, a new --name starts another)\nleaderboard: {render(opts.results)}")
        return 0
    if len(plans) > 1:
        print(f"baselines searched like {plans[0].space.name} (strictly nested, {opts.trials} configurations per fold study): "
              f"{', '.join(p.space.method for p in plans[1:])}; run with inner-validation selection: {', '.join(opts.baselines) or 'none'}",
              flush=True)
    import ray

    from ..results import write_atomic, write_json
    from .driver import DatasetSearch
    from .nodes import check_shared_folders
    from .summary import format_summary
    from .tune_rounds import TuneExecutor, submit_to_ray

    try:
        start_ray(opts.address)
        opts = _resources(opts)
        # every node must reach the results and data folders before any work is scheduled there
        check_shared_folders(opts.results, sorted({Path(r) for r in roots.values() if r is not None}))
        for plan in plans:
            _record_data(plan)
    except SearchError as e:
        ray.shutdown()
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        finishers = []  # a dataset's final seeds and baselines run while the next search is under way
        for plan in plans:
            o = plan.opts.with_(gpus_per_trial=opts.gpus_per_trial, concurrency=opts.concurrency)
            for evaluation in o.evaluations:
                search = DatasetSearch(plan.space, evaluation, roots, plan.caches, plan.fidelity, o, o.results,
                                       search_dir(o.results, o.name), TuneExecutor(o, o.results))
                finishers.append((plan, search.run(lambda jobs, o=o: submit_to_ray(jobs, o))))
        by_plan: dict[str, list] = {}
        for plan, finish in finishers:
            by_plan.setdefault(plan.opts.name, []).append(finish())
    except StageIncomplete as e:
        print(e.message, file=sys.stderr)
        return e.exit_code
    finally:
        ray.shutdown()
    for plan in plans:
        o, folder = plan.opts, search_dir(plan.opts.results, plan.opts.name)
        summary = {"name": o.name, "identity": _identity(plan, roots), "space": plan.space.name, "method": plan.space.method, "sampler": o.sampler, "selection": o.selection,
                   "protocol": o.protocol, "metric": o.metric, "trials": o.trials, "round_size": o.round_size, "startup_trials": o.startup_trials, "seed": o.seed,
                   "fidelity": o.fidelity, "confirm_top": o.confirm_top if plan.fidelity else None,
                   "wall_s": time.time() - start, "datasets": by_plan[o.name], "command": opts.command}
        write_json(search_summary(folder), summary)
        text = format_summary(summary)
        write_atomic(search_summary_text(folder), (text + "\n").encode())
        print(text)
        print(f"summary: {search_summary_text(folder)}  (optuna-dashboard {search_journal(folder)})")
    from ..leaderboard import render

    print(f"leaderboard: {render(opts.results)}")
    return 0
