"""One search trial's work on cached frozen tokens — every LOSO fold's inner model (inner
validation predicted after every epoch) and outer model of Micro-AU CLIP on full-scale synthetic
CASME II (26 folds) — timed with an earlier revision's sequential engine and with today's
sequential and fold-batched engines, one after the other in one run.

Why: the fold-batching issue's target is a ratio against the sequential engine as it was when
the issue was filed; that engine no longer exists in the tree, so it is run from a checkout:

    git worktree add /tmp/before-batching f6a6f63   # the last commit before fold-batching
    python benchmarks/trial_vs_revision.py /tmp/before-batching [--epochs 10]

Each measurement runs in its own process with its revision first on ``sys.path``, on that
revision's own synthetic release (same counts: 255 clips, 26 subjects; the draw may differ) and
its own token cache, warmed before the clock starts. Every row is also set against the trial's
matmul FLOP floor: the matmul FLOPs of today's sequential engine doing the trial
(``torch.utils.flop_counter``, counted in a second, untimed pass) at this machine's measured
fp32 2048³ matmul rate. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

WORKER = r'''
import json, sys, time
from pathlib import Path
import suite
from suite.aus import DATASET_AUS
from suite.data import load_cache, prepare, synthetic_root
from suite.engine import DatasetTensors, SequentialEngine, get_accelerator
from suite.protocol import loso_folds
from suite.registry import get_method, resolve_hparams

results, epochs, engine_name, count = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "count"
cache = prepare("casme2", synthetic_root("casme2", results, scale="full"), results, image_size=112)
aus, acc = DATASET_AUS["casme2"], get_accelerator()
data = DatasetTensors.from_cache(load_cache(cache.path)[0], aus, acc.device, cache.fingerprint)
spec = get_method("micro_au_clip")
hp = resolve_hparams(spec, {"epochs": epochs, "backbone_mode": "frozen", "selection": "inner"})
tokens = results / "tokens"
SequentialEngine(spec, hp, data, aus, 0, acc, feature_cache=tokens)  # the token cache, warm before the clock starts


def trial():
    folds = loso_folds(data.subject, hp["inner_val_fraction"], 0)
    try:  # the fold protocol's one owner (since the task-independence change)
        from suite.folds import FoldRunner, FoldTask
    except ImportError:  # revisions before it
        engine = SequentialEngine(spec, hp, data, aus, 0, acc, feature_cache=tokens)
        if engine_name == "sequential":
            for fold in folds:
                engine.run_fold(fold, "inner")
        else:
            from suite.batched import BatchedTrainer, run_folds_batched
            run_folds_batched(BatchedTrainer(spec, data, 0, engine.features), [(f, hp) for f in folds])
        return len(folds)
    FoldRunner(spec, data, engine_name, accelerator=acc, feature_cache=tokens).run([FoldTask(f, hp, 0) for f in folds])
    return len(folds)


start = time.perf_counter()
folds = trial()
row = {"seconds": time.perf_counter() - start, "suite": str(Path(suite.__file__).parent.parent), "folds": folds,
       "samples": len(data), "batch_size": hp["batch_size"]}
if count:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        trial()
    row["matmul_flops"] = counter.get_total_flops()
print(json.dumps(row))
'''


def measure(tree: Path, engine: str, epochs: int, results: Path, count: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", WORKER, str(results), str(epochs), engine, "count" if count else "time"], env=env, check=True,
                         capture_output=True, text=True, cwd=tree).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("revision", type=Path, help="a checkout (git worktree) of the earlier revision")
    p.add_argument("--epochs", type=int, default=10, help="epochs per model (default: 10)")
    p.add_argument("--revision-engine", default="sequential", choices=["sequential", "batched"],
                   help="the earlier revision's engine to time (default: sequential; batched: for a revision that has it)")
    args = p.parse_args()
    today = Path(__file__).resolve().parent.parent
    rows = {}
    with tempfile.TemporaryDirectory(prefix="trial-vs-revision-") as tmp:
        for label, tree, engine in ((f"revision, {args.revision_engine}", args.revision.resolve(), args.revision_engine),
                                    ("today, sequential", today, "sequential"), ("today, fold-batched", today, "batched")):
            results = Path(tmp) / ("revision" if tree != today else "today")
            rows[label] = measure(tree, engine, args.epochs, results, count=label == "today, sequential")
    import torch

    from suite.bench.measure import matmul_rate
    rate = matmul_rate(torch.device("cpu"))
    floor = rows["today, sequential"]["matmul_flops"] / rate
    for row in rows.values():
        row["times_floor"] = round(row["seconds"] / floor, 2)
    base = rows[f"revision, {args.revision_engine}"]["seconds"]
    print(json.dumps({"epochs": args.epochs, "rows": rows, "matmul_rate_flops": rate, "floor_seconds": round(floor, 3),
                      "ratios": {f"revision {args.revision_engine} / {k}": base / v["seconds"] for k, v in rows.items() if k.startswith("today")}},
                     indent=2))


if __name__ == "__main__":
    main()
