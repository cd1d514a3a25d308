"""``python -m suite.train``: train and evaluate one method on one dataset under the LOSO protocol.

Prints a per-AU table and the pooled average, writes one JSON record per seed and its
predictions file under ``--out`` (default ``results/runs``); the last line printed is the path
of the last record written."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .aus import DATASET_AUS
from .data import DATASETS, DataError, load_cache, prepare
from .engine import DatasetTensors, Engine, get_accelerator
from .paths import results_dir, token_cache_dir
from .protocol import loso_folds
from .registry import get_method, methods, resolve_hparams
from .results import config_id, predictions_frame, write_run

PROTOCOL = "loso"


def run(method: str, dataset: str, data_root: Path | None = None, overrides: dict | None = None, seeds: int | list[int] = 1,
        out: Path | None = None, results: Path | None = None, log=print, compile: str | None = None) -> list[Path]:
    """Train ``method`` with each seed (a count N means seeds 0..N-1); return the record paths.
    ``compile``: a ``torch.compile`` backend (e.g. ``inductor``) for long runs; None runs eagerly."""
    spec = get_method(method)
    hp = resolve_hparams(spec, overrides)
    aus = DATASET_AUS[dataset]
    cache = prepare(dataset, data_root, results, image_size=hp.get("image_size", 112), flow=spec.needs_flow)
    log(f"data: {dataset} {'(synthetic default)' if data_root is None else data_root} — cache {'hit' if cache.hit else 'built'}: {cache.path}")
    arrays, meta = load_cache(cache.path)
    acc = get_accelerator()
    data = DatasetTensors.from_cache(arrays, aus, acc.device, cache.fingerprint)
    out_dir = Path(out) if out else results_dir(results) / "runs"
    cid = config_id(method, dataset, hp, cache.fingerprint)
    paths = []
    for seed in (range(seeds) if isinstance(seeds, int) else seeds):
        start = time.time()
        engine = Engine(spec, hp, data, aus, seed, acc, feature_cache=token_cache_dir(results), compile=compile)
        folds = loso_folds(data.subject, hp["inner_val_fraction"], seed)
        outputs = []
        for fold in folds:
            outputs.append(engine.run_fold(fold))
        selection = "fixed_epochs" if hp["selection"] == "fixed" else "inner_validation"
        extra = {
            "inner_f1": float(np.mean([o.inner_f1 for o in outputs])) if hp["selection"] == "inner" else None,
            "data_root": str(data_root) if data_root else "synthetic:seed0-small",
            "compile": compile,
            "command": "python -m suite.train " + shlex.join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("train.py") else None,
        }
        path = write_run(out_dir / dataset / method / cid / f"seed{seed}", predictions_frame(data, outputs, aus), method=method,
                         dataset=dataset, aus=aus, hparams=hp, seed=seed, selection=selection, fingerprint=cache.fingerprint,
                         device=device_name(acc.device), duration_s=time.time() - start, extra=extra)
        record = json.loads(path.read_text())
        log(au_table(record))
        paths.append(path)
    return paths


def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def au_table(record: dict) -> str:
    lines = [f"{record['method']} on {record['dataset']} (seed {record['seed']}, {record['n_samples']} clips, {record['duration_s']:.1f} s)",
             f"{'AU':>6}  {'F1':>6}  {'AUC':>6}"]
    for au, f1 in record["per_au_f1"].items():
        auc = record["per_au_auc"][au]
        lines.append(f"{au:>6}  {f1:6.3f}  {auc:6.3f}")
    lines.append(f"{'pooled':>6}  {record['f1_avg']:6.3f}   (per-fold mean {record['f1_fold_mean']:.3f})")
    for name, m in record["mer"].items():
        lines.append(f"{name}: UF1 {m['uf1']:.3f}  UAR {m['uar']:.3f}  WF1 {m['wf1']:.3f}  acc {m['accuracy']:.3f}  (n={m['n']})")
    return "\n".join(lines)


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m suite.train", description=__doc__)
    p.add_argument("--method", default="micro_au_clip")
    p.add_argument("--dataset", default="casme2", choices=DATASETS)
    p.add_argument("--data-root", type=Path, help="release folder; default: the synthetic release")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a hyper-parameter (repeatable)")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--out", type=Path, help="records folder (default results/runs)")
    p.add_argument("--results", type=Path, help="results folder (default ./results or $MICRO_AU_RESULTS)")
    p.add_argument("--compile", nargs="?", const="inductor", metavar="BACKEND",
                   help="torch.compile the model once and reuse it across folds (default backend inductor); pays off on long GPU runs")
    p.add_argument("--list-methods", action="store_true")
    args = p.parse_args(argv)
    if args.list_methods:
        for name, spec in methods().items():
            print(f"{name:28s} {spec.description}")
        return 0
    try:
        paths = run(args.method, args.dataset, args.data_root, parse_sets(args.set), args.seeds, args.out, args.results,
                    compile=args.compile)
    except (KeyError, ValueError, DataError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
