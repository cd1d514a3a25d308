"""The leaderboard's table model and statistics: one row per (method, regime, configuration or
search) with a cell per dataset (mean ± sd over seeds, the subject-bootstrap interval), ranked
rows under the headline regimes and the rest in their own unranked groups, ranks, win rates,
best/second marks, the headline method's paired tests and the MER rows. The page
(``page``) and the paper exports (``export``) both show these; neither computes a number itself.
Statistics: ``suite.stats``; regimes: ``suite.regimes``."""
from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..metrics import F1_LABELS, F1_VARIANTS
from ..regimes import RANKED, UNRANKED
from ..stats import bootstrap_interval, holm, interval_label, interval_reliable, paired_test
from ..data.registry import default_releases
from ..evaluation import evaluation_of
from .records import DATASET_NAMES, f1_of, load_records, part_key, record_counts, release_parts, split_fingerprints

# the warnings a detection table carries where records chose with different F1 variants (page and exports)
MIXED_METRICS_NOTE = "records here chose with different variants — each such row is labelled"
HEADLINE_METHOD = "micro_au_clip"  # compared, paired over subjects, with every other ranked method


@dataclass
class Cell:
    mean: float
    std: float | None  # over seeds; None for one seed (undefined, not zero)
    n: int
    fold_mean: float
    lo: float | None = None  # subject-bootstrap interval of the row's F1 (``suite.stats``)
    hi: float | None = None
    counts: np.ndarray | None = field(default=None, repr=False)  # per seed, per subject [R, S, K, 4]

    @property
    def reliable(self) -> bool:
        """Whether its interval rests on enough subjects to be shown as a plain 95 % interval."""
        return self.counts is None or interval_reliable(self.counts.shape[1])


@dataclass
class Row:
    key: str
    method: str
    selection: str
    config: str
    cells: dict = field(default_factory=dict)  # dataset → Cell
    records: list = field(default_factory=list)
    average: float | None = None
    rank: float | None = None
    win_rate: float | None = None
    marks: dict = field(default_factory=dict)  # column → "best" | "second"
    legacy: bool = False


def _row_key(r: dict) -> tuple[str, str, str]:
    """(method, selection, group): a search's records group by its name; other runs by their
    hyper-parameters (a short hash), so the same configuration on CASME II and SAMM is one row."""
    if r.get("search"):
        return r["method"], r.get("selection", "?"), r["search"]
    config = hashlib.sha1(json.dumps(r.get("hparams"), sort_keys=True, default=str).encode()).hexdigest()[:10]
    return r["method"], r.get("selection", "?"), config


def cell_parts(cell: Cell | None) -> tuple[str, str]:
    """A cell as printed everywhere (page and exports): ("mean ± sd over seeds" — sd for two or
    more seeds only —, "[subject-bootstrap interval]" or "")."""
    if cell is None:
        return "–", ""
    main = f"{cell.mean:.1f}" + (f" ± {cell.std:.1f}" if cell.std is not None else "")
    return main, (f"[{cell.lo:.1f}, {cell.hi:.1f}]{'' if cell.reliable else TOO_FEW_MARK}" if cell.lo is not None else "")


TOO_FEW_MARK = "*"  # after an interval over fewer than suite.stats.MIN_RELIABLE_SUBJECTS subjects


def interval_notes(rows: list[Row], datasets: list[str], variant: str) -> dict[str, str]:
    """Per dataset, what its cells' intervals are (``suite.stats.interval_label``): the method and
    the coverage simulated for that regime, or "too few subjects" with the mark cells carry."""
    notes = {}
    for d in datasets:
        n = next((r.cells[d].counts.shape[1] for r in rows if d in r.cells and r.cells[d].counts is not None), None)
        if n is not None:
            notes[d] = interval_label(n, variant, d) + ("" if interval_reliable(n) else f"; such intervals are marked {TOO_FEW_MARK}")
    return notes


def chose_with(row: Row, variant: str) -> str | None:
    """A row's label where its records chose (epochs, thresholds, search objective) with another F1
    variant than the table's: "chose with macro F1"; None where they chose with ``variant``."""
    metric = (row.records[0].get("metric") or "binary") if row.records else variant
    return None if metric == variant else f"chose with {metric} F1"


def mixed_metrics(records: list[dict]) -> bool:
    """Whether the records chose with different F1 variants (then the tables label each such row)."""
    return len({r.get("metric") or "binary" for r in records}) > 1


def detection_rows(records: list[dict], datasets: list[str], variant: str = "binary", average: bool = True) -> list[Row]:
    """One row per (method, selection, config or search), F1 in ``variant``; a search's per-fold
    choices re-run with final seeds replace its search-seed record in the row. ``average``: the
    row's mean over the columns (off where the columns are parts of one figure: a composite's releases)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(*_row_key(r), bool(r.get("_legacy")))].append(r)
    rows = []
    for (method, selection, config, legacy), recs in groups.items():
        if any(r.get("seed_role") == "final" for r in recs):
            recs = [r for r in recs if r.get("seed_role") == "final"]
        row = Row(f"{method}|{selection}|{config}{'|legacy' if legacy else ''}", method, selection, config, records=recs, legacy=legacy)
        for d in datasets:
            vals = sorted((r for r in recs if r["dataset"] == d), key=lambda r: r.get("seed", 0))
            if vals and all(f1_of(r, variant) is not None for r in vals):
                f1 = np.array([f1_of(r, variant) for r in vals]) * 100
                std = float(f1.std(ddof=1)) if len(f1) > 1 else None  # undefined for one seed, not zero
                counts = [record_counts(r) for r in vals]
                stacked = np.stack(counts) if all(c is not None for c in counts) and len({c.shape for c in counts}) == 1 else None
                lo, hi = (100 * x for x in bootstrap_interval(stacked, variant)) if stacked is not None else (None, None)
                row.cells[d] = Cell(float(f1.mean()), std, len(vals), float(np.mean([f1_of(r, variant, "fold_mean") for r in vals]) * 100),
                                    lo, hi, stacked)
        if average and all(d in row.cells for d in datasets):
            row.average = float(np.mean([row.cells[d].mean for d in datasets]))
        rows.append(row)
    return rows


def split_regimes(rows: list[Row], datasets: list[str]) -> tuple[list[Row], list[Row], dict[str, list[Row]], list[Row]]:
    """(headline rows: one per method, ranked; other runs under a headline regime, unranked;
    optimistic regimes → their rows; legacy rows). A method's headline row is its strictly nested
    search if it has one (then a data-independent shared search, an inner-validation run, a
    fixed run), the one covering the most datasets and seeds."""
    legacy = [r for r in rows if r.legacy]
    current = [r for r in rows if not r.legacy]
    priority = {label: i for i, label in enumerate(RANKED)}
    candidates = [r for r in current if r.selection in priority]
    best: dict[str, Row] = {}
    for r in sorted(candidates, key=lambda r: (priority[r.selection], -len(r.cells), -len(r.records), r.key)):
        best.setdefault(r.method, r)
    headline = list(best.values())
    others = [r for r in candidates if best[r.method] is not r]
    optimistic = {sel: [r for r in current if r.selection == sel] for sel in UNRANKED}
    rank_rows(headline, datasets)
    for group in (others, *optimistic.values(), legacy):
        group.sort(key=lambda r: (r.method, r.key))
    return headline, others, {k: v for k, v in optimistic.items() if v}, legacy


def rank_rows(rows: list[Row], datasets: list[str]) -> None:
    """Rank = mean over datasets of the row's rank there; win rate = share of pairwise
    comparisons (same dataset, another row) it wins. Sorted by rank, then average."""
    ranks = defaultdict(list)
    wins, comps = Counter(), Counter()
    ranked = rows
    for d in datasets:
        present = sorted((r for r in ranked if d in r.cells), key=lambda r: -r.cells[d].mean)
        for i, r in enumerate(present):
            ranks[r.key].append(1 + sum(1 for o in present if o.cells[d].mean > r.cells[d].mean))
            for o in present:
                if o is not r:
                    comps[r.key] += 1
                    wins[r.key] += r.cells[d].mean > o.cells[d].mean
    for r in rows:
        r.rank = float(np.mean(ranks[r.key])) if ranks[r.key] else None
        r.win_rate = wins[r.key] / comps[r.key] if comps[r.key] else None
    rows.sort(key=lambda r: (r.rank if r.rank is not None else 1e9, -(r.average or 0), r.key))
    for column in [*datasets, "average"]:
        values = sorted({(r.cells[column].mean if column in r.cells else r.average) for r in ranked
                         if (column in r.cells if column != "average" else r.average is not None)}, reverse=True)
        for r in ranked:
            v = r.cells[column].mean if column in r.cells else (r.average if column == "average" else None)
            if v is not None and values and v == values[0]:
                r.marks[column] = "best"
            elif v is not None and len(values) > 1 and v == values[1]:
                r.marks[column] = "second"


def paired_comparisons(rows: list[Row], datasets: list[str], variant: str) -> list[dict]:
    """The headline method's ranked row against every other ranked row, per dataset: a paired
    permutation test over subjects (``suite.stats.paired_test``), Holm-corrected over the
    comparisons of that dataset."""
    head = next((r for r in rows if r.method == HEADLINE_METHOD), None)
    out = []
    for d in datasets:
        a = head.cells.get(d) if head else None
        if a is None or a.counts is None:
            continue
        found = []
        for r in rows:
            b = r.cells.get(d)
            if r is head or b is None or b.counts is None or b.counts.shape[1:] != a.counts.shape[1:]:
                continue
            seeds = lambda row: sorted(x.get("seed") for x in row.records if x["dataset"] == d)
            found.append({"column": d, "against": r, "same_seeds": seeds(head) == seeds(r),
                          **paired_test(a.counts, b.counts, variant)})
        for c, p in zip(found, holm([c["p"] for c in found])):
            c["p_holm"] = p
        out.extend(found)
    return out


def detection_view(kept: list[dict], datasets: list[str], variant: str, ranked_columns: list[str] | None = None,
                   average: bool = True) -> dict:
    """Every detection table of one protocol section in one F1 variant (the page adds its
    figures); ``ranked_columns``: the columns ranks and marks are computed over (default: all)."""
    rows = detection_rows(kept, datasets, variant, average)
    headline, others, optimistic, legacy = split_regimes(rows, ranked_columns or datasets)
    return {"variant": variant, "label": F1_LABELS[variant], "rows": headline, "other_rows": others, "optimistic": optimistic,
            "legacy_rows": legacy, "comparisons": paired_comparisons(headline, datasets, variant), "all_rows": rows,
            "interval_notes": interval_notes(rows, datasets, variant)}


def _variants(kept: list[dict]) -> list[str]:
    """The F1 variants, the one the records chose with first."""
    chosen_with = Counter(r.get("metric", "binary") for r in kept)
    headline_variant = max(F1_VARIANTS, key=lambda v: (chosen_with[v], v == "binary"))
    return sorted(F1_VARIANTS, key=lambda v: v != headline_variant)


def measured_views(results: Path) -> tuple[list[dict], list[dict], list[dict], list[dict], list[str]]:
    """(all records, the kept ones, the flagged ones, one ``detection_view`` per F1 variant of the
    leave-one-subject-out section — the variant the records chose with first —, its datasets):
    what the page and the exports show first. Cross-dataset evaluations: ``cross_sections``."""
    records = load_records(results)
    kept, flagged = split_fingerprints(records)
    loso = [r for r in kept if section_of(r) == "loso"]
    measured = {r["dataset"] for r in records if section_of(r) == "loso"}
    # the default releases' columns always (a missing one shows as a gap), any other release's when it has records
    datasets = [d for d in DATASET_NAMES if d in default_releases() or d in measured]
    views = [detection_view(loso, datasets, v) for v in _variants(kept)]
    return records, kept, flagged, views, datasets


def section_of(record: dict) -> str:
    """The protocol section a record's figures belong to: ``loso`` for every release under
    leave-one-subject-out, else its cross-dataset evaluation's key (``suite.evaluation``)."""
    return evaluation_of(record["dataset"]).section


def cross_sections(kept: list[dict]) -> list[dict]:
    """One section per cross-dataset evaluation with records (a transfer, a composite), never
    ranked with another: its columns (a composite: pooled, then each release's part of the same
    predictions, ranked on the pooled column only), their names, and one ``detection_view`` per
    F1 variant."""
    out = []
    for key in sorted({r["dataset"] for r in kept if section_of(r) != "loso"}):
        evaluation = evaluation_of(key)
        records = [r for r in kept if r["dataset"] == key]
        columns, names = [key], {key: f"{evaluation.title}" + (", pooled" if evaluation.kind == "composite" else "")}
        if evaluation.kind == "composite":
            for release in evaluation.releases:
                columns.append(part_key(key, release))
                names[part_key(key, release)] = f"{DATASET_NAMES[release]} part"
            records = records + [part for r in records for part in release_parts(r, evaluation.releases)]
        out.append({"key": key, "evaluation": evaluation, "columns": columns, "names": names, "n_records": len(records),
                    "views": [detection_view(records, columns, v, ranked_columns=[key], average=False) for v in _variants(kept)]})
    return out


def mer_rows(rows: list[Row], datasets: list[str]) -> list[dict]:
    out = []
    for r in rows:
        for d in datasets:
            recs = [x for x in r.records if x["dataset"] == d]
            for task in sorted({t for x in recs for t in x.get("mer", {})}):
                vals = [x["mer"][task] for x in recs if task in x.get("mer", {})]
                oracle = [v["oracle"]["uf1"] for v in vals if "oracle" in v]
                out.append({"row": r, "dataset": DATASET_NAMES[d], "task": task, "n": len(vals),
                            **{m: 100 * float(np.mean([v[m] for v in vals])) for m in ("uf1", "uar", "wf1", "accuracy")},
                            "oracle_uf1": 100 * float(np.mean(oracle)) if oracle else None})
    return out
