"""Command line of ``python -m suite.search`` (arguments only; the work is ``suite.search.run``).
Parsing imports nothing heavy, so ``--help`` is instant."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..data.options import add_reader_arguments, reader_options
from .options import DEFAULT_BASELINES, SAMPLERS, SELECTIONS, SearchError, SearchOptions, token_auth_environment

DESCRIPTION = """\
Hyper-parameter search with strictly nested leave-one-subject-out selection (Ray Tune + Optuna).

Every outer fold has its own Optuna study, told only that fold's inner-validation F1; per fold the
configuration best in its own study predicts the test subject (the strictly nested F1, the
headline). Studies are asked a fixed number of proposals per round, so the same command gives
the same numbers at any concurrency. Rerunning the same command resumes an interrupted search.

examples:
  python -m suite.search --space gsd
  python -m suite.search --space full --datasets casme2,samm \\
      --data-root casme2=/data/CASME2,samm=/data/SAMM --trials 64 --gpus-per-trial 0.25
  python -m suite.search --space gsd --protocol 'transfer:casme2->samm'
  python -m suite.search --space gsd --protocol composite:casme2+samm
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m suite.search", description=DESCRIPTION,
                                formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=32))
    d = SearchOptions(space="gsd")
    a = p.add_argument
    a("--space", default="gsd", help="a space in search_spaces/ (gsd, miaucl, lsi, full, ablation, a baseline) or a YAML path (default: gsd)")
    a("--datasets", help="comma-separated registered releases (casme2, samm, casme3, …) for --protocol loso "
                         f"(default: {','.join(d.datasets)}; other protocols name their releases)")
    a("--protocol", default=d.protocol,
      help="loso: leave-one-subject-out on each --datasets release; transfer:SRC->DST: train on every SRC subject, test on "
           "every DST clip over the AUs both evaluate, every choice on SRC's subjects; composite:A+B[+C]: LOSO over the "
           "union, subjects namespaced by release, the AUs every release evaluates, reported pooled and per release "
           "(default: %(default)s)")
    a("--data-root", help="release folder(s): one folder for one dataset, a folder holding CASME2/ and SAMM/, or "
                          "casme2=PATH,samm=PATH (default: the synthetic releases, generated on first use)")
    a("--trials", type=int, default=d.trials, help="configurations per fold study (default: %(default)s)")
    a("--round-size", type=int, default=d.round_size,
      help="proposals each fold study is asked for per round; fixes what is proposed, whatever the concurrency (default: %(default)s)")
    a("--startup-trials", type=int, default=d.startup_trials,
      help="the sampler's random start-up proposals, shared by every fold: the common candidates (default: %(default)s)")
    a("--selection", default=d.selection, choices=SELECTIONS,
      help="strict: one study per fold (headline); shared: one study told the mean over folds, labelled shared_nested (default: %(default)s)")
    a("--sampler", default=d.sampler, choices=SAMPLERS, help="Optuna sampler (default: %(default)s)")
    a("--seed", type=int, default=d.seed, help="search seed: samplers, inner splits, model initialisation (default: %(default)s)")
    a("--final-seeds", type=int, default=d.final_seeds,
      help="re-run each fold's chosen configuration with this many other seeds (seed+1 …) (default: %(default)s)")
    a("--baselines", default=",".join(d.baselines), help="baselines run with the same seeds and inner-validation selection ('' for none) (default: %(default)s)")
    a("--search-baselines", action="store_true",
      help="search every baseline that has a space (search_spaces/<name>.yaml) with the same --trials, rounds, seeds and "
           "strict nesting as the main space; baselines without one (no hyper-parameters) keep inner-validation runs (default: off)")
    a("--fidelity", help="LOW:HIGH backbone modes, e.g. frozen:full: search with LOW (cached frozen tokens), then re-run "
                         "each fold's --confirm-top best with HIGH; selection and final seeds use the confirmed runs (default: off)")
    a("--confirm-top", type=int, default=d.confirm_top, help="configurations per fold confirmed with --fidelity (default: %(default)s)")
    a("--concurrency", type=int, help="Tune trials at once (default: as many as the resources allow, at most --round-size)")
    a("--cpus-per-trial", type=float, default=d.cpus_per_trial, help="CPUs per Tune trial (default: %(default)s)")
    a("--gpus-per-trial", type=float, help="GPUs per Tune trial (default: 0.25 when the cluster has GPUs, else 0)")
    a("--fold-workers", type=int, default=d.fold_workers, help="workers per trial running its fold tasks at once, each with "
                                                               "--cpus/--gpus-per-trial (default: %(default)s)")
    a("--engine", default=d.engine, choices=("auto", "batched", "sequential"),
      help="batched: a slice's models (every fold, inner and outer) trained as one on cached frozen features; "
           "auto: batched when the configuration allows (default: %(default)s)")
    a("--metric", default=d.metric, choices=("binary", "macro"),
      help="F1 variant that chooses (search objective, epochs, thresholds) and heads the page; records carry both "
           "(binary: positive class; macro: mean of positive- and negative-class F1) (default: %(default)s)")
    a("--rerun", action="store_true",
      help="run a finished search again over its stored outputs (retrains only what is missing; rewrites its summary); "
           "without it, rerunning a finished search prints its stored summary and re-renders the page (default: off)")
    a("--preset", choices=("ours", "paper"),
      help="a named Micro-AU CLIP configuration (docs/method.md): ours, or paper (ViT-B-32, flow input, trained text tower, "
           "prompt-based recognition); the space's own values override it (default: the method's defaults)")
    a("--dry-run", action="store_true",
      help="pre-flight only: check the space, data, caches and baselines (building caches as needed), print the plan, run nothing")
    a("--address", help="an existing Ray cluster: auto or HOST:PORT (default: start a local one)")
    a("--name", help="search name: results/searches/NAME (default: the space's name)")
    a("--compile", nargs="?", const="inductor", metavar="BACKEND",
      help="torch.compile each configuration's model once, reused across its folds (backend default inductor; default: off)")
    a("--results", type=Path, help="results folder (default: ./results or $MICRO_AU_RESULTS)")
    add_reader_arguments(p)
    return p.parse_args(argv)


def datasets_of(args: argparse.Namespace) -> tuple[str, ...]:
    """The releases a search reads: ``--datasets`` (under loso), or the ones its --protocol names."""
    from ..evaluation import EvaluationError, parse_protocol

    if args.protocol.strip() == "loso":
        return tuple(x.strip() for x in args.datasets.split(",") if x.strip()) if args.datasets else SearchOptions(space="").datasets
    if args.datasets:
        raise SearchError(f"--datasets applies to --protocol loso; --protocol {args.protocol} names its own releases")
    try:
        return parse_protocol(args.protocol)[0].releases
    except EvaluationError as e:
        raise SearchError(str(e)) from None


def options_from_args(args: argparse.Namespace, argv) -> SearchOptions:
    return SearchOptions(
        space=args.space, datasets=datasets_of(args), protocol=args.protocol.strip(), data_root=args.data_root,
        trials=args.trials, round_size=args.round_size, startup_trials=args.startup_trials, selection=args.selection,
        sampler=args.sampler, seed=args.seed, final_seeds=args.final_seeds,
        baselines=tuple(b for b in args.baselines.split(",") if b), search_baselines=args.search_baselines, fidelity=args.fidelity, confirm_top=args.confirm_top,
        concurrency=args.concurrency, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        fold_workers=args.fold_workers, address=args.address, name=args.name, compile=args.compile, engine=args.engine,
        metric=args.metric, rerun=args.rerun, dry_run=args.dry_run, preset=args.preset, results=args.results,
        reader=reader_options(args),
        command="python -m suite.search " + shlex.join(sys.argv[1:] if argv is None else [str(a) for a in argv]))


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        token_auth_environment(args.address)  # before Ray is imported: Ray reads the mode then
    except SearchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .run import run_search

    try:
        opts = options_from_args(args, argv)
    except SearchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return run_search(opts)
