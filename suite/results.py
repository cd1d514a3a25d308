"""Run records and prediction files: schema, atomic writes, recomputation from predictions.

One JSON record per (method, dataset, config, seed, protocol); next to it a Parquet file of
every test prediction with its sample id and fold, so every number is recomputable."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from .emotions import RECOGNITION_CLASSES
from .metrics import F1_VARIANTS, detection_metrics, recognition_metrics
from .provenance import backbone_provenance, data_provenance
from .regimes import regime
from .selection import SCHEMA_VERSION
from .stats import bootstrap_interval, interval_label, subject_counts

RECORD_KEYS = ("method", "dataset", "aus", "hparams", "seed", "protocol", "selection", "schema", "chosen_by", "f1_avg", "f1_fold_mean",
               "per_au_f1", "per_au_auc", "mer", "n_samples", "duration_s", "device", "versions", "git_commit",
               "data_fingerprint", "source", "predictions", "command")


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, default=_jsonable) + "\n").encode())


def write_predictions(path: Path, frame: pd.DataFrame) -> None:
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    write_atomic(path, buf.getvalue())


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray,)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "open_clip_torch", "accelerate", "datasets", "timm", "ray", "optuna", "micro-au-suite"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def config_id(method: str, dataset: str, hparams: dict, fingerprint: str, engine: str = "auto") -> str:
    """A run's identity: method, dataset, hyper-parameters, data, the fold protocol's version and
    how it was computed (``suite.folds.engine_label``; ``auto``'s choice is a function of the
    configuration): the engines agree only within tolerance (docs/protocol.md), so their records
    never overwrite each other, and records of an earlier protocol are never reused."""
    from .folds import PROTOCOL_VERSION

    blob = json.dumps([method, dataset, hparams, fingerprint, engine, PROTOCOL_VERSION], sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:10]


def metric_of(hparams: dict) -> str:
    """The headline F1 variant a run chose with (per-fold hyper-parameters agree on it)."""
    if "per_fold" in hparams:
        return next(iter(hparams["per_fold"].values())).get("metric", "binary")
    return hparams.get("metric", "binary")


def metrics_from_predictions(frame: pd.DataFrame, dataset: str, aus, metric: str = "binary") -> dict:
    """Every record metric, recomputed from a predictions table (the record's source of truth):
    both F1 variants, each pooled F1 with its subject-bootstrap interval (``suite.stats``).
    ``dataset``: the evaluation key (``suite.evaluation``); a composite's figures are also given
    per release (``by_release``: the same metrics on that release's clips)."""
    from .evaluation import evaluation_of, per_release

    evaluation = evaluation_of(dataset)
    out = _metrics(frame, dataset, aus, metric)
    if evaluation.kind == "composite":
        out["by_release"] = {r: {k: v for k, v in _metrics(part, dataset, aus, metric).items() if k != "mer"}
                             for r, part in per_release(frame, evaluation.releases).items() if len(part)}
    return out


def _metrics(frame: pd.DataFrame, dataset: str, aus, metric: str) -> dict:
    from .evaluation import evaluation_of

    cols = [f"AU{a}" for a in aus]
    known = frame[[f"known_{c}" for c in cols]].to_numpy(bool)
    scored = known.any(1)
    y = frame[[f"true_{c}" for c in cols]].to_numpy()[scored]
    prob = frame[[f"prob_{c}" for c in cols]].to_numpy()[scored]
    pred = frame[[f"pred_{c}" for c in cols]].to_numpy()[scored]
    out = detection_metrics(y, prob, pred, frame["fold"].to_numpy()[scored], aus, known[scored], metric)
    out["n_masked"] = {c: int((~known[:, k]).sum()) for k, c in enumerate(cols)}  # over every predicted clip
    _, counts = subject_counts(frame, aus)
    for variant in F1_VARIANTS:
        out["f1"][variant]["ci95"] = list(bootstrap_interval(counts[None], variant))
    out["interval"] = {variant: interval_label(counts.shape[0], variant, dataset) for variant in F1_VARIANTS}
    def sets(prefix):
        return [{a for a, v in zip(aus, row) if v} for row in frame[[f"{prefix}_{c}" for c in cols]].to_numpy()]
    prompted = {task: frame[f"prompt_{task}"].tolist() for task, _ in RECOGNITION_CLASSES if f"prompt_{task}" in frame.columns}
    # recognition's class sets are a release's: a cross-dataset test set of one release scores as that release
    tested = evaluation_of(dataset).test_releases
    out["mer"] = recognition_metrics(tested[0] if len(tested) == 1 else dataset, sets("pred"), frame["emotion"].tolist(), frame["objective_class"].tolist(), sets("true"),
                                     prompted)
    out["n_samples"] = int(scored.sum())
    return out


def predictions_frame(data, outputs, aus) -> pd.DataFrame:
    """One row per test prediction: ids, fold, labels for recognition, and per AU the
    probability, the thresholded prediction and the true label. ``data`` is an
    ``engine.DatasetTensors``; ``outputs`` are ``engine.FoldOutput``s."""
    rows = []
    for out in outputs:
        for j, i in enumerate(out.test):
            row = {"sample_id": data.sample_id[i], "subject": data.subject[i], "fold": out.fold,
                   "emotion": data.emotion[i], "objective_class": int(data.objective_class[i])}
            if out.recognition is not None:  # the prompt-recognised class of each task
                start = 0
                for task, classes in RECOGNITION_CLASSES:
                    row[f"prompt_{task}"] = classes[int(np.argmax(out.recognition[j, start:start + len(classes)]))]
                    start += len(classes)
            for k, a in enumerate(aus):
                row[f"prob_AU{a}"] = float(out.prob[j, k])
                row[f"pred_AU{a}"] = int(out.prob[j, k] >= out.threshold[k])
                row[f"true_AU{a}"] = int(data.labels[i, k])
                row[f"known_AU{a}"] = bool(data.known[i, k])
            rows.append(row)
    return pd.DataFrame(rows)


def write_run(stem: Path, frame: pd.DataFrame, *, method: str, dataset: str, aus, hparams: dict, seed: int,
              selection: str, cache_path, device: str, duration_s: float, extra: dict | None = None) -> Path:
    """Write ``<stem>.predictions.parquet`` and the record ``<stem>.json`` (metrics recomputed
    from the predictions, so the two can never disagree). Returns the record path. ``dataset``:
    the evaluation key (``suite.evaluation``), whose description is the record's ``protocol``;
    ``cache_path``: its release's cache, or each release's (a list, in the evaluation's order)."""
    from .evaluation import evaluation_of

    metrics = metrics_from_predictions(frame, dataset, aus, metric_of(hparams))
    data = data_provenance(cache_path)
    pred_path = stem.with_name(stem.name + ".predictions.parquet")
    write_predictions(pred_path, frame)
    record = {
        "method": method, "dataset": dataset, "aus": [f"AU{a}" for a in aus], "hparams": hparams, "seed": seed,
        "protocol": evaluation_of(dataset).describe(), "selection": selection, "schema": SCHEMA_VERSION, "chosen_by": regime(selection).chosen_by,
        **{k: metrics[k] for k in ("metric", "f1_avg", "f1_fold_mean", "per_au_f1", "f1", "interval", "per_au_auc", "n_masked", "mer",
                                   "n_samples", "by_release") if k in metrics},
        "n_folds": int(frame["fold"].nunique()), "duration_s": round(duration_s, 3), "device": device,
        "versions": versions(), "git_commit": git_commit(), "data_fingerprint": data["fingerprint"],
        "data": data, "backbone": backbone_provenance(hparams), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": "measured", "predictions": pred_path.name, "command": None, **(extra or {}),
    }
    path = stem.with_name(stem.name + ".json")
    write_json(path, record)
    return path


def load_record(path: Path) -> dict:
    record = json.loads(Path(path).read_text())
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise ValueError(f"{path}: not a run record, missing {missing}")
    return record


def deployment_configuration(results: Path, search: str, dataset: str) -> tuple[str, dict]:
    """(method, resolved hyper-parameters) of search ``search``'s deployment configuration on
    ``dataset`` — the configuration a paper would list, chosen on all subjects — read from the
    records of its final-seed re-runs, for ``suite.train --from-search``."""
    from .paths import search_dir

    path = search_dir(results, search) / "summary.json"
    if not path.exists():
        raise ValueError(f"--from-search {search}: no finished search there ({path} is missing); "
                         f"finish it with `python -m suite.search --name {search} …` first")
    summary = json.loads(path.read_text())
    entry = next((d for d in summary["datasets"] if d["dataset"] == dataset), None)
    if entry is None:
        raise ValueError(f"--from-search {search}: it searched {', '.join(d['dataset'] for d in summary['datasets'])}, "
                         f"not {dataset} ({path})")
    records = entry["records"].get("deployment") or []
    if entry.get("protocol", {}).get("name") == "transfer":
        p = entry["protocol"]
        raise ValueError(f"--from-search {search}: a transfer ({p['spec']}) has one outer fold, so its one choice — made on "
                         f"{' + '.join(p['train'])}'s subjects — is the deployed model, re-run by the search's own final seeds "
                         f"({entry['records'].get('final') or 'none asked'}); --from-search copies a LOSO or composite search's "
                         "deployment configuration")
    if not records:
        raise ValueError(f"--from-search {search}: no deployment configuration was re-run on {dataset} "
                         "(a search with no common candidates or no final seeds has none)")
    hparams = load_record(Path(records[0]))["hparams"]
    return summary["method"], hparams
