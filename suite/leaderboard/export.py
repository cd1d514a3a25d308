"""Paper-ready tables of the leaderboard: LaTeX (booktabs), CSV and Markdown.

The same rows, numbers, labels and warnings as the page, from the table model both read
(``table.measured_views``, ``table.chose_with``, ``table.MIXED_METRICS_NOTE``): the ranked
detection table of one F1 variant — one row per method under a regime where no test subject's
labels made any choice — and its per-AU table. Every caption says the F1 variant, the pooling, the protocol, the AU lists, the interval and
every warning of the page: a row that chose with another F1 variant (marked † in LaTeX; labelled
as on the page in Markdown; a ``warnings`` column in CSV, which has no caption), records left out
for another data fingerprint, and where it applies that the numbers are not comparable with
published ones.

The LaTeX tables fit a one-column ``article`` page (``\\textwidth`` 345 pt) for the main job's
methods: short regime names (spelled out in the caption), each dataset's cell on two lines
(mean ± sd over seeds; below, smaller, the interval) with its seed count beside it, and the per-AU
table with one AU column per AU number and a row group per dataset."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..aus import DATASET_AUS
from ..metrics import F1_LABELS
from ..provenance import not_comparable
from ..stats import INTERVAL_LABEL
from ..regimes import short, title
from .records import DATASET_NAMES, aus_text
from .table import MIXED_METRICS_NOTE, Row, cell_parts, chose_with, cross_sections, interval_notes, measured_views, mixed_metrics, section_of

FORMATS = ("latex", "csv", "md")
MARK = "†"  # a row with a warning (LaTeX: the regime cell; the caption says what)


def row_warnings(row: Row, variant: str) -> list[str]:
    """The page's labels of one row that warn: it chose with another F1 variant; it was measured
    on data or with a backbone that make it not comparable with published results."""
    chose = chose_with(row, variant)
    why = sorted({w for r in row.records for w in not_comparable(r)})
    return ([chose] if chose else []) + ([f"not comparable with published results ({' and '.join(why)})"] if why else [])


def warnings_text(rows: list[Row], variant: str, kept: list[dict], flagged: list[dict], mark: str = MARK) -> str:
    """Every warning the page shows about these rows, as caption sentences."""
    out = []
    chosen = [(r.method, chose_with(r, variant)) for r in rows if chose_with(r, variant)]
    if chosen:
        head = MIXED_METRICS_NOTE[:1].upper() + MIXED_METRICS_NOTE[1:] if mixed_metrics(kept) else "Rows labelled"
        out.append(f"{head}{f' ({mark})' if mark else ''}: " + "; ".join(f"{m}, {c}" for m, c in chosen)
                   + f" (not with this table's {variant} F1).")
    why = sorted({w for r in kept for w in not_comparable(r)})
    if why:
        out.append(f"Measured on {' and with '.join(why)}: not comparable with published results.")
    if flagged:
        out.append(f"{len(flagged)} record{'s' if len(flagged) > 1 else ''} with another data fingerprint than the majority of "
                   f"{'its' if len(flagged) == 1 else 'their'} dataset left out of every table.")
    return " ".join(out)


def intervals_text(rows: list[Row], datasets: list[str], variant: str, names=DATASET_NAMES) -> str:
    """The page's interval legend, per dataset (``table.interval_notes``)."""
    notes = interval_notes(rows, datasets, variant)
    return "subject-bootstrap interval, conditional on the chosen models (" + \
        "; ".join(f"{names[d]}: {n}" for d, n in notes.items()) + ")" if notes else INTERVAL_LABEL


def loso_sentence(datasets: list[str]) -> str:
    return (f"per AU on test predictions pooled over leave-one-subject-out folds, averaged over the dataset's AUs ({aus_text(datasets)})")


def cross_sentence(evaluation) -> str:
    """What a cross-dataset section's figures are, for its caption (the page says the same)."""
    names = lambda rs: " and ".join(DATASET_NAMES[r] for r in rs)  # noqa: E731
    aus = ", ".join(f"AU{a}" for a in evaluation.aus)
    if evaluation.kind == "transfer":
        return (f"trained on every {names(evaluation.train_releases)} subject and tested on every {names(evaluation.test_releases)} "
                f"clip (cross-dataset transfer; every choice on {names(evaluation.train_releases)}'s subjects only), per AU on the "
                f"test predictions, averaged over the AUs both evaluate ({aus}); the interval resamples "
                f"{names(evaluation.test_releases)}'s subjects")
    return (f"per AU on test predictions pooled over leave-one-subject-out folds over the union of {names(evaluation.releases)} "
            f"(composite; subjects namespaced by release), averaged over the AUs every release evaluates ({aus}); "
            "ranked on the pooled column, each release's part shown unranked")


def caption(variant: str, datasets: list[str], rows: list[Row], kept: list[dict], flagged: list[dict], fmt: str = "latex",
            names=DATASET_NAMES, what: str | None = None) -> str:
    """``what``: the protocol sentence (default: leave-one-subject-out on each dataset, ``loso_sentence``)."""
    regimes = [s for s in dict.fromkeys(r.selection for r in rows)]
    if fmt == "latex":
        cells = ("Each cell: mean ± sd over seeds (sd from two seeds on), below it in brackets the "
                 f"{intervals_text(rows, datasets, variant, names)}; n: seeds; avg.: mean over the datasets. Regime: " + "; ".join(f"{short(s)}: {title(s)}" for s in regimes)
                 + ". Bold: best, underlined: second.")
    else:
        cells = (f"Each cell: mean ± sd over seeds (sd from two seeds on), in brackets the {intervals_text(rows, datasets, variant, names)}; seeds: their number."
                 + (" Bold: best, italic: second." if fmt == "md" else ""))
    return (f"Micro-AU detection, {F1_LABELS[variant]}, in %, {what or loso_sentence(datasets)}. {cells} One row per method, ranked "
            f"(rank: mean over the ranked columns of the row's rank); no test subject's labels chose any configuration, epoch count or threshold. "
            + warnings_text(rows, variant, kept, flagged, MARK if fmt == "latex" else "")).strip()


def au_caption(variant: str, rows: list[Row], kept: list[dict], flagged: list[dict], fmt: str = "latex") -> str:
    return (f"Per-AU {F1_LABELS[variant]}, in %, of the rows of the detection table, pooled over folds, mean over seeds"
            + ("; –: an AU the dataset does not evaluate. " if fmt == "latex" else ". ")
            + warnings_text(rows, variant, kept, flagged, MARK if fmt == "latex" else "")).strip()


def detection_frame(rows: list[Row], datasets: list[str], numeric: bool, variant: str | None = None, names=DATASET_NAMES) -> pd.DataFrame:
    """CSV (``numeric``: numbers, a ``warnings`` column) and Markdown (cells as on the page,
    best in bold and second in italics, the selection labelled as on the page)."""
    out = []
    notes = interval_notes(rows, datasets, variant) if numeric and variant else {}
    for r in rows:
        chose = chose_with(r, variant) if variant else None
        label = title(r.selection)
        row = {"method": r.method, "selection": label if numeric or not chose else f"{label} ({chose})"}
        for d in datasets:
            c = r.cells.get(d)
            name = names[d]
            if numeric:
                row.update({f"{name} F1": c.mean if c else np.nan, f"{name} sd": c.std if c and c.std is not None else np.nan,
                            f"{name} CI low": c.lo if c and c.lo is not None else np.nan,
                            f"{name} CI high": c.hi if c and c.hi is not None else np.nan,
                            f"{name} CI": notes.get(d, "") if c and c.lo is not None else ""})  # what the interval is, as the page says it
            else:
                main, ci = cell_parts(c)
                emph = {"best": "**", "second": "*"}.get(r.marks.get(d), "") if c else ""
                row[f"{name} F1"] = f"{emph}{main}{emph}" + (f" {ci}" if ci else "")
            row[f"{name} seeds"] = c.n if c else 0
        if numeric:
            row["average"], row["rank"] = r.average, r.rank
            row["warnings"] = "; ".join(row_warnings(r, variant)) if variant else ""
        else:
            emph = {"best": "**", "second": "*"}.get(r.marks.get("average"), "")
            row["average"] = "–" if r.average is None else f"{emph}{r.average:.1f}{emph}"
            row["rank"] = "–" if r.rank is None else f"{r.rank:.1f}"
        out.append(row)
    return pd.DataFrame(out)


def per_au_frame(rows: list[Row], datasets: list[str], variant: str, names=DATASET_NAMES) -> pd.DataFrame:
    """Per dataset and method, the per-AU F1 (%) of the variant, mean over the row's seeds."""
    out = []
    for r in rows:
        for d in datasets:
            recs = [x for x in r.records if x["dataset"] == d and "f1" in x]
            if recs:
                aus = [f"AU{a}" for a in DATASET_AUS[d]]
                out.append({"dataset": names[d], "method": r.method,
                            **{a: 100 * float(np.mean([x["f1"][variant]["per_au"][a] for x in recs])) for a in aus}})
    return pd.DataFrame(out)


# --- LaTeX ---------------------------------------------------------------------------------------

TEX_CHARS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
             "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
             "—": "---", "–": "--", "±": r"$\pm$", MARK: r"$^\dagger$",
             "→": r"$\rightarrow$", "³": r"\textsuperscript{3}", "≥": r"$\geq$"}


def tex(text: str) -> str:
    """Plain text (method names come from user files) as LaTeX text."""
    return "".join(TEX_CHARS.get(ch, ch) for ch in str(text))


def _emph(text: str, mark: str | None) -> str:
    return {"best": r"\textbf{%s}", "second": r"\underline{%s}"}.get(mark, "%s") % text if mark else text


def _table(body: list[str], columns: str, cap: str, label: str, tabcolsep: str | None = None) -> str:
    """A float with its caption above, the tabular with booktabs rules (``tabcolsep``: the
    table's own column gap, local to the float)."""
    return "\n".join([r"\begin{table}[tbp]", r"\centering", *([rf"\setlength{{\tabcolsep}}{{{tabcolsep}}}"] if tabcolsep else []),
                      rf"\caption{{{tex(cap)}}}", rf"\label{{{label}}}",
                      rf"\begin{{tabular}}{{{columns}}}", r"\toprule", *body, r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])


def detection_latex(rows: list[Row], datasets: list[str], variant: str, cap: str, label: str, names=DATASET_NAMES) -> str:
    """method | regime | per dataset: F1 (two lines: mean ± sd, the interval) and n | average | rank."""
    names = [names[d] for d in datasets]
    body = [" & & " + " & ".join(rf"\multicolumn{{2}}{{c}}{{{tex(n)}}}" for n in names) + r" & & \\",
            "".join(rf"\cmidrule(lr){{{3 + 2 * i}-{4 + 2 * i}}}" for i in range(len(names))),
            "method & regime & " + " & ".join("F1 & n" for _ in names) + r" & avg. & rank \\", r"\midrule"]
    for r in rows:
        cells = []
        for d in datasets:
            c = r.cells.get(d)
            main, ci = cell_parts(c)
            main = _emph(tex(main), r.marks.get(d)) if c else "--"
            cells += [rf"\begin{{tabular}}[t]{{@{{}}r@{{}}}}{main}\\ \footnotesize {tex(ci)}\end{{tabular}}" if ci else main,
                      str(c.n) if c else "--"]
        regime = tex(short(r.selection)) + (tex(MARK) if chose_with(r, variant) else "")
        average = "--" if r.average is None else _emph(f"{r.average:.1f}", r.marks.get("average"))
        body.append(" & ".join([tex(r.method), regime, *cells, average, "--" if r.rank is None else f"{r.rank:.1f}"]) + r" \\")
    return _table(body, "@{}ll" + "rr" * len(datasets) + "rr@{}", cap, label, tabcolsep="5pt")


def per_au_latex(rows: list[Row], datasets: list[str], variant: str, cap: str, label: str, names=DATASET_NAMES) -> str:
    """method | one column per AU number (of any dataset); a row group per dataset."""
    aus = sorted({a for d in datasets for a in DATASET_AUS[d]})
    ncol = 1 + len(aus)
    body = [rf" & \multicolumn{{{len(aus)}}}{{c}}{{AU}} \\", rf"\cmidrule(l){{2-{ncol}}}",
            "method & " + " & ".join(str(a) for a in aus) + r" \\"]
    for d in datasets:
        group = []
        for r in rows:
            recs = [x for x in r.records if x["dataset"] == d and "f1" in x]
            if recs:
                vals = [f"{100 * np.mean([x['f1'][variant]['per_au'][f'AU{a}'] for x in recs]):.1f}" if a in DATASET_AUS[d] else "--"
                        for a in aus]
                group.append(" & ".join([tex(r.method) + (tex(MARK) if chose_with(r, variant) else ""), *vals]) + r" \\")
        if group:
            body += [r"\midrule", rf"\multicolumn{{{ncol}}}{{@{{}}l}}{{\textit{{{tex(names[d])}}}}} \\", *group]
    return _table(body, "@{}l" + "r" * len(aus) + "@{}", cap, label)


def export(results: Path, fmt: str, out: Path, variant: str | None = None) -> list[Path]:
    """Write the leave-one-subject-out detection table (``out``) and its per-AU table (``out`` with
    ``-per-au``), and the same pair for each cross-dataset evaluation with records (``out`` with
    ``-<key>``: one protocol per table, never ranked together); ``variant`` defaults to the page's
    headline variant. Returns the files written."""
    from ..results import write_atomic

    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {FORMATS}")
    _, kept, flagged, views, datasets = measured_views(results)
    if variant and variant not in [v["variant"] for v in views]:
        raise ValueError(f"--variant {variant!r}: choose one of {[v['variant'] for v in views]}")
    pick = lambda vs: next(v for v in vs if v["variant"] == variant) if variant else vs[0]  # noqa: E731
    mine = lambda key, rs: [r for r in rs if section_of(r) == key]  # noqa: E731  a section's captions warn about its own records
    cross = cross_sections(kept)
    sections = [(out, pick(views), datasets, datasets, DATASET_NAMES, None, mine("loso", kept), mine("loso", flagged))]
    if cross and not sections[0][6]:
        sections = []  # no leave-one-subject-out record: no empty table
    for x in cross:
        sections.append((out.with_name(f"{out.stem}-{x['key']}{out.suffix}"), pick(x["views"]), x["columns"], [x["key"]], x["names"],
                         cross_sentence(x["evaluation"]), mine(x["key"], kept), mine(x["key"], flagged)))
    bodies = []
    for path, view, columns, au_columns, names, what, own, own_flagged in sections:
        bodies += _tables(fmt, path, view, columns, au_columns, names, what, own, own_flagged)
    written = []
    for path, body in bodies:
        write_atomic(path, body.encode())
        written.append(path)
    return written


def _tables(fmt: str, out: Path, view: dict, datasets: list[str], au_columns: list[str], names, what: str | None, kept: list[dict],
            flagged: list[dict]) -> list[tuple[Path, str]]:
    """(path, text) of one section's detection table and per-AU table in ``fmt``."""
    v, rows = view["variant"], view["rows"]
    au_out = out.with_name(out.stem + "-per-au" + out.suffix)
    if fmt == "latex":
        return [(out, detection_latex(rows, datasets, v, caption(v, datasets, rows, kept, flagged, names=names, what=what),
                                      f"tab:micro-au-{out.stem}", names)),
                (au_out, per_au_latex(rows, au_columns, v, au_caption(v, rows, kept, flagged), f"tab:micro-au-{au_out.stem}", names))]
    if fmt == "csv":
        au = per_au_frame(rows, au_columns, v, names)
        if len(au):
            by_key = {(names[d], r.method): "; ".join(row_warnings(r, v)) for r in rows for d in au_columns}
            au["warnings"] = [by_key.get((d, m), "") for d, m in zip(au["dataset"], au["method"])]
        return [(out, detection_frame(rows, datasets, numeric=True, variant=v, names=names).to_csv(index=False, float_format="%.1f")),
                (au_out, au.to_csv(index=False, float_format="%.1f"))]
    md = [(out, detection_frame(rows, datasets, numeric=False, variant=v, names=names),
           caption(v, datasets, rows, kept, flagged, "md", names=names, what=what)),
          (au_out, per_au_frame(rows, au_columns, v, names), au_caption(v, rows, kept, flagged, "md"))]
    return [(p, f"{cap}\n\n" + frame.to_markdown(index=False, floatfmt=".1f", missingval="–") + "\n") for p, frame, cap in md]
