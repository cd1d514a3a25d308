"""The leaderboard page: every record under the results folder → one self-contained HTML page
(``results/leaderboard.html``; command line: ``suite/leaderboard/__main__.py``). A pure function of the records, the searches' stored
outputs and ``suite/reported.yaml``.

Tables are computed here and rendered by a Jinja2 template with autoescaping (method names and
parameters come from user files). Figures are matplotlib/seaborn PNGs embedded as base64; no
network, no CDN. Records whose data fingerprint differs from the majority for their dataset are
listed as flagged and left out of every table, never averaged in.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

from ..aus import DATASET_AUS
from ..metrics import F1_LABELS, F1_VARIANTS
from ..provenance import not_comparable
from ..results import write_atomic
from ..regimes import BY_LABEL, RANKED, UNRANKED, title
from ..selection import SCHEMA_VERSION
from ..stats import INTERVAL_LABEL, bootstrap_interval, holm, interval_label, interval_reliable, paired_test, subject_counts

DATASET_NAMES = {"casme2": "CASME II", "samm": "SAMM"}
# the warnings a detection table carries where records chose with different F1 variants (page and exports)
MIXED_METRICS_NOTE = "records here chose with different variants — each such row is labelled"
TASK_LABELS = {"emotion5": "CASME II emotions (5), rule table", "objective": "objective classes, rule table",
               "emotion5_prompt": "CASME II emotions (5), text prompts", "objective_prompt": "objective classes, text prompts"}
HEADLINE_METHOD = "micro_au_clip"  # compared, paired over subjects, with every other ranked method
ABLATIONS = ("micro_au_clip", "micro_au_clip_no_pta", "micro_au_clip_no_gda", "micro_au_clip_no_gdloss", "micro_au_clip_no_miaucl")
REPORTED_FILE = Path(__file__).resolve().parent.parent / "reported.yaml"
PROTOCOL_TEXT = (
    "Leave-one-subject-out outer folds; every clip is predicted once, by the model of its own subject's fold. "
    "F1 per AU on predictions pooled over all folds, averaged over the dataset's AUs "
    "(CASME II: AU1, 2, 4, 7, 12, 14, 15, 17; SAMM: AU2, 4, 7, 12), in two variants: binary (positive class) and "
    "macro (mean of positive- and negative-class F1); every table names its variant. A label the coding sheet leaves "
    "unknown ('?', alternatives that disagree) is masked for that AU only: in neither loss nor metric. "
    "No choice is made on a test subject: fixed epochs, or epochs and thresholds chosen on inner-validation "
    "subjects. A search is strictly nested: every outer fold has its own Optuna study told only that fold's "
    "inner-validation F1, and per fold the configuration best in its own study predicts the test subject. "
    "Optimistic figures (selected on test folds, the deployment configuration, a shared search) are shown in their "
    "own labelled tables and never ranked. Inner-validation scores are 2-fold cross-fitted over subjects."
)


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


def load_records(results: Path) -> list[dict]:
    records = []
    paths = sorted(results.glob("runs/*/*/*/seed*.json")) + sorted(results.glob("searches/*/*/*.json")) + \
        sorted(results.glob("searches/*/*/final/*/seed*.json"))
    for path in paths:
        if path.name == "summary.json" or path.parent.name == "trials":
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if {"method", "dataset", "f1_avg", "data_fingerprint"} <= set(record):
            record["_path"] = str(path)
            records.append(relabel(record))
    return mark_deployment_copies(records)


def mark_deployment_copies(records: list[dict]) -> list[dict]:
    """A fixed-configuration run (``suite.train``) whose hyper-parameters equal a search's
    deployment configuration on the same data is that configuration re-run — chosen on all
    subjects —, however it was typed: labelled ``deployment_copy`` (not ranked), with the search."""
    def key(r):
        hp = {k: v for k, v in (r.get("hparams") or {}).items() if k != "selection"}
        return r["method"], r["dataset"], r["data_fingerprint"], json.dumps(hp, sort_keys=True, default=str)

    deployed = {key(r): r.get("search") for r in records if r.get("selection") == "deployment" and "per_fold" not in (r.get("hparams") or {})}
    for r in records:
        if r.get("selection") in ("inner_validation", "fixed_epochs") and key(r) in deployed:
            r["selection"], r["from_search"] = "deployment_copy", deployed[key(r)]
    return records


def relabel(record: dict) -> dict:
    """Records written before selection labels were strict (no ``schema``) are legacy: relabelled
    where their files say what they were (a nested pick over a shared search; a search's final
    seeds of the best mean-inner configuration = a deployment configuration), never ranked."""
    if record.get("schema", 1) >= SCHEMA_VERSION:
        return record
    record["_legacy"] = True
    if record.get("selection") == "nested":
        record["selection"] = "shared_nested"
    elif record.get("selection") == "inner_validation" and record.get("search"):
        record["selection"] = "deployment"
    return record


def split_fingerprints(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """Keep each dataset's majority data fingerprint; flag the rest."""
    counts = defaultdict(Counter)
    for r in records:
        counts[r["dataset"]][r["data_fingerprint"]] += 1
    majority = {d: max(c.items(), key=lambda kv: (kv[1], kv[0]))[0] for d, c in counts.items()}
    kept = [r for r in records if r["data_fingerprint"] == majority[r["dataset"]]]
    flagged = [r for r in records if r["data_fingerprint"] != majority[r["dataset"]]]
    return kept, flagged


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


def f1_of(record: dict, variant: str, key: str = "pooled") -> float | None:
    """A record's F1 in ``variant``; records written before both variants were stored are binary."""
    if "f1" in record:
        return record["f1"][variant][key]
    if variant == "binary":
        return record["f1_avg"] if key == "pooled" else record["f1_fold_mean"]
    return None


def record_counts(record: dict) -> np.ndarray | None:
    """Per-subject confusion counts [S, K, 4] from the record's predictions (None: an older file
    without per-AU label masks)."""
    import pandas as pd

    if "_counts" not in record:
        path = Path(record["_path"]).with_name(record["predictions"])
        frame = pd.read_parquet(path) if path.exists() else None
        ok = frame is not None and all(f"known_{a}" in frame.columns for a in record["aus"])
        record["_counts"] = subject_counts(frame, [int(a[2:]) for a in record["aus"]])[1] if ok else None
    return record["_counts"]


def detection_rows(records: list[dict], datasets: list[str], variant: str = "binary") -> list[Row]:
    """One row per (method, selection, config or search), F1 in ``variant``; a search's per-fold
    choices re-run with final seeds replace its search-seed record in the row."""
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
        if all(d in row.cells for d in datasets):
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
            found.append({"dataset": DATASET_NAMES[d], "against": r, "same_seeds": seeds(head) == seeds(r),
                          **paired_test(a.counts, b.counts, variant)})
        for c, p in zip(found, holm([c["p"] for c in found])):
            c["p_holm"] = p
        out.extend(found)
    return out


def detection_view(kept: list[dict], datasets: list[str], variant: str) -> dict:
    """Every detection table of the page in one F1 variant (the page adds its figures)."""
    rows = detection_rows(kept, datasets, variant)
    headline, others, optimistic, legacy = split_regimes(rows, datasets)
    return {"variant": variant, "label": F1_LABELS[variant], "rows": headline, "other_rows": others, "optimistic": optimistic,
            "legacy_rows": legacy, "comparisons": paired_comparisons(headline, datasets, variant), "all_rows": rows,
            "interval_notes": interval_notes(rows, datasets, variant)}


def measured_views(results: Path) -> tuple[list[dict], list[dict], list[dict], list[dict], list[str]]:
    """(all records, the kept ones, the flagged ones, one ``detection_view`` per F1 variant — the
    variant the records chose with first —, the datasets): what the page and the exports show."""
    records = load_records(results)
    kept, flagged = split_fingerprints(records)
    datasets = list(DATASET_NAMES)  # both columns always: a missing dataset shows as a gap
    chosen_with = Counter(r.get("metric", "binary") for r in kept)
    headline_variant = max(F1_VARIANTS, key=lambda v: (chosen_with[v], v == "binary"))
    views = [detection_view(kept, datasets, v) for v in sorted(F1_VARIANTS, key=lambda v: v != headline_variant)]
    return records, kept, flagged, views, datasets


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def heatmap(rows: list[Row], dataset: str, variant: str) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    aus = [f"AU{a}" for a in DATASET_AUS[dataset]]
    data = {}
    for r in rows:
        recs = [x for x in r.records if x["dataset"] == dataset]
        if recs:
            name = f"{r.method} [{title(r.selection)}, {r.config}]"
            data[name] = [100 * np.mean([x["f1"][variant]["per_au"].get(a, np.nan) if "f1" in x else
                                         (x["per_au_f1"].get(a, np.nan) if variant == "binary" else np.nan) for x in recs]) for a in aus]
    if not data:
        return None
    frame = pd.DataFrame(data, index=aus).T
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(aus), 0.8 + 0.38 * len(frame)))
    sns.heatmap(frame, annot=True, fmt=".0f", cmap="viridis", vmin=0, vmax=100, cbar_kws={"label": f"{variant} F1 (%)"}, ax=ax)
    ax.set_title(f"Per-AU {variant} F1, {DATASET_NAMES[dataset]}")
    return _png(fig)


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


def search_sections(results: Path, top_k: int = 5) -> list[dict]:
    sections = []
    for summary_path in sorted(results.glob("searches/*/summary.json")):
        summary = json.loads(summary_path.read_text())
        if "selection" not in summary:  # written before strict nesting: its records are listed as legacy
            continue
        section = {**summary, "datasets": [], "plots": []}
        for d in summary["datasets"]:
            docs = slice_docs(Path(d["outputs"]["rounds"]))
            section["datasets"].append({**d, "dataset_name": DATASET_NAMES[d["dataset"]],
                                        "top": top_common(docs, Path(d["records"][d["selection"]]), top_k),
                                        "progress_png": fold_progress(docs, d["selection"], DATASET_NAMES[d["dataset"]])})
        if summary["selection"] == "shared":
            section["plots"] = optuna_plots(summary_path.parent / "optuna.journal")
        sections.append(section)
    return sections


def slice_docs(rounds_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(rounds_dir.glob("r*-p*.json"))]


def top_common(docs: list[dict], record_path: Path, k: int) -> list[dict]:
    """The common candidates (configurations every fold ran) by mean inner-validation F1, with
    their pooled test F1 — the gap between the two is the point. A fold whose study proposed a
    configuration twice counts once (its first task), so every test clip is counted once."""
    import pandas as pd

    from ..metrics import f1_per_au

    record = json.loads(record_path.read_text())
    truth = pd.read_parquet(record_path.with_name(record["predictions"])).set_index("sample_id")
    aus = record["aus"]  # "AU1", …
    by_params: dict[str, dict[int, dict]] = defaultdict(dict)  # configuration → fold → its first task
    for doc in docs:
        for t in doc["tasks"]:
            first = by_params[json.dumps(t["params"], sort_keys=True)].get(t["fold"])
            if t["status"] == "ok" and (first is None or t["number"] < first["number"]):
                by_params[json.dumps(t["params"], sort_keys=True)][t["fold"]] = t  # a re-proposal: each test clip once
    n_folds = record["n_folds"]
    out = []
    for key, per_fold in by_params.items():
        tasks = list(per_fold.values())
        if len(tasks) < n_folds:
            continue
        ids = [s for t in tasks for s in t["test_ids"]]
        pred = np.concatenate([np.asarray(t["test_prob"]) >= np.asarray(t["threshold"]) for t in tasks])
        known = truth.loc[ids, [f"known_{a}" for a in aus]].to_numpy(bool)
        true = truth.loc[ids, [f"true_{a}" for a in aus]].to_numpy(int)
        out.append({"proposal": min(t["number"] for t in tasks), "params": json.loads(key),
                    "inner": 100 * float(np.mean([t["inner_f1"] for t in tasks])),
                    "outer": 100 * float(f1_per_au(true, pred, record.get("metric", "binary"), known).mean())})
    return sorted(out, key=lambda t: (-t["inner"], t["proposal"]))[:k]


def fold_progress(docs: list[dict], selection: str, dataset_name: str) -> str | None:
    """Inner-validation F1 (%) of every proposal, one line per fold study (integer proposal ticks)."""
    rows = [{"proposal": t["number"], "fold": t["fold"], "inner F1 (%)": 100 * t["inner_f1"]}
            for d in docs for t in d["tasks"] if t["status"] == "ok"]
    if len({r["proposal"] for r in rows}) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    frame = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    sns.lineplot(frame, x="proposal", y="inner F1 (%)", hue="fold", palette="viridis", marker="o", ax=ax, legend=False)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, 100)
    study = "one study per fold" if selection == "strict_nested" else "one shared study"
    ax.set_title(f"{dataset_name}: inner-validation F1 of each proposal, one line per fold ({study})", fontsize=9)
    return _png(fig)


def optuna_plots(journal: Path) -> list[dict]:
    if not journal.exists():
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from matplotlib.ticker import MaxNLocator
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.visualization import matplotlib as ovm

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    plots = []
    # no custom ``target``: with one, Optuna drops the best-value line, reverses the colour scale and (its
    # default PED-ANOVA evaluator) ranks parameters by how they reach *low* values — low F1 here
    label = {"target_name": "inner-validation F1 (0–1)"}
    for name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        for title, fn, need, size in (("optimization history", ovm.plot_optimization_history, 1, (6.5, 3.6)),
                                      ("parallel coordinates", ovm.plot_parallel_coordinate, 2, (9.0, 4.5)),
                                      ("parameter importances", ovm.plot_param_importances, 2, (6.5, 3.6))):
            if len(complete) < need:
                continue
            try:
                ax = fn(study, **label)
            except (ValueError, RuntimeError, ZeroDivisionError) as e:  # e.g. importances with one distinct value
                plots.append({"study": name, "title": title, "png": None, "note": str(e)[:200]})
                continue
            axes = np.ravel(ax)
            if title == "optimization history":
                axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers
            fig = ax if hasattr(ax, "savefig") else axes[0].figure
            fig.set_size_inches(*size)
            note = (f"rests on {len(complete)} trials: too few for importances to mean much (read them from ~10 trials on)"
                    if title == "parameter importances" and len(complete) < 10 else None)
            plots.append({"study": name, "title": title, "png": _png(fig), "note": note})
            plt.close("all")
    return plots


def load_reported() -> list[dict]:
    return yaml.safe_load(REPORTED_FILE.read_text())


def data_label(record: dict) -> str:
    d = record.get("data")
    if not d:
        return f"not recorded (record written before provenance), fingerprint {record['data_fingerprint'][:12]}"
    reading = "".join(f", read with {k}={v}" for k, v in d.get("reading", {}).items())  # non-default AU rules, frames, boxes
    if d["kind"] == "synthetic":
        return f"synthetic release (generator seed {d['seed']}, {d['scale']} scale), fingerprint {d['fingerprint'][:12]}{reading}"
    sha = d.get("label_sha256")
    return f"release {d['root']} ({d['label_file']}{', sha256 ' + sha[:12] if sha else ''}), fingerprint {d['fingerprint'][:12]}{reading}"


def provenance(records: list[dict]) -> dict:
    """What the shown numbers were measured on and with, for the top of the page."""
    def uniq(key):
        return sorted({json.dumps(r.get(key), sort_keys=True) if isinstance(r.get(key), dict) else str(r.get(key)) for r in records})
    created = sorted(r["created"] for r in records if r.get("created"))
    return {"git_commits": uniq("git_commit"), "devices": uniq("device"),
            "suite_versions": sorted({str(r.get("versions", {}).get("micro-au-suite")) for r in records}),
            "versions": sorted({json.dumps(r.get("versions"), sort_keys=True) for r in records}),
            "data": {DATASET_NAMES.get(d, d): sorted({data_label(r) for r in records if r["dataset"] == d}) for d in sorted({r["dataset"] for r in records})},
            "backbones": sorted({r.get("backbone", {}).get("label", "not recorded") for r in records if r.get("backbone", {}).get("kind") != "none"}),
            "measured": (created[0][:10], created[-1][:10]) if created else None,
            "not_comparable": sorted({why for r in records for why in not_comparable(r)}),
            "presets": sorted({(r["preset"], r.get("preset_source", "")) for r in records if r.get("preset")}),
            "commands": sorted({r["command"] for r in records if r.get("command")})}


def build_context(results: Path) -> dict:
    records, kept, flagged, views, datasets = measured_views(results)
    for v in views:
        v["heatmaps"] = [(DATASET_NAMES[d], heatmap(v["rows"], d, v["variant"])) for d in datasets if any(d in r.cells for r in v["rows"])]
    main = views[0]
    ablation = [r for r in main["all_rows"] if r.method in ABLATIONS and r.selection == "fixed_epochs" and not r.legacy]
    reported = load_reported()
    table_data = {v["variant"]: [{"method": r.method, "selection": r.selection, "config": r.config, "rank": r.rank, "win_rate": r.win_rate,
                                  "average": r.average, "legacy": r.legacy, "ranked": r in v["rows"],
                                  **{d: {k: x for k, x in vars(r.cells[d]).items() if k != "counts"} for d in r.cells}}
                                 for r in v["all_rows"]] for v in views}
    return {
        "empty": not records,
        "datasets": datasets, "dataset_names": DATASET_NAMES, "views": views, "rows": main["rows"],
        "mixed_metrics": mixed_metrics(kept), "mixed_metrics_note": MIXED_METRICS_NOTE, "interval_label": INTERVAL_LABEL, "headline_method": HEADLINE_METHOD,
        "regimes": BY_LABEL, "task_labels": TASK_LABELS,
        "reported": [x for x in reported if x["task"] == "detection"],
        "reported_recognition": [x for x in reported if x["task"] == "recognition"],
        "ablation": ablation if len({r.method for r in ablation}) > 1 else [],
        "mer": mer_rows(main["rows"], datasets), "searches": search_sections(results), "flagged": flagged,
        "provenance": provenance(kept), "protocol": PROTOCOL_TEXT,
        # '<' escaped as \u003c: still valid JSON, and no string can close the <script> element.
        "data_json": json.dumps({"detection": table_data, "reported": reported}, default=str).replace("<", "\\u003c"),
        "n_records": len(records), "rendered": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def render(results: Path, out: Path | None = None) -> Path:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    # StrictUndefined: a template name the context lacks is an error, never a silently empty line on the page
    env = Environment(loader=PackageLoader("suite", "templates"), autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined)
    env.filters["pct"] = lambda v: "–" if v is None else f"{v:.1f}"
    env.filters["cell"] = cell_parts
    env.filters["regime"] = title
    env.filters["chose_with"] = chose_with
    env.filters["pct100"] = lambda v: "–" if v is None else f"{100 * v:.1f}"
    env.filters["params"] = lambda p: ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in (p or {}).items())
    html = env.get_template("leaderboard.html.j2").render(**build_context(results))
    out = out or results / "leaderboard.html"
    write_atomic(out, html.encode())
    return out
