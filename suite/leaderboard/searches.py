"""The leaderboard's search sections: per finished search (``suite.paths.search_summaries``) and
dataset, the common candidates' inner-validation F1 against their pooled test F1, each fold
study's progress and, for a shared study, Optuna's plots. The slice outputs are read through
their format's owner, ``suite.search.slices``."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..paths import search_journal, search_summaries
from ..search.slices import read_slices
from .figures import fold_progress, optuna_plots
from .records import DATASET_NAMES


def search_sections(results: Path, top_k: int = 5) -> list[dict]:
    sections = []
    for summary_path in search_summaries(results):
        summary = json.loads(summary_path.read_text())
        if "selection" not in summary:  # written before strict nesting: its records are listed as legacy
            continue
        section = {**summary, "datasets": [], "plots": []}
        for d in summary["datasets"]:
            docs = read_slices(Path(d["outputs"]["rounds"]))
            section["datasets"].append({**d, "dataset_name": DATASET_NAMES[d["dataset"]],
                                        "top": top_common(docs, Path(d["records"][d["selection"]]), top_k),
                                        "progress_png": fold_progress(docs, d["selection"], DATASET_NAMES[d["dataset"]])})
        if summary["selection"] == "shared":
            section["plots"] = optuna_plots(search_journal(summary_path.parent))
        sections.append(section)
    return sections


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
