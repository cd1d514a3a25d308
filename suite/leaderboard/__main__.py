"""python -m suite.leaderboard: every record under the results folder → one self-contained HTML
page (results/leaderboard.html), or the same tables for a paper (--format latex|csv|md).

examples:
  python -m suite.leaderboard
  python -m suite.leaderboard --format latex --out paper/table.tex     # also paper/table-per-au.tex
  python -m suite.leaderboard --format csv --variant macro
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

SUFFIX = {"latex": ".tex", "csv": ".csv", "md": ".md"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m suite.leaderboard", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, help="results folder (default: ./results or $MICRO_AU_RESULTS)")
    p.add_argument("--format", default="html", choices=["html", *SUFFIX],
                   help="html: the page; latex (booktabs), csv, md: the ranked detection table and its per-AU table (default: %(default)s)")
    p.add_argument("--variant", choices=["binary", "macro"], help="F1 variant of a table export (default: the page's headline variant)")
    p.add_argument("--out", type=Path, help="output file (default: <results>/leaderboard.html, or <results>/leaderboard.tex|csv|md)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from ..paths import results_dir

    results = results_dir(args.results)
    if args.format == "html":
        from .page import render

        print(render(results, args.out))
        return 0
    from .export import export

    for path in export(results, args.format, args.out or results / f"leaderboard{SUFFIX[args.format]}", args.variant):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
