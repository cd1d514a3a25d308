"""The leaderboard's records: every record the results layout holds (``suite.paths.record_paths``),
legacy records relabelled, deployment configurations re-typed into ``suite.train`` marked as
copies, each dataset's majority data fingerprint kept (the rest flagged), and what a record says
about where and how it was measured (provenance). The record format itself: ``suite.results``."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from ..aus import DATASET_AUS
from ..data.registry import ReleaseTable
from ..evaluation import EvaluationError, evaluation_of
from ..paths import record_paths
from ..protocol import PROTOCOL_KEYS
from ..registry import get_method
from ..provenance import not_comparable
from ..selection import SCHEMA_VERSION
from ..stats import subject_counts

def _evaluation_title(key: str) -> str:
    try:
        return evaluation_of(key).title
    except EvaluationError:
        raise KeyError(key) from None


# release name → how pages name it, from the release registry; an evaluation key → its title ("CASME II → SAMM")
DATASET_NAMES = ReleaseTable("title", _evaluation_title)


def aus_text(datasets: list[str]) -> str:
    """The evaluated AUs of each dataset, as captions and the page's protocol text say them."""
    return "; ".join(f"{DATASET_NAMES[d]}: " + ", ".join(f"AU{a}" for a in DATASET_AUS[d]) for d in datasets)


def load_records(results: Path) -> list[dict]:
    """Every record under ``results`` whose dataset names an evaluation of registered releases
    (a record of a release no longer registered, or a test's toy release, is not shown)."""
    records = []
    for path in record_paths(results):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if {"method", "dataset", "f1_avg", "data_fingerprint"} <= set(record) and _known(record["dataset"]):
            record["_path"] = str(path)
            records.append(relabel(record))
    return mark_deployment_copies(records)


def _known(key: str) -> bool:
    try:
        evaluation_of(key)
    except EvaluationError:
        return False
    return True


def _printed(value):
    """A value as the summary and the page print it (3 significant digits): a configuration typed
    from either matches the one the search ran."""
    return float(f"{value:.3g}") if isinstance(value, float) else value


def release_fingerprints(record: dict) -> dict[str, str]:
    """Release → the data fingerprint a record's predictions were made on (a cross-dataset record:
    each release's part, ``suite.provenance.data_provenance``)."""
    parts = (record.get("data") or {}).get("parts")
    if parts:
        return {r: p["fingerprint"] for r, p in parts.items()}
    return {record["dataset"]: record["data_fingerprint"]}


def chose_with_labels_of(record: dict) -> set[str]:
    """The releases whose labels chose a search record's configuration in a way that makes a re-run
    optimistic on them: a deployment configuration or one selected on the test folds — every
    release of its evaluation; a transfer's own choice — its source (never tested there)."""
    evaluation = evaluation_of(record["dataset"])
    if record.get("selection") in ("deployment", "selected_on_test_folds"):
        return set(evaluation.releases)
    if evaluation.kind == "transfer" and record.get("search") and record.get("selection") in ("strict_nested", "shared_nested",
                                                                                               "shared_nested_data_independent"):
        return set(evaluation.train_releases)
    return set()


def mark_deployment_copies(records: list[dict]) -> list[dict]:
    """A fixed-configuration run (``suite.train``) whose model hyper-parameters equal — at the
    printed precision, whatever its protocol settings — a configuration a search chose with the
    labels of a release it tests on (a deployment configuration, chosen on all subjects; one
    selected on the test folds; a transfer's choice, made on its source, re-run on the source) on
    the same data of that release is that configuration re-run, however it was typed and under
    whichever protocol: labelled ``deployment_copy`` (not ranked), with the search and the regime
    it copies."""
    def model_hp(hp: dict) -> str:
        return json.dumps({k: _printed(v) for k, v in hp.items() if k not in PROTOCOL_KEYS}, sort_keys=True, default=str)

    def defaults(r) -> bool:
        """The method's declared defaults: nobody chose them, even when a search's choice equals them."""
        try:
            return model_hp(get_method(r["method"]).defaults) == model_hp(r.get("hparams") or {})
        except KeyError:  # a method not registered here
            return False

    chosen = defaultdict(list)  # (method, model hparams) → (release → fingerprint its labels chose on, search, regime)
    for r in records:
        releases = chose_with_labels_of(r)
        if releases and "per_fold" not in (r.get("hparams") or {}):
            fps = release_fingerprints(r)
            chosen[r["method"], model_hp(r.get("hparams") or {})].append(({x: fps.get(x) for x in releases}, r.get("search"), r["selection"]))
    for r in records:
        if r.get("selection") not in ("inner_validation", "fixed_epochs") or defaults(r):
            continue
        tested = {x: fp for x, fp in release_fingerprints(r).items() if x in evaluation_of(r["dataset"]).test_releases}
        for by, search, regime in chosen.get((r["method"], model_hp(r.get("hparams") or {})), []):
            if any(by.get(x) == fp for x, fp in tested.items()):
                r["selection"], r["from_search"], r["copied_regime"] = "deployment_copy", search, regime
                break
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


def f1_of(record: dict, variant: str, key: str = "pooled") -> float | None:
    """A record's F1 in ``variant``; records written before both variants were stored are binary."""
    if "f1" in record:
        return record["f1"][variant][key]
    if variant == "binary":
        return record["f1_avg"] if key == "pooled" else record["f1_fold_mean"]
    return None


def part_key(key: str, release: str) -> str:
    """The column of one release's part of a composite evaluation ``key``."""
    return f"{key}@{release}"


def release_parts(record: dict, releases) -> list[dict]:
    """A composite record's figures on each release's clips (its ``by_release``), as records of
    the column ``part_key`` — the same predictions, counted over that release's subjects only."""
    whole = {k: v for k, v in record.items() if k != "_counts"}  # the pooled record's subject counts are not the part's
    return [{**whole, "dataset": part_key(record["dataset"], r), "_release": r, **record["by_release"][r]}
            for r in releases if r in record.get("by_release", {})]


def record_counts(record: dict) -> np.ndarray | None:
    """Per-subject confusion counts [S, K, 4] from the record's predictions (None: an older file
    without per-AU label masks); a composite's release part: that release's subjects only."""
    import pandas as pd

    if "_counts" not in record:
        path = Path(record["_path"]).with_name(record["predictions"])
        frame = pd.read_parquet(path) if path.exists() else None
        if frame is not None and record.get("_release"):
            from ..evaluation import release_of

            frame = frame[release_of(frame["subject"].to_numpy()) == record["_release"]]
        ok = frame is not None and all(f"known_{a}" in frame.columns for a in record["aus"])
        record["_counts"] = subject_counts(frame, [int(a[2:]) for a in record["aus"]])[1] if ok else None
    return record["_counts"]


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
