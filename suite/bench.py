"""``python -m suite.bench``: the suite's LOSO engine against the hardware floor and against a
typical research script doing the same work. Prints a table and writes JSON.

Measured (each on one dataset, one configuration, the same epochs):

1. ``suite``: full LOSO of Micro-AU CLIP through the engine (data resident, model re-initialised
   per fold, frozen tokens computed once), and its **FLOP floor**: backbone forward+backward
   FLOPs over all folds and epochs (counted with ``torch.utils.flop_counter``) ÷ the measured
   matmul rate of this device (bf16 on GPU, fp32 on CPU).
2. ``peer``: the same work as a typical research script does it — a per-fold loop that rebuilds
   the model and optimizer, decodes the JPEG frames through a ``DataLoader`` every epoch, batch
   32, and runs the backbone every step (no token cache). Implemented here only, as the peer.
3. ``frozen`` vs ``full``: per-trial (full LOSO) time with cached frozen tokens vs fine-tuning
   the whole tower, at equal epochs.

Trial packing (trials per hour at 1 and 4 trials per GPU) needs a GPU and Ray; it is reported as
skipped on CPU.

    python -m suite.bench [--clip tiny] [--image-size 112] [--scale small] [--epochs 3] [--out FILE]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import torch
from torch.utils.data import DataLoader, Dataset

from .aus import DATASET_AUS
from .data import load_cache, prepare, read_release, synthetic_root
from .engine import DatasetTensors, Engine, get_accelerator
from .paths import results_dir
from .protocol import loso_folds
from .registry import get_method, resolve_hparams
from .results import versions, write_json


def matmul_rate(device: torch.device) -> float:
    """Measured dense matmul FLOP/s: bf16 8192³ on GPU, fp32 2048³ on CPU."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    reps, start = 5, time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def backbone_flops_per_image(engine: Engine, image_size: int) -> float:
    """Forward + backward FLOPs of the image tower for one image (patch tokens)."""
    from torch.utils.flop_counter import FlopCounterMode

    encoder = engine.model.encoder
    x = torch.zeros(4, image_size, image_size, 3, dtype=torch.uint8, device=engine.device)
    requires = [p.requires_grad for p in encoder.visual.parameters()]
    for p in encoder.visual.parameters():
        p.requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        encoder.embed(x).float().pow(2).mean().backward()
    for p, r in zip(encoder.visual.parameters(), requires):
        p.requires_grad_(r)
        p.grad = None
    return counter.get_total_flops() / 4


def run_suite(spec, hp, data, aus, seed=0) -> tuple[float, Engine, list]:
    acc = get_accelerator()
    _sync(acc.device)
    start = time.perf_counter()
    engine = Engine(spec, hp, data, aus, seed, acc)
    folds = loso_folds(data.subject, hp["inner_val_fraction"], seed)
    for fold in folds:
        engine.run_fold(fold, "fixed")
    _sync(acc.device)
    return time.perf_counter() - start, engine, folds


class _JpegPairs(Dataset):
    """The peer's data path: decode onset and apex JPEGs on every access."""

    def __init__(self, samples, labels, size):
        self.samples, self.labels, self.size = samples, labels, size

    def __len__(self):
        return len(self.samples)

    def _load(self, path, box):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if box is not None:
            x, y, w, h = box
            img = img[y:y + h, x:x + w]
        return torch.from_numpy(cv2.cvtColor(cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))

    def __getitem__(self, i):
        s = self.samples[i]
        return {"onset": self._load(s.onset_path, s.face_box), "apex": self._load(s.apex_path, s.face_box),
                "au": torch.as_tensor(self.labels[i], dtype=torch.float32)}


def run_peer(spec, hp, release, data, aus, device, seed=0) -> float:
    """A typical research script: rebuild per fold, decode every epoch, batch 32, no token cache."""
    by_id = {s.sample_id: s for s in release.samples}
    samples = [by_id[str(i)] for i in data.sample_id]
    _sync(device)
    start = time.perf_counter()
    for fold in loso_folds(data.subject, hp["inner_val_fraction"], seed):
        torch.manual_seed(seed)
        model = spec.build(hp, aus, {}).to(device)
        train = fold.train[data.au_known[fold.train]]
        model.on_fold_start(data.labels[train])
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=hp["lr"], weight_decay=hp["weight_decay"])
        loader = DataLoader(_JpegPairs([samples[i] for i in train], data.labels[train], hp["image_size"]), batch_size=32, shuffle=True)
        for _ in range(hp["epochs"]):
            model.train()
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items()}
                loss = model(batch)["loss"]
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        test_loader = DataLoader(_JpegPairs([samples[i] for i in fold.test], data.labels[fold.test], hp["image_size"]), batch_size=32)
        with torch.no_grad():
            for batch in test_loader:
                torch.sigmoid(model({k: v.to(device) for k, v in batch.items() if k != "au"})["logits"])
    _sync(device)
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m suite.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="casme2", choices=["casme2", "samm"])
    p.add_argument("--clip", default="tiny")
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--scale", default="small", choices=["small", "full"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    results = results_dir()
    root = synthetic_root(args.dataset, results, scale=args.scale)
    release = read_release(args.dataset, root)
    cache = prepare(args.dataset, root, results, image_size=args.image_size)
    aus = DATASET_AUS[args.dataset]
    acc = get_accelerator()
    data = DatasetTensors.from_cache(load_cache(cache.path)[0], aus, acc.device)
    spec = get_method("micro_au_clip")
    base = {"clip_model": args.clip, "image_size": args.image_size, "epochs": args.epochs, "batch_size": 32}
    rows = {}
    for mode in ("full", "frozen"):
        hp = resolve_hparams(spec, {**base, "backbone_mode": mode})
        seconds, engine, folds = run_suite(spec, hp, data, aus)
        rows[f"suite {mode}"] = {"seconds": seconds}
        if mode == "full":
            per_image = backbone_flops_per_image(engine, args.image_size)
            images = sum(2 * int(data.au_known[f.train].sum()) * args.epochs + 2 * len(f.test) for f in folds)
            rate = matmul_rate(acc.device)
            rows["suite full"].update({"backbone_gflop_per_image": per_image / 1e9, "images": images,
                                       "matmul_tflops": rate / 1e12, "floor_seconds": per_image * images / rate})
        rows[f"peer {mode}"] = {"seconds": run_peer(spec, hp, release, data, aus, acc.device)}
    report = {
        "device": torch.cuda.get_device_name() if acc.device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "dataset": args.dataset, "scale": args.scale, "clip": args.clip, "image_size": args.image_size, "epochs": args.epochs,
        "n_samples": len(data), "rows": rows,
        "ratios": {
            "full: suite / floor": rows["suite full"]["seconds"] / rows["suite full"]["floor_seconds"],
            "full: peer / suite": rows["peer full"]["seconds"] / rows["suite full"]["seconds"],
            "frozen: peer / suite": rows["peer frozen"]["seconds"] / rows["suite frozen"]["seconds"],
            "per trial: full / frozen (suite)": rows["suite full"]["seconds"] / rows["suite frozen"]["seconds"],
        },
        "trial_packing": "skipped: needs a GPU and Ray" if acc.device.type != "cuda" else "not implemented in this script yet",
        "versions": versions(),
    }
    print(f"device: {report['device']}; {args.dataset} {args.scale} ({len(data)} clips), {args.clip} {args.image_size}px, {args.epochs} epochs")
    print(f"{'run':<14}{'seconds':>10}")
    for name, row in rows.items():
        print(f"{name:<14}{row['seconds']:>10.1f}" + (f"   floor {row['floor_seconds']:.1f} s" if "floor_seconds" in row else ""))
    for name, value in report["ratios"].items():
        print(f"{name:<34}{value:>8.1f}×")
    out = args.out or results / "bench" / f"bench-{args.dataset}-{args.scale}-{args.clip}.json"
    write_json(out, report)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
