"""Checks that need CUDA (skipped without it; ``benchmarks/gpu_check.sh`` runs them on a lent
GPU): bf16 autocast, the per-process memory fraction of packed trials, token-cache keys per
device and precision, and the fold-batched engine on CUDA against the same run on CPU."""
import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def gpu_data(synthetic, tmp_path_factory):
    from suite.aus import DATASET_AUS
    from suite.data import load_cache, prepare
    from suite.engine import DatasetTensors

    cache = prepare("casme2", synthetic / "CASME2", tmp_path_factory.mktemp("gpu"))
    arrays = load_cache(cache.path)[0]
    aus = DATASET_AUS["casme2"]
    return {d: DatasetTensors.from_cache(arrays, aus, torch.device(d), cache.fingerprint) for d in ("cpu", "cuda")}


def test_accelerator_is_bf16_on_cuda():
    from suite.engine import get_accelerator

    acc = get_accelerator()
    assert acc.device.type == "cuda" and acc.mixed_precision == "bf16"


def test_memory_fraction_caps_a_packed_trial():
    torch.cuda.set_per_process_memory_fraction(0.25)
    total = torch.cuda.get_device_properties(0).total_memory
    with pytest.raises(torch.cuda.OutOfMemoryError):
        torch.empty(int(total * 0.3), dtype=torch.uint8, device="cuda")
    torch.cuda.set_per_process_memory_fraction(1.0)


def test_token_cache_keys_differ_per_device_and_precision(gpu_data, tmp_path):
    from suite.engine import SequentialEngine
    from suite.registry import get_method, resolve_hparams

    spec = get_method("micro_au_clip")
    hp = resolve_hparams(spec, {"epochs": 1})
    SequentialEngine(spec, hp, gpu_data["cuda"], gpu_data["cuda"].aus, 0, feature_cache=tmp_path)
    [entry] = tmp_path.glob("*.pt")
    SequentialEngine(spec, hp, gpu_data["cuda"], gpu_data["cuda"].aus, 0, feature_cache=tmp_path)
    assert list(tmp_path.glob("*.pt")) == [entry]  # the same device and precision reads it
    from suite.token_cache import feature_key

    engine = SequentialEngine(spec, hp, gpu_data["cuda"], gpu_data["cuda"].aus, 0)
    enc = engine.model.encoder
    assert feature_key("fp", engine.model.encode_config, enc, "cuda-bf16") != feature_key("fp", engine.model.encode_config, enc, "cpu-no")


def test_batched_engine_on_cuda_agrees_with_cpu(gpu_data):
    from suite.folds import FoldRunner, FoldTask
    from suite.protocol import loso_folds
    from suite.registry import get_method, resolve_hparams

    spec = get_method("micro_au_clip")
    hp = resolve_hparams(spec, {"epochs": 3, "batch_size": 8, "dropout": 0.1, "selection": "inner", "inner_val_fraction": 0.67})
    tasks = [FoldTask(f, hp, 0) for f in loso_folds(gpu_data["cpu"].subject, hp["inner_val_fraction"], 0)]
    on_gpu = FoldRunner(spec, gpu_data["cuda"], "batched").run(tasks)
    on_cpu = FoldRunner(spec, gpu_data["cpu"], "batched", accelerator=None).run(tasks)
    for g, c in zip(on_gpu, on_cpu):
        assert np.abs(g.output.prob - c.output.prob).mean() < 0.05  # bf16 autocast on CUDA, fp32 on CPU
        assert abs(g.output.inner_f1 - c.output.inner_f1) < 0.15


def test_a_fine_tuned_tower_on_cuda_runs_sequential_and_finishes(gpu_data):
    """A trained tower is never batched (its numbers would depend on its company): on CUDA too,
    auto runs it on the sequential engine, in bf16."""
    from suite.folds import FoldRunner, FoldTask
    from suite.protocol import loso_folds
    from suite.registry import get_method, resolve_hparams

    spec = get_method("micro_au_clip")
    hp = resolve_hparams(spec, {"epochs": 1, "batch_size": 8, "dropout": 0.1, "selection": "inner", "inner_val_fraction": 0.67,
                                "backbone_mode": "full"})
    cuda = gpu_data["cuda"]
    tasks = [FoldTask(f, hp, 0) for f in loso_folds(cuda.subject, hp["inner_val_fraction"], 0)[:2]]
    outcomes = FoldRunner(spec, cuda).run(tasks)
    assert all(o.ok and o.engine == "sequential" and np.isfinite(o.output.prob).all() for o in outcomes)
