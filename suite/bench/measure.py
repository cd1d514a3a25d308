"""The measurements behind ``python -m suite.bench`` (its command line: ``suite/bench/__main__.py``)."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import cv2
import torch
from torch.utils.data import DataLoader, Dataset

from ..aus import DATASET_AUS
from ..data import load_cache, prepare, read_release, release_roots, synthetic_root
from ..engine import DatasetTensors, SequentialEngine, get_accelerator
from ..evaluation import Evaluation, load_tensors, parse_protocol
from ..folds import FoldRunner, FoldTask
from ..paths import results_dir, search_dir
from ..protocol import loso_folds
from ..registry import get_method, resolve_hparams
from ..results import versions, write_json


# (name, numerator row, denominator row or the full row's FLOP floor)
RATIOS = (
    ("full: suite / floor", "suite full", "floor"),
    ("full: peer / suite", "peer full", "suite full"),
    ("frozen: peer / suite", "peer frozen", "suite frozen"),
    ("per trial: full / frozen (suite)", "suite full", "suite frozen"),
    ("per trial: full / frozen, cached", "suite full", "suite frozen, cached"),
    ("trial: sequential / batched engine", "trial, sequential engine", "trial, batched engine"),
    ("trial: peer / batched engine", "trial, peer", "trial, batched engine"),
)


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


def backbone_flops_per_image(engine: SequentialEngine, image_size: int) -> float:
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


def run_suite(spec, hp, data, aus, seed=0, feature_cache: Path | None = None) -> tuple[float, SequentialEngine, list]:
    acc = get_accelerator()
    _sync(acc.device)
    start = time.perf_counter()
    folds = loso_folds(data.subject, hp["inner_val_fraction"], seed)
    FoldRunner(spec, data, "sequential", accelerator=acc, feature_cache=feature_cache).run([FoldTask(f, {**hp, "selection": "fixed"}, seed)
                                                                                              for f in folds])
    _sync(acc.device)
    seconds = time.perf_counter() - start
    return seconds, SequentialEngine(spec, hp, data, aus, seed, acc, feature_cache=feature_cache), folds  # the engine: for FLOP counts


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


def run_peer(spec, hp, release, data, aus, device, seed=0, nested: bool = False) -> float:
    """A typical research script: rebuild per model, decode every epoch, batch 32, no token cache.
    ``nested``: the work of one search trial — per fold an inner model (inner-validation
    predicted after every epoch) and an outer model predicting the test subject."""
    by_id = {s.sample_id: s for s in release.samples}
    samples = [by_id[str(i)] for i in data.sample_id]

    def train_and_predict(train, evaluate, every_epoch):
        torch.manual_seed(seed)
        model = spec.build(hp, aus).to(device)
        train = data.any_known(train)
        model.on_fold_start(data.labels[train], data.known[train])
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=hp["lr"], weight_decay=hp["weight_decay"])
        loader = DataLoader(_JpegPairs([samples[i] for i in train], data.labels[train], hp["image_size"]), batch_size=32, shuffle=True)
        test_loader = DataLoader(_JpegPairs([samples[i] for i in evaluate], data.labels[evaluate], hp["image_size"]), batch_size=32)
        for epoch in range(hp["epochs"]):
            model.train()
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items()}
                loss = model(batch)["loss"]
                opt.zero_grad()
                loss.backward()
                opt.step()
            if every_epoch or epoch == hp["epochs"] - 1:
                model.eval()
                with torch.no_grad():
                    for batch in test_loader:
                        torch.sigmoid(model({k: v.to(device) for k, v in batch.items() if k != "au"})["logits"])

    _sync(device)
    start = time.perf_counter()
    for fold in loso_folds(data.subject, hp["inner_val_fraction"], seed):
        if nested:
            train_and_predict(fold.inner_train, fold.inner_val, every_epoch=True)
        train_and_predict(fold.train, fold.test, every_epoch=False)
    _sync(device)
    return time.perf_counter() - start


def run_trial(spec, hp, data, aus, engine_name: str, feature_cache: Path, seed=0) -> float:
    """One search trial's work on cached frozen tokens (every fold, inner and outer model) with the
    sequential or the fold-batched engine (the fold protocol a search trial runs, ``suite.folds``)."""
    acc = get_accelerator()
    hp = {**hp, "selection": "inner", "batch_size": spec.defaults["batch_size"]}  # as a search trial runs it
    _sync(acc.device)
    start = time.perf_counter()
    folds = loso_folds(data.subject, hp["inner_val_fraction"], seed)
    FoldRunner(spec, data, engine_name, accelerator=acc, feature_cache=feature_cache).run([FoldTask(f, hp, seed) for f in folds])
    _sync(acc.device)
    return time.perf_counter() - start


def trials_per_hour(dataset: str, root: Path, packing: int, n_trials: int, fixed: dict, on_gpu: bool) -> dict:
    """Run the strictly nested ``gsd`` search (``n_trials`` configurations per fold, one round, so
    up to ``n_trials`` Tune trials at once) with ``packing`` trials per GPU (or sharing the CPUs)
    in a scratch results folder; configurations per hour of its search stage."""
    import json

    import yaml

    from .. import search
    from ..spaces import load_space

    gsd = load_space("gsd")
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-pack-") as tmp:
        space = Path(tmp) / "gsd.yaml"
        space.write_text(yaml.safe_dump({**yaml.safe_load(gsd.path.read_text()), "fixed": {**gsd.fixed, **fixed}}))
        resources = (["--gpus-per-trial", str(1 / packing), "--cpus-per-trial", str(max(1, cpus // 4))] if on_gpu
                     else ["--gpus-per-trial", "0", "--cpus-per-trial", str(max(1, cpus // packing))])
        code = search.main(["--space", str(space), "--datasets", dataset, "--data-root", str(root), "--trials", str(n_trials),
                            "--round-size", str(n_trials), "--final-seeds", "0", "--baselines", "", "--results", tmp, "--name", f"pack{packing}", *resources])
        if code != 0:
            raise RuntimeError(f"the packing search with {packing} per device exited {code}")
        summary = json.loads((search_dir(Path(tmp), f"pack{packing}") / "summary.json").read_text())
    seconds = summary["datasets"][0]["tune_s"]
    return {"per_device": packing, "trials": n_trials, "seconds": seconds, "trials_per_hour": 3600 * n_trials / seconds,
            "resources": " ".join(resources)}


def nested_search(evaluation, roots: dict, caches: dict, configs: int, round_size: int, fixed: dict, engine: str,
                  processes: int | None = None) -> dict:
    """The strictly nested ``gsd`` search's rounds on one evaluation (``suite.evaluation``: a
    release under LOSO, a transfer, a composite; ``roots``/``caches`` per release) without Ray (Optuna's ask/tell
    for every fold study as ``suite.search`` does it), on frozen tokens computed before the clock
    starts. Every slice in this process, one after another: times the whole, the slices (the
    engine), what is left (Optuna's ask/tell, its journal, bookkeeping) and each slice. With
    ``processes``: a round's slices run that many at a time in worker processes started as Ray
    starts packed trials (``process_pool_executor``; their start-up is inside the time)."""
    from dataclasses import replace

    from ..paths import token_cache_dir
    from ..search.driver import DatasetSearch
    from ..search.options import SearchOptions
    from ..search.trial import in_process_executor, process_pool_executor
    from ..spaces import load_space

    acc = get_accelerator()
    on_gpu = acc.device.type == "cuda"
    space = load_space("gsd")
    space = replace(space, fixed={**space.fixed, **fixed})
    slice_seconds, close = {}, None
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        results = Path(tmp)
        opts = SearchOptions(space="gsd", datasets=evaluation.releases, protocol=evaluation.spec, trials=configs, round_size=round_size, final_seeds=0, baselines=(),
                             engine=engine, name=f"bench-{engine}", results=results, gpus_per_trial=1 if on_gpu else 0)
        if processes:
            execute, close = process_pool_executor(processes, on_gpu)
        else:
            one_by_one = in_process_executor(on_gpu=on_gpu)

            def execute(slices, ctx, name):
                out = {}
                for s in slices:  # one at a time, each timed
                    _sync(acc.device)
                    start = time.perf_counter()
                    out.update(one_by_one([s], ctx, name))
                    _sync(acc.device)
                    slice_seconds[(s.round, s.proposal)] = time.perf_counter() - start
                    print(f"  {engine} engine, round {s.round + 1} slice {s.proposal + 1}: {slice_seconds[(s.round, s.proposal)]:.1f} s", flush=True)
                return out

        search = DatasetSearch(space, evaluation, roots, caches, None, opts, results, search_dir(results, opts.name), execute)
        spec = get_method(space.method)
        data = load_tensors(evaluation, {r: (c.path, c.fingerprint) for r, c in caches.items()}, acc.device)
        SequentialEngine(spec, search.hparams({}), data, search.aus, opts.seed, acc, feature_cache=token_cache_dir(results))  # tokens, before the clock
        start = time.perf_counter()
        try:
            docs = search.search_rounds()
        finally:
            if close:
                close()
        seconds = time.perf_counter() - start
    engines = sorted({t["engine"] for d in docs for t in d["tasks"]})
    report = {"engine": "+".join(engines), "configurations": configs, "round_size": round_size, "epochs": space.fixed["epochs"],
              "folds": len(search.folds), "clips": len(search.data), "subjects": len(set(search.data.subject.tolist())),
              "protocol": evaluation.spec, "evaluation": evaluation.key, "seconds": seconds, "proposals": [d["tasks"][0]["params"] for d in docs]}
    if processes:  # which processes ran the slices
        return {**report, "processes": processes, "pids": sorted({t["pid"] for d in docs for t in d["tasks"]})}
    return {**report, "slices_seconds": sum(slice_seconds.values()), "slice_seconds": [slice_seconds[k] for k in sorted(slice_seconds)],
            "outside_slices_seconds": seconds - sum(slice_seconds.values())}


def trial_packing_report(args, dataset_root: Path, cache) -> dict:
    """``--trial-packing K``: trials per hour of the strictly nested gsd search's first round
    (``--packing-trials`` configurations) with 1 and with K trial processes sharing the device,
    started as Ray starts packed trials (memory fraction 1/K on a GPU; cores/K threads on a
    CPU), without Ray — the GPU machines have none."""
    fixed = {"clip_model": args.clip, "image_size": args.image_size, "epochs": args.epochs}
    n, runs = args.packing_trials, []
    for k in (1, args.trial_packing):
        r = nested_search(Evaluation("loso", (args.dataset,)), {args.dataset: dataset_root}, {args.dataset: cache}, n, n, fixed, "auto",
                          processes=k)
        runs.append({"per_device": k, "trials": n, "seconds": r["seconds"], "trials_per_hour": 3600 * n / r["seconds"], "engine": r["engine"],
                     "worker_pids": r["pids"]})
        print(f"{k} trial process(es) sharing the device: {n} trials ({r['engine']} engine) in {r['seconds']:.1f} s = "
              f"{runs[-1]['trials_per_hour']:.0f} trials/hour", flush=True)
    ratio = runs[1]["trials_per_hour"] / runs[0]["trials_per_hour"]
    report = {"trial_packing": runs, "ratios": {f"trials/hour: {args.trial_packing} processes per device / 1": ratio}, "bench_pid": os.getpid(),
              "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
              "dataset": args.dataset, "scale": args.scale, "clip": args.clip, "image_size": args.image_size, "epochs": args.epochs,
              "versions": versions()}
    print(f"  {args.trial_packing} per device / 1: {ratio:.2f}× (worker start-up included, as a fresh Ray trial process has it)")
    out = args.out or results_dir() / "bench" / f"trial-packing-{args.dataset}-{args.scale}-{args.clip}.json"
    write_json(out, report)
    print(out)
    return report


def nested_search_report(args, evaluation, roots: dict, caches: dict) -> dict:
    """``--nested-search N``: the N-configuration search with the automatic (fold-batched) engine,
    then the first ``--sequential-configs`` proposals (0: none) with the sequential engine — the same
    configurations (proposals depend on the seed and their numbers alone) — compared slice by slice."""
    fixed = {"clip_model": args.clip, "image_size": args.image_size, "epochs": args.epochs}
    batched = nested_search(evaluation, roots, caches, args.nested_search, args.round_size, fixed, "auto")
    m = min(args.sequential_configs, args.nested_search)
    sequential = nested_search(evaluation, roots, caches, m, m, fixed, "sequential") if m else None
    ratios = {f"search slices 1–{m}: sequential / {batched['engine']}": sum(sequential["slice_seconds"]) / sum(batched["slice_seconds"][:m])} \
        if m else {}
    report = {"nested_search": {"batched": batched, "sequential": sequential}, "ratios": ratios,
              "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
              "dataset": evaluation.key, "protocol": evaluation.spec, "scale": args.scale, "clip": args.clip, "image_size": args.image_size,
              "versions": versions()}
    b = batched
    print(f"strictly nested gsd search, {evaluation.spec} {evaluation.key} {args.scale} ({b['folds']} folds, {b['subjects']} subjects, "
          f"{b['clips']} clips), {args.clip} {args.image_size}px tokens computed beforehand, {b['configurations']} configurations per fold "
          f"study in rounds of {b['round_size']}, {b['epochs']} epochs, no Ray; device {report['device']}")
    print(f"  {b['engine']} engine: {b['seconds']:.1f} s = {b['slices_seconds']:.1f} s in slices + {b['outside_slices_seconds']:.1f} s "
          f"outside them (Optuna ask/tell, its journal, bookkeeping)")
    if m:
        print(f"  sequential engine, the first {m} configuration(s): {sum(sequential['slice_seconds']):.1f} s against "
              f"{sum(b['slice_seconds'][:m]):.1f} s batched → {next(iter(ratios.values())):.1f}×")
    out = args.out or results_dir() / "bench" / f"nested-search-{evaluation.key}-{args.scale}-{args.clip}.json"
    write_json(out, report)
    print(out)
    return report


def benchmark(args) -> dict:
    """Every measurement ``python -m suite.bench`` asks for (``args``: its parsed options); prints
    the table, writes the JSON report and returns it."""
    results = results_dir()
    if args.protocol != "loso" and not args.nested_search:
        raise SystemExit("error: --protocol applies to --nested-search only")
    if args.nested_search:
        evaluation = parse_protocol(args.protocol, [args.dataset])[0]
        if evaluation.kind != "loso" and args.dataset != "casme2":
            raise SystemExit(f"error: --dataset applies to --protocol loso; {args.protocol} names its releases")
        roots = {r: root or synthetic_root(r, results, scale=args.scale) for r, root in release_roots(evaluation.releases, args.data_root).items()}
        caches = {r: prepare(r, roots[r], results, image_size=args.image_size) for r in evaluation.releases}
        return nested_search_report(args, evaluation, roots, caches)
    root = args.data_root or synthetic_root(args.dataset, results, scale=args.scale)
    release = read_release(args.dataset, root)
    cache = prepare(args.dataset, root, results, image_size=args.image_size)
    aus = DATASET_AUS[args.dataset]
    if args.trial_packing:
        return trial_packing_report(args, root, cache)
    acc = get_accelerator()
    data = DatasetTensors.from_cache(load_cache(cache.path)[0], aus, acc.device, cache.fingerprint)
    spec = get_method("micro_au_clip")
    base = {"clip_model": args.clip, "image_size": args.image_size, "epochs": args.epochs, "batch_size": 32}
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-tokens-") as tokens:  # a cold token cache for this run only
        tokens = Path(tokens)
        for mode in ("frozen",) if args.trial_only else ("full", "frozen"):
            hp = resolve_hparams(spec, {**base, "backbone_mode": mode})
            seconds, engine, folds = run_suite(spec, hp, data, aus, feature_cache=tokens)
            rows[f"suite {mode}"] = {"seconds": seconds}
            if mode == "frozen":
                rows["suite frozen, cached"] = {"seconds": run_suite(spec, hp, data, aus, feature_cache=tokens)[0]}
            if mode == "full":
                per_image = backbone_flops_per_image(engine, args.image_size)
                images = sum(2 * len(data.any_known(f.train)) * args.epochs + 2 * len(f.test) for f in folds)
                rate = matmul_rate(acc.device)
                rows["suite full"].update({"backbone_gflop_per_image": per_image / 1e9, "images": images,
                                           "matmul_tflops": rate / 1e12, "floor_seconds": per_image * images / rate})
            rows[f"peer {mode}"] = {"seconds": run_peer(spec, hp, release, data, aus, acc.device)}
            if mode == "frozen":  # one search trial's work: every fold, inner and outer model, tokens cached
                for name in ("sequential", "batched"):
                    rows[f"trial, {name} engine"] = {"seconds": run_trial(spec, hp, data, aus, name, tokens)}
                rows["trial, peer"] = {"seconds": run_peer(spec, hp, release, data, aus, acc.device, nested=True)}
    report = {
        "device": torch.cuda.get_device_name() if acc.device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "dataset": args.dataset, "scale": args.scale, "clip": args.clip, "image_size": args.image_size, "epochs": args.epochs,
        "n_samples": len(data), "rows": rows,
        "ratios": {name: rows[a]["seconds"] / (rows[a]["floor_seconds"] if b == "floor" else rows[b]["seconds"])
                   for name, a, b in RATIOS if a in rows and (b in rows or b == "floor")},
        "versions": versions(),
    }
    packing = None if args.no_packing else args.packing or (4 if acc.device.type == "cuda" else None)
    if packing:
        fixed = {"clip_model": args.clip, "image_size": args.image_size, "epochs": args.epochs}
        runs = [trials_per_hour(args.dataset, root, k, args.packing_trials, fixed, acc.device.type == "cuda") for k in (1, packing)]
        report["trial_packing"] = runs
        report["ratios"][f"trials/hour: {packing} per device / 1"] = runs[1]["trials_per_hour"] / runs[0]["trials_per_hour"]
    else:
        report["trial_packing"] = "skipped on CPU (pass --packing K to measure K trials sharing the cores)"
    for run in report["trial_packing"] if packing else []:
        print(f"packing {run['per_device']} per device: {run['trials']} trials in {run['seconds']:.0f} s = {run['trials_per_hour']:.0f} trials/hour")
    print(f"device: {report['device']}; {args.dataset} {args.scale if not args.data_root else args.data_root} ({len(data)} clips), {args.clip} {args.image_size}px, {args.epochs} epochs")
    print(f"{'run':<28}{'seconds':>10}")
    for name, row in rows.items():
        print(f"{name:<28}{row['seconds']:>10.2f}" + (f"   floor {row['floor_seconds']:.1f} s" if "floor_seconds" in row else ""))
    for name, value in report["ratios"].items():
        print(f"{name:<34}{value:>8.1f}×")
    out = args.out or results / "bench" / f"bench-{args.dataset}-{args.scale}-{args.clip}.json"
    write_json(out, report)
    print(out)
    return report
