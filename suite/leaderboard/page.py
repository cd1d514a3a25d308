"""The leaderboard page: every record under the results folder → one self-contained HTML page
(``results/leaderboard.html``; command line: ``suite/leaderboard/__main__.py``). A pure function of the records, the searches' stored
outputs and ``suite/reported.yaml``.

This module assembles the page from its rooms — ``records`` (loading, legacy relabelling,
fingerprints, provenance), ``table`` (the ranked table model and statistics), ``figures`` (PNGs),
``searches`` (the search sections) — and renders it with a Jinja2 template with autoescaping
(method names and parameters come from user files). Figures are matplotlib/seaborn PNGs embedded
as base64; no network, no CDN. Records whose data fingerprint differs from the majority for their
dataset are listed as flagged and left out of every table, never averaged in. The paper exports
(``export``) sit beside the page and read the same table model.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import yaml

from ..regimes import BY_LABEL, RANKED, title
from ..results import write_atomic
from ..stats import INTERVAL_LABEL
from .figures import heatmap
from .records import DATASET_NAMES, aus_text, provenance
from .searches import search_sections
from .table import HEADLINE_METHOD, MIXED_METRICS_NOTE, cell_parts, chose_with, cross_sections, measured_views, mer_rows, mixed_metrics

TASK_LABELS = {"emotion5": "CASME II emotions (5), rule table", "objective": "objective classes, rule table",
               "emotion5_prompt": "CASME II emotions (5), text prompts", "objective_prompt": "objective classes, text prompts"}
ABLATIONS = ("micro_au_clip", "micro_au_clip_no_pta", "micro_au_clip_no_gda", "micro_au_clip_no_gdloss", "micro_au_clip_no_miaucl")
REPORTED_FILE = Path(__file__).resolve().parent.parent / "reported.yaml"
PROTOCOL_TEXT = (
    "Leave-one-subject-out outer folds; every clip is predicted once, by the model of its own subject's fold. "
    "F1 per AU on predictions pooled over all folds, averaged over the dataset's AUs "
    "({aus}), in two variants: binary (positive class) and "
    "macro (mean of positive- and negative-class F1); every table names its variant. A label the coding sheet leaves "
    "unknown ('?', alternatives that disagree) is masked for that AU only: in neither loss nor metric. "
    "No choice is made on a test subject: fixed epochs, or epochs and thresholds chosen on inner-validation "
    "subjects. A search is strictly nested by default: every outer fold has its own Optuna study told only that fold's "
    "inner-validation F1, and per fold the configuration best in its own study predicts the test subject (a shared "
    "study is ranked only when its sampler is data-independent). Optimistic figures (selected on test folds, the "
    "deployment configuration, a shared search whose sampler adapted on every subject) are shown in their own labelled "
    "tables and never ranked. Inner-validation scores are 2-fold cross-fitted over subjects."
)


CROSS_TEXT = {
    "transfer": ("Cross-dataset transfer",
                 "Trained on every subject of {train}, tested on every clip of {test} (one outer fold). Epochs, thresholds and a "
                 "search's choices were made on {train}'s subjects alone (inner validation by subject inside {train}); {test}'s "
                 "labels chose nothing. F1 per AU on the {test} predictions, averaged over the AUs both releases evaluate ({aus}). "
                 "The interval resamples {test}'s subjects. These figures are ranked only against each other, never with another "
                 "protocol's."),
    "composite": ("Composite leave-one-subject-out",
                  "Leave-one-subject-out over the union of {releases}: one fold per subject, subjects namespaced by release (an "
                  "id that exists in two releases is two subjects). AUs: those every release evaluates ({aus}) — shared AUs, not "
                  "per-release masks. The pooled column is F1 over every clip and is the one ranked; each release's part is the "
                  "same predictions scored on that release's clips (not ranked). Never ranked with another protocol's figures."),
}


def cross_context(kept: list[dict]) -> list[dict]:
    """The page's cross-dataset sections (``table.cross_sections``) with their protocol text."""
    out = []
    for x in cross_sections(kept):
        e = x["evaluation"]
        kind_title, text = CROSS_TEXT[e.kind]
        names = lambda rs: " and ".join(DATASET_NAMES[r] for r in rs)  # noqa: E731
        out.append({**x, "kind_title": kind_title,
                    "text": text.format(train=names(e.train_releases), test=names(e.test_releases), releases=names(e.releases),
                                        aus=", ".join(f"AU{a}" for a in e.aus)),
                    "rank_note": "Rank and marks: on the pooled column only." if e.kind == "composite" else "Rank: within this column."})
        for v in out[-1]["views"]:
            v["heatmaps"] = [(x["names"][x["key"]], heatmap(v["rows"], x["key"], v["variant"]))] if v["rows"] else []
    return out


def load_reported() -> list[dict]:
    return yaml.safe_load(REPORTED_FILE.read_text())


def build_context(results: Path) -> dict:
    records, kept, flagged, views, datasets = measured_views(results)
    for v in views:
        v["heatmaps"] = [(DATASET_NAMES[d], heatmap(v["rows"], d, v["variant"])) for d in datasets if any(d in r.cells for r in v["rows"])]
    main = views[0]
    ablation = [r for r in main["all_rows"] if r.method in ABLATIONS and r.selection == "fixed_epochs" and not r.legacy]
    reported = load_reported()
    def rows_json(v: dict) -> list[dict]:
        return [{"method": r.method, "selection": r.selection, "config": r.config, "rank": r.rank, "win_rate": r.win_rate,
                 "average": r.average, "legacy": r.legacy, "ranked": r in v["rows"],
                 **{d: {k: x for k, x in vars(r.cells[d]).items() if k != "counts"} for d in r.cells}} for r in v["all_rows"]]

    cross = cross_context(kept)
    table_data = {v["variant"]: rows_json(v) for v in views}  # leave-one-subject-out
    cross_data = {x["evaluation"].spec: {v["variant"]: rows_json(v) for v in x["views"]} for x in cross}
    return {
        "empty": not records,
        "datasets": datasets, "dataset_names": DATASET_NAMES, "views": views, "rows": main["rows"],
        "mixed_metrics": mixed_metrics(kept), "mixed_metrics_note": MIXED_METRICS_NOTE, "interval_label": INTERVAL_LABEL, "headline_method": HEADLINE_METHOD,
        "regimes": BY_LABEL, "ranked_regimes": RANKED, "task_labels": TASK_LABELS,
        "reported": [x for x in reported if x["task"] == "detection"],
        "reported_recognition": [x for x in reported if x["task"] == "recognition"],
        "ablation": ablation if len({r.method for r in ablation}) > 1 else [],
        "mer": mer_rows(main["rows"], datasets), "searches": search_sections(results), "flagged": flagged,
        "provenance": provenance(kept), "protocol": PROTOCOL_TEXT.format(aus=aus_text(datasets)), "cross": cross,
        # '<' escaped as \u003c: still valid JSON, and no string can close the <script> element.
        "data_json": json.dumps({"detection": table_data, "cross_dataset": cross_data, "reported": reported}, default=str).replace("<", "\\u003c"),
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
