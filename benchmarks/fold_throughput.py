"""Time one LOSO fold of Micro-AU CLIP with an open_clip ViT-B-16 at 224 px and print images/s.

Runs the engine directly (no Ray/Optuna needed), on synthetic full-scale CASME II:

    python benchmarks/fold_throughput.py [--clip ViT-B-16] [--mode full] [--epochs 5] [--batch-size 32]

Images/s counts every image that passes through the backbone in training (onset + apex per
sample per epoch) and in prediction. Record results in docs/benchmarks.md with the device.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from suite.aus import DATASET_AUS
from suite.data import load_cache, prepare
from suite.engine import DatasetTensors, Engine, get_accelerator
from suite.paths import results_dir
from suite.protocol import loso_folds
from suite.registry import get_method, resolve_hparams
from suite.results import versions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", default="ViT-B-16")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--mode", default="full", choices=["frozen", "last_n", "full"])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--scale", default="full", choices=["small", "full"])
    args = p.parse_args()
    from suite.data import synthetic_root

    results = results_dir()
    root = synthetic_root("casme2", results, scale=args.scale)
    cache = prepare("casme2", root, results, image_size=args.image_size)
    arrays, _ = load_cache(cache.path)
    aus = DATASET_AUS["casme2"]
    acc = get_accelerator()
    data = DatasetTensors.from_cache(arrays, aus, acc.device)
    spec = get_method("micro_au_clip")
    hp = resolve_hparams(spec, {"clip_model": args.clip, "image_size": args.image_size, "backbone_mode": args.mode,
                                "epochs": args.epochs, "batch_size": args.batch_size})
    engine = Engine(spec, hp, data, aus, 0, acc)
    fold = loso_folds(data.subject, hp["inner_val_fraction"], 0)[0]
    if acc.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    engine.run_fold(fold, "fixed")
    if acc.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    n_train = int(data.au_known[fold.train].sum())
    images = 2 * (n_train * args.epochs + len(fold.test))
    out = {"device": torch.cuda.get_device_name() if acc.device.type == "cuda" else "cpu", "clip": args.clip,
           "image_size": args.image_size, "mode": args.mode, "epochs": args.epochs, "batch_size": args.batch_size,
           "train_samples": n_train, "fold_seconds": round(seconds, 3), "images_per_s": round(images / seconds, 1),
           "versions": versions()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
