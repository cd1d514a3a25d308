"""python -m suite.train: train and evaluate one method on one dataset under the LOSO protocol, or
across releases (--protocol transfer:SRC->DST | composite:A+B).

Prints a per-AU table (both F1 variants, AUC, masked labels) and the pooled averages with their
subject-bootstrap intervals, writes one JSON record per seed and its predictions file under
--out (default results/runs); the last line printed is the path of the last record written.

examples:
  python -m suite.train --method micro_au_clip --dataset casme2
  python -m suite.train --method clip_global --dataset samm --data-root /data/SAMM --seeds 3 --set epochs=30
  python -m suite.train --from-search gsd --dataset casme2 --seeds 3
  python -m suite.train --method clip_global --protocol 'transfer:casme2->samm' --set selection=inner
  python -m suite.train --list-methods
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from .data import DATASETS, DataError
from .data.options import add_reader_arguments, reader_options


def au_table(record: dict) -> str:
    """Per AU both F1 variants (the headline one first) and AUC, in percent, with the masked
    label counts; then the pooled averages with their subject-bootstrap intervals."""
    f1, head = record["f1"], record["metric"]
    other = "macro" if head == "binary" else "binary"
    lines = [f"{record['method']} on {record['dataset']} (seed {record['seed']}, {record['n_samples']} clips, {record['duration_s']:.1f} s)",
             f"{'AU':>6}  {head + ' F1':>9}  {other + ' F1':>9}  {'AUC':>6}  {'masked':>6}"]
    for au in f1[head]["per_au"]:
        lines.append(f"{au:>6}  {100 * f1[head]['per_au'][au]:9.1f}  {100 * f1[other]['per_au'][au]:9.1f}  "
                     f"{100 * record['per_au_auc'][au]:6.1f}  {record['n_masked'][au]:6d}")
    for variant in (head, other):
        lo, hi = f1[variant]["ci95"]
        lines.append(f"pooled {variant} F1 {100 * f1[variant]['pooled']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]  "
                     f"(per-fold mean {100 * f1[variant]['fold_mean']:.1f})")
    for release, part in record.get("by_release", {}).items():  # a composite: each release's clips of the same predictions
        lo, hi = part["f1"][head]["ci95"]
        lines.append(f"  {release} part: pooled {head} F1 {100 * part['f1'][head]['pooled']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] "
                     f"({part['n_samples']} clips)")
    lines.append(f"[..]: {record['interval'][head]}")
    for name, m in record["mer"].items():
        oracle = f"  (oracle UF1 {100 * m['oracle']['uf1']:.1f})" if "oracle" in m else ""
        lines.append(f"recognition {name}: UF1 {100 * m['uf1']:.1f}  UAR {100 * m['uar']:.1f}  WF1 {100 * m['wf1']:.1f}  "
                     f"accuracy {100 * m['accuracy']:.1f}  (n={m['n']}){oracle}")
    return "\n".join(lines)


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m suite.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", help="a registered method, see --list-methods (default: micro_au_clip, or the searched one with --from-search)")
    p.add_argument("--dataset", choices=DATASETS, help="the release, under --protocol loso (default: casme2)")
    p.add_argument("--protocol", default="loso", help="loso (on --dataset) | transfer:SRC->DST | composite:A+B[+C] (docs/protocol.md; "
                                                     "default: %(default)s)")
    p.add_argument("--data-root", help="the release folder, e.g. /data/CASME2; across releases a folder holding each release's "
                                       "folder, or casme2=PATH,samm=PATH (default: the synthetic releases, generated on first use)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hyper-parameter, repeatable, e.g. --set epochs=30; the protocol settings (not "
                        "hyper-parameters) too: --set selection=inner (epochs and thresholds chosen on inner-validation "
                        "subjects), --set inner_val_fraction=0.3, --set metric=macro (default: none)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1, one record each (default: %(default)s)")
    p.add_argument("--out", type=Path, help="records folder (default: <results>/runs)")
    p.add_argument("--results", type=Path, help="results folder (default: ./results or $MICRO_AU_RESULTS)")
    p.add_argument("--compile", nargs="?", const="inductor", metavar="BACKEND",
                   help="torch.compile the model once and reuse it across folds (default backend inductor); pays off on long GPU runs")
    p.add_argument("--engine", default="auto", choices=("auto", "batched", "sequential"),
                   help="batched: all folds' models trained as one (cached frozen features); auto: batched when possible "
                        "(default: %(default)s)")
    p.add_argument("--metric", choices=("binary", "macro"),
                   help="F1 variant that chooses epochs and thresholds and heads the table; records carry both "
                        "(same as --set metric=…; default: binary)")
    p.add_argument("--preset", choices=("ours", "paper"),
                   help="a named Micro-AU CLIP configuration (docs/method.md): ours, or paper (ViT-B-32, flow input, trained text "
                        "tower, prompt-based recognition); --set overrides any of its keys (default: the method's defaults)")
    p.add_argument("--from-search", metavar="NAME",
                   help="train the deployment configuration of search NAME (under --results) on --dataset; its records are "
                        "labelled as that copy — chosen on all subjects, optimistic, not ranked — never as an independent "
                        "fixed configuration (default: none)")
    p.add_argument("--list-methods", action="store_true", help="list the registered methods and exit")
    add_reader_arguments(p)
    args = p.parse_args(argv)
    from .presets import preset_overrides
    from .protocol import Protocol, split_settings
    from .registry import methods  # torch, open_clip: after the arguments, so --help is instant
    from .runs import run

    if args.list_methods:
        for name, spec in methods().items():
            print(f"{name:28s} {spec.description}")
        return 0
    command = "python -m suite.train " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        from .evaluation import parse_protocol

        if args.protocol.strip() != "loso" and args.dataset:
            raise ValueError(f"--dataset applies to --protocol loso; --protocol {args.protocol} names its own releases")
        args.dataset = parse_protocol(args.protocol, [args.dataset or "casme2"])[0].key
        method, copied = args.method or "micro_au_clip", {}
        if args.from_search:
            from .paths import results_dir
            from .results import deployment_configuration

            method, copied = deployment_configuration(results_dir(args.results), args.from_search, args.dataset)
            if args.method and args.method != method:
                raise ValueError(f"--from-search {args.from_search} searched {method}, not --method {args.method}")
        preset, preset_fields = preset_overrides(args.preset, method)
        # the protocol (suite.protocol.Protocol) apart from the model's configuration: a search's
        # deployment copy brings its own, then --set, then --metric
        settings, copied = split_settings(copied)
        sets, overrides = split_settings(parse_sets(args.set))
        protocol = Protocol().with_(**settings).with_(**sets).with_(**({"metric": args.metric} if args.metric else {}))
        paths = run(method, args.dataset, args.data_root, copied | preset | overrides, args.seeds, args.out, args.results,
                    compile=args.compile, extra={"command": command, **preset_fields}, engine=args.engine,
                    reader=reader_options(args), copied_from=args.from_search, protocol=protocol)
    except (KeyError, ValueError, DataError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    for path in paths:
        print(au_table(json.loads(path.read_text())))
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
