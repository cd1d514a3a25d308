"""``python -m suite.data generate | validate | build`` — see ``docs/datasets.md``."""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from ..aus import au_name
from ..emotions import objective_class
from ..paths import cache_dir, results_dir
from . import DATASETS, DataError, build_cache, read_release, synthetic_root
from .registry import default_releases, get_release
from .options import add_reader_arguments, reader_options
from .release import check_frames_decode


def _reader_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, choices=DATASETS, help="which release")
    p.add_argument("--root", type=Path, help="the release folder holding the coding spreadsheet, e.g. /data/CASME2, /data/SAMM or /data/CASME3 "
                                             "(default: the synthetic release under results/)")
    add_reader_arguments(p)


def _release(args, annotations_only=False):
    if args.root is None:
        args.root = synthetic_root(args.dataset, results_dir())
        print(f"no --root: using the synthetic {args.dataset} release at {args.root}", file=sys.stderr)
    reader = reader_options(args)
    reader.check([args.dataset])
    return read_release(args.dataset, args.root, annotations_only=annotations_only, **reader.for_dataset(args.dataset))


def cmd_generate(args) -> int:
    from .synthetic import SyntheticSpec, generate

    spec = SyntheticSpec.preset(args.scale, raw=args.raw, casme2_sheet=args.casme2_sheet)
    roots = generate(args.out, args.seed, spec, releases=args.datasets or None)
    for name, root in roots.items():
        print(f"{name}: {root}")
    print(f"truth (labels, landmarks): {Path(args.out) / 'truth'}")
    return 0


def objective_agreement(samples) -> dict | None:
    """How often the suite's objective-class rules, applied to every coded AU of a clip, give the
    class the release's own column says — per class of the column (None: no such column)."""
    coded = [s for s in samples if s.objective_class is not None and not s.aus_unknown]
    if not coded:
        return None
    per_class = {}
    for s in coded:
        c = per_class.setdefault(str(s.objective_class), {"clips": 0, "agree": 0})
        c["clips"] += 1
        c["agree"] += objective_class(s.aus) == s.objective_class
    return {"clips": len(coded), "agree": sum(c["agree"] for c in per_class.values()),
            "per_class": dict(sorted(per_class.items()))}


def validation_summary(release) -> dict:
    aus = get_release(release.dataset).aus
    known = [s for s in release.samples if not set(aus) & set(s.aus_unknown)]
    counts = Counter(a for s in release.samples for a in s.aus if a not in s.aus_unknown)
    return {
        "dataset": release.dataset,
        "root": str(release.root),
        "sheet": str(release.sheet),
        "samples": len(release.samples),
        "subjects": len({s.subject for s in release.samples}),
        "samples_with_known_aus": len(known),
        "au_counts": {au_name(a): counts.get(a, 0) for a in aus},
        "au_labels_unknown": {au_name(a): sum(a in s.aus_unknown for s in release.samples) for a in aus},
        "emotions": dict(Counter(s.emotion for s in release.samples)),
        "objective_rule_agreement": objective_agreement(release.samples),
        "problems": [p.as_dict() for p in release.problems],
        "fatal": len(release.fatal),
    }


def cmd_validate(args) -> int:
    release = _release(args, args.annotations_only)
    if not args.annotations_only:
        release.problems += check_frames_decode(release.samples)
    summary = validation_summary(release)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['dataset']}: {summary['sheet']}")
        print(f"  samples kept: {summary['samples']} ({summary['samples_with_known_aus']} with known AUs), subjects: {summary['subjects']}")
        print("  AU positives: " + ", ".join(f"{k} {v}" for k, v in summary["au_counts"].items()))
        print("  AU labels unknown: " + ", ".join(f"{k} {v}" for k, v in summary["au_labels_unknown"].items()))
        agreement = summary["objective_rule_agreement"]
        if agreement:
            print(f"  objective-class rules on the coded AUs reproduce the release's column for {agreement['agree']} of "
                  f"{agreement['clips']} clips: " + ", ".join(f"class {k} {v['agree']}/{v['clips']}" for k, v in agreement["per_class"].items()))
        print(f"  problems: {len(release.problems)} ({summary['fatal']} fatal)")
        for p in release.problems:
            print(f"    {p}")
        print("OK: ready to build" if not summary["fatal"] else "NOT READY: fix the ERROR lines above")
    return 1 if summary["fatal"] else 0


def cmd_build(args) -> int:
    release = _release(args)
    result = build_cache(release, args.cache_dir or cache_dir(results_dir()), image_size=args.image_size, flow=args.flow)
    print(f"{'cache hit' if result.hit else 'built'}: {result.path} ({len(release.samples)} samples, fingerprint {result.fingerprint[:16]})")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suite.data", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write synthetic release folders (default: CASME II and SAMM)")
    g.add_argument("--out", required=True, type=Path, help="folder to write CASME2/, SAMM/ (CASME3/, …) and truth/ into")
    g.add_argument("--datasets", nargs="+", choices=DATASETS, metavar="DATASET",
                   help=f"which releases to write, of {', '.join(DATASETS)} (default: {' '.join(default_releases())})")
    g.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    g.add_argument("--scale", default="small", choices=["small", "full"],
                   help="small: 8+7(+6) subjects, seconds; full: the real releases' subjects, clips and clip lengths (default: %(default)s)")
    g.add_argument("--raw", action="store_true", help="also write the CASME II raw frame folders")
    g.add_argument("--casme2-sheet", default="20140508", choices=["20140508", "20190701"],
                   help="which CASME II coding sheet to write; 20190701 has the objective-class column (default: %(default)s)")
    v = sub.add_parser("validate", help="check a release installation and list every problem")
    _reader_args(v)
    v.add_argument("--annotations-only", action="store_true", help="read only the coding spreadsheet")
    v.add_argument("--json", action="store_true", help="print the summary as JSON")
    b = sub.add_parser("build", help="preprocess a release into the Arrow cache")
    _reader_args(b)
    b.add_argument("--image-size", type=int, default=112, help="frame size in pixels (112: the tiny CLIP; 224: ViT-B) (default: %(default)s)")
    b.add_argument("--flow", action="store_true", help="also compute onset→apex optical flow")
    b.add_argument("--cache-dir", type=Path, help="where caches live (default: <results>/cache)")
    args = parser.parse_args(argv)
    try:
        return {"generate": cmd_generate, "validate": cmd_validate, "build": cmd_build}[args.cmd](args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
