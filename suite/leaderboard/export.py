"""Paper-ready tables of the leaderboard: LaTeX (booktabs, via pandas' Styler), CSV and Markdown.

The same rows and numbers as the page (``page.measured_views``): the ranked detection table of
one F1 variant — one row per method under a regime where no test subject's labels made any
choice — and its per-AU table. Every caption says the F1 variant, the pooling, the protocol, the
AU lists and, where it applies, that the numbers are not comparable with published ones."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..aus import DATASET_AUS
from ..provenance import not_comparable
from .page import DATASET_NAMES, SELECTION_LABELS, Row, cell_parts, measured_views

FORMATS = ("latex", "csv", "md")


def caption(variant: str, datasets: list[str], kept: list[dict]) -> str:
    aus = "; ".join(f"{DATASET_NAMES[d]}: " + ", ".join(f"AU{a}" for a in DATASET_AUS[d]) for d in datasets)
    why = sorted({w for r in kept for w in not_comparable(r)})
    return (f"Micro-AU detection, {variant} F1 (%) per AU on test predictions pooled over leave-one-subject-out folds, "
            f"averaged over the dataset's AUs ({aus}). Mean ± sd over seeds; in brackets the 95% subject-bootstrap interval "
            f"(BCa), conditional on the chosen models. One row per method; no test subject's labels chose any configuration, "
            f"epoch count or threshold (selection column)."
            + (f" Measured on {' and with '.join(why)}: not comparable with published results." if why else ""))


def detection_frame(rows: list[Row], datasets: list[str], numeric: bool) -> pd.DataFrame:
    out = []
    for r in rows:
        row = {"method": r.method, "selection": SELECTION_LABELS.get(r.selection, r.selection)}
        for d in datasets:
            c = r.cells.get(d)
            name = DATASET_NAMES[d]
            if numeric:
                row.update({f"{name} F1": c.mean if c else np.nan, f"{name} sd": c.std if c and c.std is not None else np.nan,
                            f"{name} CI low": c.lo if c and c.lo is not None else np.nan,
                            f"{name} CI high": c.hi if c and c.hi is not None else np.nan})
            else:
                row[f"{name} F1"] = " ".join(x for x in cell_parts(c) if x)
            row[f"{name} seeds"] = c.n if c else 0
        row["average"] = r.average if numeric else ("–" if r.average is None else f"{r.average:.1f}")
        row["rank"] = r.rank if numeric else ("–" if r.rank is None else f"{r.rank:.1f}")
        out.append(row)
    return pd.DataFrame(out)


def per_au_frame(rows: list[Row], datasets: list[str], variant: str) -> pd.DataFrame:
    """Per dataset and method, the per-AU F1 (%) of the variant, mean over the row's seeds."""
    out = []
    for r in rows:
        for d in datasets:
            recs = [x for x in r.records if x["dataset"] == d and "f1" in x]
            if recs:
                aus = [f"AU{a}" for a in DATASET_AUS[d]]
                out.append({"dataset": DATASET_NAMES[d], "method": r.method,
                            **{a: 100 * float(np.mean([x["f1"][variant]["per_au"][a] for x in recs])) for a in aus}})
    return pd.DataFrame(out)


def export(results: Path, fmt: str, out: Path, variant: str | None = None) -> list[Path]:
    """Write the detection table (``out``) and the per-AU table (``out`` with ``-per-au``);
    ``variant`` defaults to the page's headline variant. Returns the files written."""
    from ..results import write_atomic

    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {FORMATS}")
    _, kept, _, views, datasets = measured_views(results)
    view = next((v for v in views if v["variant"] == variant), None) if variant else views[0]
    if view is None:
        raise ValueError(f"--variant {variant!r}: choose one of {[v['variant'] for v in views]}")
    text = caption(view["variant"], datasets, kept)
    au_caption = f"Per-AU {view['variant']} F1 (%) of the rows of the detection table, pooled over folds, mean over seeds."
    tables = [(out, detection_frame(view["rows"], datasets, numeric=fmt == "csv"), text),
              (out.with_name(out.stem + "-per-au" + out.suffix), per_au_frame(view["rows"], datasets, view["variant"]), au_caption)]
    written = []
    for path, frame, cap in tables:
        if fmt == "csv":
            body = frame.to_csv(index=False, float_format="%.1f")
        elif fmt == "md":
            body = f"{cap}\n\n" + frame.to_markdown(index=False, floatfmt=".1f", missingval="–") + "\n"
        else:
            styler = frame.style.hide(axis="index").format(precision=1, na_rep="–", escape="latex")
            body = styler.to_latex(hrules=True, caption=cap.replace("%", r"\%"), position_float="centering",
                                   label=f"tab:micro-au-{path.stem}")
        write_atomic(path, body.encode())
        written.append(path)
    return written
