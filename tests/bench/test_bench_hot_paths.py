"""pytest-benchmark suites for the hot paths on CPU: cache load, one training step of each
method family, one LOSO fold of the tiny default. ``tox -e bench`` runs them with timing; in the
normal test run each executes once as a smoke test (``--benchmark-disable``)."""
import numpy as np
import pytest
import torch

from suite.aus import DATASET_AUS
from suite.data import build_cache, load_cache, read_release
from suite.engine import DatasetTensors, SequentialEngine, get_accelerator
from suite.folds import FoldTask, run_tasks
from suite.jobs import ModelJob
from suite.protocol import loso_folds
from suite.registry import get_method, resolve_hparams

AUS = DATASET_AUS["casme2"]
FAMILIES = {  # one representative per family: CLIP patch tokens, CLIP global, flow CNNs
    "micro_au_clip": {}, "clip_global": {}, "sssnet": {}, "off_apexnet": {}, "resnet_flow": {}, "sca": {},
}


@pytest.fixture(scope="module")
def cache(synthetic, tmp_path_factory):
    release = read_release("casme2", synthetic / "CASME2")
    return build_cache(release, tmp_path_factory.mktemp("bench-cache"), image_size=112, flow=True)


def test_cache_load(benchmark, cache):
    arrays, meta = benchmark(load_cache, cache.path)
    assert arrays["onset"].dtype == np.uint8 and arrays["flow"].shape[1:] == (112, 112, 2) and meta["n_samples"] == 24


@pytest.mark.parametrize("method", FAMILIES)
def test_train_step(benchmark, cache, method):
    arrays, _ = load_cache(cache.path)
    acc = get_accelerator()
    data = DatasetTensors.from_cache(arrays, AUS, acc.device)
    spec = get_method(method)
    engine = SequentialEngine(spec, resolve_hparams(spec, FAMILIES[method]), data, AUS, 0, acc)
    engine.reset(ModelJob(engine.hp, 0, 0, np.arange(len(data)), np.arange(0), 1))
    batch = engine.batch(np.arange(16), with_labels=True)

    def step():
        with acc.autocast():
            loss = engine.model(batch)["loss"]
        engine.optimizer.zero_grad()
        acc.backward(loss)
        engine.optimizer.step()
        return loss.item()

    assert np.isfinite(benchmark(step))


def test_one_fold_tiny_default(benchmark, cache):
    arrays, _ = load_cache(cache.path)
    acc = get_accelerator()
    data = DatasetTensors.from_cache(arrays, AUS, acc.device)
    spec = get_method("micro_au_clip")
    hp = resolve_hparams(spec, {"selection": "fixed"})
    engine = SequentialEngine(spec, hp, data, AUS, 0, acc)
    fold = loso_folds(data.subject)[0]
    [out] = benchmark.pedantic(run_tasks, args=(engine.run_jobs, data, [FoldTask(fold, hp, 0)]), rounds=3, iterations=1)
    assert out.prob.shape == (len(fold.test), len(AUS)) and torch.isfinite(torch.as_tensor(out.prob)).all()
