"""Frozen-encoder features shared on disk across trials: hits only when nothing they depend on changed."""
import numpy as np
import pytest
import torch

from suite.aus import DATASET_AUS
from suite.data import load_cache, prepare
from suite.engine import DatasetTensors, SequentialEngine
from suite.folds import FoldTask, run_tasks
from suite.protocol import loso_folds
from suite.registry import get_method, resolve_hparams

AUS = DATASET_AUS["casme2"]


@pytest.fixture(scope="module")
def data(synthetic, tmp_path_factory):
    cache = prepare("casme2", synthetic / "CASME2", tmp_path_factory.mktemp("results"))
    return DatasetTensors.from_cache(load_cache(cache.path)[0], AUS, torch.device("cpu"), cache.fingerprint)


def engine(data, store, method="micro_au_clip", seed=0, **overrides):
    spec = get_method(method)
    hp = resolve_hparams(spec, {"epochs": 2, "batch_size": 8, **overrides})
    return SequentialEngine(spec, hp, data, AUS, seed, feature_cache=store)


def test_second_trial_reads_the_features_and_gets_identical_predictions(data, tmp_path):
    store = tmp_path / "tokens"
    first = engine(data, store, lambda_gd=0.1)
    assert not first.features_from_disk and len(list(store.glob("*.pt"))) == 1
    # another trial of a head search: different head hyper-parameters, same encoder → a hit
    second = engine(data, store, lambda_gd=0.7, gda_layers=2)
    assert second.features_from_disk and len(list(store.glob("*.pt"))) == 1
    assert torch.equal(first.features, second.features)
    fold = loso_folds(data.subject, 0.25, 0)[0]
    cached_engine, computed_engine = engine(data, store, lambda_gd=0.7, gda_layers=2), engine(data, None, lambda_gd=0.7, gda_layers=2)
    [cached] = run_tasks(cached_engine.run_jobs, data, [FoldTask(fold, cached_engine.hp, 0)])
    [computed] = run_tasks(computed_engine.run_jobs, data, [FoldTask(fold, computed_engine.hp, 0)])
    assert np.array_equal(cached.prob, computed.prob)


@pytest.mark.parametrize("change", [
    {"seed": 1},  # random-init tower under another seed: other weights
    {"motion": "apex"},  # other encode configuration
    {"token_layer": -2},
    {"method": "clip_global"},
])
def test_anything_the_features_depend_on_makes_a_new_entry(data, tmp_path, change):
    store = tmp_path / "tokens"
    base = engine(data, store)
    other = engine(data, store, **change)
    assert not other.features_from_disk and len(list(store.glob("*.pt"))) == 2
    if other.features.shape == base.features.shape:
        assert not torch.equal(other.features, base.features)


def test_data_without_a_fingerprint_is_never_cached(data, tmp_path):
    unkeyed = DatasetTensors(**{**data.__dict__, "fingerprint": None})
    store = tmp_path / "tokens"
    engine(unkeyed, store)
    assert not store.exists()


def test_fine_tuned_encoders_do_not_use_the_store(data, tmp_path):
    store = tmp_path / "tokens"
    e = engine(data, store, backbone_mode="last_n", epochs=1)
    assert e.features is None and not store.exists()
