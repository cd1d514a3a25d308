"""``python -m suite.leaderboard``: every record under the results folder → one self-contained
HTML page (``results/leaderboard.html``). A pure function of the records, the searches' stored
outputs and ``suite/reported.yaml``.

Tables are computed here and rendered by a Jinja2 template with autoescaping (method names and
parameters come from user files). Figures are matplotlib/seaborn PNGs embedded as base64; no
network, no CDN. Records whose data fingerprint differs from the majority for their dataset are
listed as flagged and left out of every table, never averaged in.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .aus import DATASET_AUS
from .paths import results_dir
from .results import write_atomic

DATASET_NAMES = {"casme2": "CASME II", "samm": "SAMM"}
SELECTION_LABELS = {
    "nested": "nested selection",
    "selected_on_test_folds": "selected on test folds (as most papers)",
    "inner_validation": "inner-validation selection",
    "fixed_epochs": "fixed epochs",
}
ABLATIONS = ("micro_au_clip", "micro_au_clip_no_pta", "micro_au_clip_no_gda", "micro_au_clip_no_gdloss", "micro_au_clip_no_miaucl")
REPORTED_FILE = Path(__file__).resolve().parent / "reported.yaml"
PROTOCOL_TEXT = (
    "Leave-one-subject-out outer folds; every clip is predicted once, by the model of its own subject's fold. "
    "Headline F1: per-AU binary F1 on predictions pooled over all folds, averaged over the dataset's AUs "
    "(CASME II: AU1, 2, 4, 7, 12, 14, 15, 17; SAMM: AU2, 4, 7, 12); clips with '?' AU labels are not scored. "
    "No choice is made on a test subject: fixed epochs, or epochs and thresholds chosen on inner-validation "
    "subjects. Searches report the nested F1 (per outer fold the configuration with the best inner-validation "
    "score); the best configuration chosen on the test folds is shown separately, labelled as such."
)


@dataclass
class Cell:
    mean: float
    std: float
    n: int
    fold_mean: float


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


def load_records(results: Path) -> list[dict]:
    records = []
    for path in sorted(results.glob("runs/*/*/*/seed*.json")) + sorted(results.glob("searches/*/*/*.json")):
        if path.name == "summary.json" or path.parent.name == "trials":
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if {"method", "dataset", "f1_avg", "data_fingerprint"} <= set(record):
            record["_path"] = str(path)
            record["_group"] = path.parent.name  # config id for runs; searches group by their "search" name
            records.append(record)
    return records


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
    group = r.get("search") or r["_group"]
    return r["method"], r.get("selection", "?"), group


def detection_rows(records: list[dict], datasets: list[str]) -> list[Row]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[_row_key(r)].append(r)
    rows = []
    for (method, selection, config), recs in groups.items():
        row = Row(f"{method}|{selection}|{config}", method, selection, config, records=recs)
        for d in datasets:
            vals = [r for r in recs if r["dataset"] == d]
            if vals:
                f1 = np.array([r["f1_avg"] for r in vals]) * 100
                row.cells[d] = Cell(float(f1.mean()), float(f1.std()), len(vals), float(np.mean([r["f1_fold_mean"] for r in vals]) * 100))
        if all(d in row.cells for d in datasets):
            row.average = float(np.mean([row.cells[d].mean for d in datasets]))
        rows.append(row)
    rank_rows(rows, datasets)
    return rows


def rank_rows(rows: list[Row], datasets: list[str]) -> None:
    """Rank = mean over datasets of the row's rank there; win rate = share of pairwise
    comparisons (same dataset, another row) it wins. Rows selected on test folds are optimistic
    by construction: shown, but neither ranked nor marked best. Sorted by rank, then average."""
    ranks = defaultdict(list)
    wins, comps = Counter(), Counter()
    ranked = [r for r in rows if r.selection != "selected_on_test_folds"]
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


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def heatmap(rows: list[Row], dataset: str) -> str | None:
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
            name = f"{r.method} [{SELECTION_LABELS.get(r.selection, r.selection)}, {r.config}]"
            data[name] = [100 * np.mean([x["per_au_f1"].get(a, np.nan) for x in recs]) for a in aus]
    if not data:
        return None
    frame = pd.DataFrame(data, index=aus).T
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(aus), 0.8 + 0.38 * len(frame)))
    sns.heatmap(frame, annot=True, fmt=".0f", cmap="viridis", vmin=0, vmax=100, cbar_kws={"label": "F1 (%)"}, ax=ax)
    ax.set_title(f"Per-AU F1, {DATASET_NAMES[dataset]}")
    return _png(fig)


def mer_rows(rows: list[Row], datasets: list[str]) -> list[dict]:
    out = []
    for r in rows:
        for d in datasets:
            recs = [x for x in r.records if x["dataset"] == d]
            for task in sorted({t for x in recs for t in x.get("mer", {})}):
                vals = [x["mer"][task] for x in recs if task in x.get("mer", {})]
                out.append({"row": r, "dataset": DATASET_NAMES[d], "task": task, "n": len(vals),
                            **{m: 100 * float(np.mean([v[m] for v in vals])) for m in ("uf1", "uar", "wf1", "accuracy")}})
    return out


def search_sections(results: Path, top_k: int = 5) -> list[dict]:
    sections = []
    for summary_path in sorted(results.glob("searches/*/summary.json")):
        summary = json.loads(summary_path.read_text())
        section = {"name": summary["name"], "space": summary["space"], "method": summary["method"], "sampler": summary.get("sampler"),
                   "wall_s": summary.get("wall_s"), "datasets": [], "plots": []}
        for d in summary["datasets"]:
            section["datasets"].append({**d, "dataset_name": DATASET_NAMES[d["dataset"]],
                                        "top": top_trials(Path(d["trials_dir"]), d, top_k)})
        section["plots"] = optuna_plots(summary_path.parent / "optuna.journal")
        sections.append(section)
    return sections


def top_trials(trials_dir: Path, summary_ds: dict, k: int) -> list[dict]:
    """Best trials (those selection chose among) by inner F1 with their pooled outer (test) F1 —
    the gap is the point."""
    import pandas as pd

    from .metrics import f1_per_au

    nested = json.loads(Path(summary_ds["records"]["nested"]).read_text())
    frame = pd.read_parquet(Path(summary_ds["records"]["nested"]).with_name(nested["predictions"])).set_index("sample_id")
    true_cols = [c for c in frame.columns if c.startswith("true_")]
    out = []
    for path in trials_dir.glob("*.json"):
        doc = json.loads(path.read_text())
        pred, true = [], []
        for f in doc["folds"]:
            for sid, prob in zip(f["sample_ids"], f["prob"]):
                if frame.loc[sid, "au_known"]:
                    pred.append(np.array(prob) >= np.array(f["threshold"]))
                    true.append(frame.loc[sid, true_cols].to_numpy(int))
        out.append({"trial": doc["trial_id"], "params": doc["params"],
                    "inner": 100 * float(np.mean([f["inner_f1"] for f in doc["folds"]])),
                    "outer": 100 * float(f1_per_au(np.array(true), np.array(pred)).mean())})
    return sorted(out, key=lambda t: -t["inner"])[:k]


def optuna_plots(journal: Path) -> list[dict]:
    if not journal.exists():
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.visualization import matplotlib as ovm

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    plots = []
    for name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        for title, fn, need in (("optimization history", ovm.plot_optimization_history, 1),
                                ("parallel coordinates", ovm.plot_parallel_coordinate, 2),
                                ("parameter importances", ovm.plot_param_importances, 2)):
            if len(complete) < need:
                continue
            try:
                ax = fn(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as e:  # e.g. importances with one distinct value
                plots.append({"study": name, "title": title, "png": None, "note": str(e)[:200]})
                continue
            fig = (ax if hasattr(ax, "savefig") else np.ravel(ax)[0].figure)
            fig.set_size_inches(6.5, 3.6)
            plots.append({"study": name, "title": title, "png": _png(fig), "note": None})
            plt.close("all")
    return plots


def load_reported() -> list[dict]:
    return yaml.safe_load(REPORTED_FILE.read_text())


def provenance(records: list[dict]) -> dict:
    def uniq(key):
        return sorted({json.dumps(r.get(key), sort_keys=True) if isinstance(r.get(key), dict) else str(r.get(key)) for r in records})
    return {"git_commits": uniq("git_commit"), "devices": uniq("device"),
            "versions": sorted({json.dumps(r.get("versions"), sort_keys=True) for r in records}),
            "fingerprints": sorted({(r["dataset"], r["data_fingerprint"]) for r in records}),
            "commands": sorted({r["command"] for r in records if r.get("command")})}


def build_context(results: Path) -> dict:
    records = load_records(results)
    kept, flagged = split_fingerprints(records)
    datasets = list(DATASET_NAMES)  # both columns always: a missing dataset shows as a gap
    rows = detection_rows(kept, datasets)
    ablation = [r for r in rows if r.method in ABLATIONS and r.selection == "fixed_epochs"]
    reported = load_reported()
    table_data = [{"method": r.method, "selection": r.selection, "config": r.config, "rank": r.rank, "win_rate": r.win_rate,
                   "average": r.average, **{d: vars(r.cells[d]) for d in r.cells}} for r in rows]
    return {
        "empty": not records,
        "datasets": datasets, "dataset_names": DATASET_NAMES, "rows": rows, "selection_labels": SELECTION_LABELS,
        "reported": [x for x in reported if x["task"] == "detection"],
        "reported_recognition": [x for x in reported if x["task"] == "recognition"],
        "heatmaps": [(DATASET_NAMES[d], heatmap(rows, d)) for d in datasets if any(d in r.cells for r in rows)],
        "ablation": ablation if len({r.method for r in ablation}) > 1 else [],
        "mer": mer_rows(rows, datasets), "searches": search_sections(results), "flagged": flagged,
        "provenance": provenance(kept), "protocol": PROTOCOL_TEXT,
        # '<' escaped as \u003c: still valid JSON, and no string can close the <script> element.
        "data_json": json.dumps({"detection": table_data, "reported": reported}, default=str).replace("<", "\\u003c"),
        "n_records": len(records),
    }


def render(results: Path, out: Path | None = None) -> Path:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("suite", "templates"), autoescape=select_autoescape(["html", "j2"]))
    env.filters["pct"] = lambda v: "–" if v is None else f"{v:.1f}"
    html = env.get_template("leaderboard.html.j2").render(**build_context(results))
    out = out or results / "leaderboard.html"
    write_atomic(out, html.encode())
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m suite.leaderboard", description=__doc__)
    p.add_argument("--results", type=Path, help="results folder (default ./results or $MICRO_AU_RESULTS)")
    p.add_argument("--out", type=Path, help="output HTML (default <results>/leaderboard.html)")
    args = p.parse_args(argv)
    path = render(results_dir(args.results), args.out)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
