"""The slice-output format: the one owner of how a slice of a search round is stored and read.

A slice is proposal ``p`` of round ``r`` of every fold's study (``suite.search.trial`` runs it).
In its folder (``suite.paths.rounds_dir`` / ``confirm_dir``) it is stored as
``r<round>-p<proposal>.json`` — ``{"round", "proposal", "tune_trial", "node_id"?, "tasks": [...]}``,
per task: fold, number, role, params, status, thresholds, epochs, inner F1, per-epoch inner
scores, test ids and predictions, engine, node — and ``r<round>-p<proposal>.inner.parquet`` (per
task every epoch's inner-validation probabilities with sample ids). The Parquet is written first,
the JSON last, both atomically: a slice is complete when its JSON exists. Tasks a trial finished
before the slice is complete wait in ``partial/r<round>-p<proposal>.json`` beside them.

Writers: ``suite.search.trial``. Readers: the search driver (through ``trial``/``tune_rounds``) and
the leaderboard's search sections (``read_slices``)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..results import write_json, write_predictions

PATTERN = "r*-p*.json"


def slice_paths(out_dir: Path, r: int, proposal: int) -> tuple[Path, Path]:
    """(the JSON, the inner-validation Parquet) of slice (``r``, ``proposal``) in ``out_dir``."""
    stem = Path(out_dir) / f"r{r:03d}-p{proposal:03d}"
    return stem.with_suffix(".json"), stem.with_suffix(".inner.parquet")


def partial_path(out_dir: Path, r: int, proposal: int) -> Path:
    """Where a trial keeps the tasks of an unfinished slice it has done so far."""
    return Path(out_dir) / "partial" / slice_paths(Path("."), r, proposal)[0].name


def write_slice(out_dir: Path, r: int, proposal: int, tasks: list[dict], aus, extra: dict) -> None:
    """The Parquet first, the JSON last: a slice is complete when its JSON exists."""
    json_path, parquet_path = slice_paths(out_dir, r, proposal)
    rows = []
    for t in tasks:
        if t["status"] != "ok":
            continue
        for epoch, probs in zip(t["inner_epochs"], t["inner_probs"]):
            for sid, p in zip(t["inner_val_ids"], probs):
                rows.append({"fold": t["fold"], "number": t["number"], "epoch": epoch, "sample_id": sid,
                             **{f"prob_AU{a}": float(v) for a, v in zip(aus, p)}})
    columns = ["fold", "number", "epoch", "sample_id", *[f"prob_AU{a}" for a in aus]]
    write_predictions(parquet_path, pd.DataFrame(rows, columns=columns))
    stored = [{k: v for k, v in t.items() if k != "inner_probs"} for t in tasks]
    write_json(json_path, {"round": r, "proposal": proposal, **extra, "tasks": stored})


def read_slice(out_dir: Path, r: int, proposal: int) -> dict | None:
    """A complete slice's JSON document; None while it is not complete."""
    json_path, _ = slice_paths(out_dir, r, proposal)
    return json.loads(json_path.read_text()) if json_path.exists() else None


def slice_files(out_dir: Path) -> list[Path]:
    """The JSON of every complete slice in ``out_dir``, by round and proposal."""
    return sorted(Path(out_dir).glob(PATTERN))


def read_slices(out_dir: Path) -> list[dict]:
    """Every complete slice's JSON document in ``out_dir``, by round and proposal."""
    return [json.loads(p.read_text()) for p in slice_files(out_dir)]
