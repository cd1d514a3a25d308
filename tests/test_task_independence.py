"""A task's numbers depend on nothing but the task (docs/protocol.md, "Task independence"): on
the default engine, a slice mixing configurations that change what ``encode`` computes and ones
that change the architecture, dropout on, gives every task exactly what it gets alone, and the
sequential engine's numbers within 1e-5; final seeds with a different choice per fold equal
each fold's choice run on its own."""
import numpy as np
import pytest
import torch

from suite.aus import DATASET_AUS
from suite.data import load_cache, prepare
from suite.engine import DatasetTensors
from suite.folds import FoldRunner, FoldTask
from suite.protocol import loso_folds
from suite.registry import get_method, resolve_hparams
from suite.evaluation import Evaluation
from suite.runs import evaluate_folds

AUS = DATASET_AUS["casme2"]
BASE = {"epochs": 2, "batch_size": 8, "dropout": 0.2, "selection": "inner"}
# every kind: encode (features), architecture (another batch group), per-model (buffers, optimizer)
VARIANTS = [{}, {"token_layer": -3}, {"region_dilation": 2}, {"use_pta": False}, {"backbone_mode": "full"}, {"motion": "apex"},
            {"gda_layers": 2}, {"gda_heads": 2}, {"lambda_gd": 0.7, "lr": 0.006}]


@pytest.fixture(scope="module")
def data(synthetic, tmp_path_factory):
    cache = prepare("casme2", synthetic / "CASME2", tmp_path_factory.mktemp("independence"))
    return DatasetTensors.from_cache(load_cache(cache.path)[0], AUS, torch.device("cpu"), cache.fingerprint)


@pytest.mark.slow
def test_a_mixed_slice_gives_every_task_what_it_gets_alone(data):
    spec = get_method("micro_au_clip")
    folds = loso_folds(data.subject, 0.25, 0)
    tasks = [FoldTask(folds[i % len(folds)], resolve_hparams(spec, {**BASE, **v}), 0) for i, v in enumerate(VARIANTS)]
    mixed = FoldRunner(spec, data).run(tasks)  # one slice on the default engine: every fold a different configuration
    assert all(o.ok for o in mixed)
    assert [o.engine for o in mixed] == ["sequential" if "backbone_mode" in v else "batched" for v in VARIANTS]  # a trained tower: sequential
    for task, together in zip(tasks, mixed):
        [alone] = FoldRunner(spec, data).run([task])
        [sequential] = FoldRunner(spec, data, "sequential").run([task])
        assert np.array_equal(together.output.prob, alone.output.prob)
        assert np.array_equal(together.output.inner.probs, alone.output.inner.probs)
        assert together.output.inner_f1 == alone.output.inner_f1
        assert together.output.epochs == sequential.output.epochs
        assert np.array_equal(together.output.threshold, sequential.output.threshold)
        np.testing.assert_allclose(together.output.prob, sequential.output.prob, atol=1e-5)


@pytest.mark.slow
def test_final_seeds_with_a_choice_per_fold_equal_each_choice_run_on_its_own(data):
    spec = get_method("micro_au_clip")
    choice = {f: resolve_hparams(spec, {**BASE, **VARIANTS[4 * f % len(VARIANTS)]}) for f in range(len(set(data.subject)))}  # fold 1: a tower
    seeds = [1, 2]
    by_seed, engine, _ = evaluate_folds("micro_au_clip", Evaluation("loso", ("casme2",)), lambda f: choice[f], data, seeds, None)
    assert engine == "batched, sequential"  # backbone_mode full is never batched: both engines took part
    for seed in seeds:
        folds = loso_folds(data.subject, 0.25, seed)
        for fold, out in zip(folds, by_seed[seed]):
            [own] = FoldRunner(spec, data).run([FoldTask(fold, choice[fold.index], seed)])
            assert out.fold == fold.index and out.epochs == own.output.epochs
            assert np.array_equal(out.prob, own.output.prob) and np.array_equal(out.threshold, own.output.threshold)
