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
    from suite.engine import Engine
    from suite.registry import get_method, resolve_hparams

    spec = get_method("micro_au_clip")
    hp = resolve_hparams(spec, {"epochs": 1})
    Engine(spec, hp, gpu_data["cuda"], gpu_data["cuda"].aus, 0, feature_cache=tmp_path)
    [entry] = tmp_path.glob("*.pt")
    Engine(spec, hp, gpu_data["cuda"], gpu_data["cuda"].aus, 0, feature_cache=tmp_path)
    assert list(tmp_path.glob("*.pt")) == [entry]  # the same device and precision reads it
    from suite.token_cache import feature_key

    engine = Engine(spec, hp, gpu_data["cuda"], gpu_data["cuda"].aus, 0)
    enc = engine.model.encoder
    assert feature_key("fp", engine.model.encode_config, enc, "cuda-bf16") != feature_key("fp", engine.model.encode_config, enc, "cpu-no")


def test_batched_engine_on_cuda_agrees_with_cpu(gpu_data):
    from suite.batched import BatchedTrainer, run_folds_batched
    from suite.engine import Engine
    from suite.protocol import loso_folds
    from suite.registry import get_method, resolve_hparams

    spec = get_method("micro_au_clip")
    hp = resolve_hparams(spec, {"epochs": 3, "batch_size": 8, "dropout": 0.0, "selection": "inner", "inner_val_fraction": 0.67})
    cuda = gpu_data["cuda"]
    features = Engine(spec, hp, cuda, cuda.aus, 0).features.float()
    folds = loso_folds(cuda.subject, hp["inner_val_fraction"], 0)
    on_gpu = run_folds_batched(BatchedTrainer(spec, cuda, 0, features), [(f, hp) for f in folds])
    on_cpu = run_folds_batched(BatchedTrainer(spec, gpu_data["cpu"], 0, features.cpu()), [(f, hp) for f in folds])
    for g, c in zip(on_gpu, on_cpu):
        assert np.abs(g.prob - c.prob).mean() < 0.05  # bf16 autocast on CUDA, fp32 on CPU
        assert abs(g.inner_f1 - c.inner_f1) < 0.15


def test_fine_tuned_towers_fold_batched_on_cuda(gpu_data):
    """A trained tower on CUDA: the automatic choice batches it, as many models per run as the
    measured memory of one model's step allows, and its outputs agree with the sequential engine."""
    from suite.batched import BatchedTrainer, run_folds_batched
    from suite.engine import Engine
    from suite.protocol import loso_folds
    from suite.registry import get_method, resolve_hparams

    spec = get_method("micro_au_clip")
    hp = resolve_hparams(spec, {"epochs": 1, "batch_size": 8, "dropout": 0.0, "selection": "inner", "inner_val_fraction": 0.67,
                                "backbone_mode": "full"})
    cuda = gpu_data["cuda"]
    engine = Engine(spec, hp, cuda, cuda.aus, 0)
    assert engine.batchable == (True, "") and engine.sequential_preferred == ""
    folds = loso_folds(cuda.subject, hp["inner_val_fraction"], 0)[:3]
    trainer = BatchedTrainer(spec, cuda, 0, None)
    assert 1 <= trainer.models_per_run(_job(hp, folds[0], cuda), 3) <= 3
    batched = run_folds_batched(trainer, [(f, hp) for f in folds])
    for b, s in zip(batched, [engine.run_fold(f, "inner") for f in folds]):
        assert np.abs(b.prob - s.prob).mean() < 0.05  # bf16 autocast in both, summed in another order


def _job(hp, fold, data):
    from suite.batched import Job

    return Job(hp, data.any_known(fold.train), fold.test, fold.index, 1)
