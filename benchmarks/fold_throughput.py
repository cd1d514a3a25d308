"""Fine-tuning throughput of Micro-AU CLIP's image tower: the first N LOSO folds' models trained
by the sequential engine (fold after fold; a trained tower is never fold-batched, since its
numbers would depend on its company: docs/protocol.md), against the FLOP floor of the same work.

    python benchmarks/fold_throughput.py [--clip ViT-B-16] [--image-size 224] [--folds 8] [--epochs 1]

Work per fold: its model trains on the fold's training clips for ``--epochs`` (fixed selection)
and predicts the test subject. Images count onset + apex of every clip the tower sees. The floor
is the tower's forward+backward FLOPs per image (torch.utils.flop_counter) × images ÷ this
device's measured dense matmul rate (bf16 on a GPU, fp32 on a CPU). Prints one JSON object;
record it in docs/benchmarks.md with the device.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from suite.aus import DATASET_AUS
from suite.bench.measure import _sync, backbone_flops_per_image, matmul_rate
from suite.data import load_cache, prepare, synthetic_root
from suite.engine import DatasetTensors, SequentialEngine, get_accelerator
from suite.folds import FoldRunner, FoldTask
from suite.paths import results_dir
from suite.protocol import loso_folds
from suite.registry import get_method, resolve_hparams
from suite.results import versions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", default="ViT-B-16", help="open_clip model (default: ViT-B-16; tiny on a CPU)")
    p.add_argument("--image-size", type=int, default=224, help="input size in pixels (default: 224)")
    p.add_argument("--mode", default="full", choices=["last_n", "full"], help="which tower blocks train (default: full)")
    p.add_argument("--folds", type=int, default=8, help="LOSO folds, i.e. models (default: 8)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per model (default: 1)")
    p.add_argument("--batch-size", type=int, default=32, help="clips per minibatch and model (default: 32)")
    p.add_argument("--scale", default="full", choices=["small", "full"], help="synthetic CASME II size (default: full)")
    args = p.parse_args()
    results = results_dir()
    cache = prepare("casme2", synthetic_root("casme2", results, scale=args.scale), results, image_size=args.image_size)
    aus, acc = DATASET_AUS["casme2"], get_accelerator()
    data = DatasetTensors.from_cache(load_cache(cache.path)[0], aus, acc.device, cache.fingerprint)
    spec = get_method("micro_au_clip")
    hp = resolve_hparams(spec, {"clip_model": args.clip, "image_size": args.image_size, "backbone_mode": args.mode,
                                "epochs": args.epochs, "batch_size": args.batch_size, "dropout": 0.0, "selection": "fixed"})
    engine = SequentialEngine(spec, hp, data, aus, 0, acc)
    folds = loso_folds(data.subject, hp["inner_val_fraction"], 0)[:args.folds]
    images = sum(2 * (len(data.any_known(f.train)) * args.epochs + len(f.test)) for f in folds)
    floor = backbone_flops_per_image(engine, args.image_size) * images / matmul_rate(acc.device)
    _sync(acc.device)
    start = time.perf_counter()
    FoldRunner(spec, data, "sequential", accelerator=acc).run([FoldTask(f, hp, 0) for f in folds])
    _sync(acc.device)
    seconds = time.perf_counter() - start
    out = {"device": torch.cuda.get_device_name() if acc.device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
           "clip": args.clip, "image_size": args.image_size, "mode": args.mode, "folds": len(folds), "epochs": args.epochs,
           "batch_size": args.batch_size, "images": images, "floor_seconds": round(floor, 3), "versions": versions(),
           # keyed by engine, as gpu_check.sh reads it (a trained tower runs on the sequential engine only)
           "engines": {"sequential": {"seconds": round(seconds, 3), "images_per_s": round(images / seconds, 1),
                                      "times_floor": round(seconds / floor, 2)}}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
