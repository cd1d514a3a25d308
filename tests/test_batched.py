"""The fold-batched engine against the sequential one: same initial weights, the same fold outputs
within tolerance (dropout 0), isolation of empty, tiny and diverging models, and the engine choice."""
import numpy as np
import pytest
import torch

from suite.aus import DATASET_AUS
from suite.batched import BatchedTrainer, EngineChoiceError, Job, StackedParameters, architecture_key, choose_engine, run_folds_batched
from suite.data import load_cache, prepare
from suite.engine import DatasetTensors, Engine
from suite.protocol import loso_folds
from suite.registry import get_method, resolve_hparams
from suite.runs import run

AUS = DATASET_AUS["casme2"]
FAST = {"epochs": 3, "batch_size": 8, "dropout": 0.0, "selection": "inner", "inner_val_fraction": 0.67}


@pytest.fixture(scope="module")
def data(synthetic, tmp_path_factory):
    cache = prepare("casme2", synthetic / "CASME2", tmp_path_factory.mktemp("batched"))
    return DatasetTensors.from_cache(load_cache(cache.path)[0], AUS, torch.device("cpu"), cache.fingerprint)


@pytest.fixture(scope="module")
def flow_data(synthetic, tmp_path_factory):
    cache = prepare("casme2", synthetic / "CASME2", tmp_path_factory.mktemp("batched-flow"), flow=True)
    return DatasetTensors.from_cache(load_cache(cache.path)[0], AUS, torch.device("cpu"), cache.fingerprint)


def _assert_same_outputs(batched, sequential, atol=1e-4):
    for s, b in zip(sequential, batched, strict=True):
        assert b.fold == s.fold and b.epochs == s.epochs and np.array_equal(b.threshold, s.threshold)
        np.testing.assert_allclose(b.inner.probs, s.inner.probs, atol=atol)
        np.testing.assert_allclose(b.prob, s.prob, atol=atol)
        assert np.array_equal(b.prob >= b.threshold, s.prob >= s.threshold)  # same predictions, so the same F1


def _setup(data, method="micro_au_clip", **overrides):
    spec = get_method(method)
    hp = resolve_hparams(spec, {**FAST, **overrides})
    return spec, hp, Engine(spec, hp, data, AUS, seed=0), loso_folds(data.subject, hp["inner_val_fraction"], 0)


@pytest.mark.parametrize("method", ["micro_au_clip", "clip_global"])
def test_batched_equals_sequential_for_every_fold_and_two_configurations(data, method):
    spec, hp, engine, folds = _setup(data, method)
    other = {**hp, "lr": hp["lr"] * 3}
    if method == "micro_au_clip":
        other.update(lambda_gd=0.7, tau_gd=0.3, tau_cl=0.2)
    assert architecture_key(hp) == architecture_key(other)
    trainer = BatchedTrainer(spec, data, 0, engine.features)
    batched = run_folds_batched(trainer, [(f, hp) for f in folds] + [(f, other) for f in folds])
    other_engine = Engine(spec, other, data, AUS, seed=0)
    sequential = [engine.run_fold(f, "inner") for f in folds] + [other_engine.run_fold(f, "inner") for f in folds]
    for s, b in zip(sequential, batched):
        assert b.fold == s.fold and b.epochs == s.epochs and np.array_equal(b.threshold, s.threshold)
        assert b.inner_f1 == pytest.approx(s.inner_f1, abs=1e-12)
        np.testing.assert_allclose(b.prob, s.prob, atol=1e-4)
        np.testing.assert_allclose(b.inner.probs, s.inner.probs, atol=1e-4)
        assert np.array_equal(b.prob >= b.threshold, s.prob >= s.threshold)  # same predictions, so the same F1


def test_same_initial_weights_as_the_sequential_engine(data):
    spec, hp, engine, folds = _setup(data)
    trainer = BatchedTrainer(spec, data, 0, engine.features)
    _, params, _ = trainer._stack([Job(hp, folds[0].train, folds[0].test, 7, 1), Job(hp, folds[1].train, folds[1].test, 8, 1)])
    for name, stacked in params.items():
        for i in range(2):
            assert torch.equal(stacked[i], engine.initial_state[name])


def test_each_model_steps_as_the_sequential_engines_fused_adamw_and_may_sit_a_step_out():
    """Two models of three parameters in two learning-rate groups (the second at 0.1×), different
    learning rates and weight decays: every step equals torch.optim.AdamW(fused=True) on that
    model's own tensors, bit for bit, and a model without a gradient keeps its parameters, its
    moments and its step count."""
    gen = torch.Generator().manual_seed(0)
    shapes = {"a": (3, 4), "b": (5,), "tower": (2, 2)}
    stacked = {n: torch.randn(2, *shape, generator=gen) for n, shape in shapes.items()}
    packed = StackedParameters(stacked, {"a": 1.0, "b": 1.0, "tower": 0.1})
    assert [seg[2] for seg in packed.segments] == [1.0, 0.1]  # a and b share one segment
    lr, wd = [1e-2, 3e-3], [0.01, 0.2]
    optimizer, leaves = packed.optimizer(lr, wd)
    references = []
    for m in range(2):
        own = {n: stacked[n][m].clone().requires_grad_(True) for n in shapes}
        references.append((own, torch.optim.AdamW([{"params": [own["a"], own["b"]], "lr": lr[m]},
                                                   {"params": [own["tower"]], "lr": lr[m] * 0.1}], weight_decay=wd[m], fused=True)))
    for step in range(4):
        grads = {n: torch.randn(2, *shape, generator=gen) for n, shape in shapes.items()}
        flat_grad = torch.cat([grads[n].reshape(2, -1) for n in shapes], 1)
        stepping = [0] if step == 2 else [0, 1]  # model 1 sits step 2 out
        for m in stepping:
            packed.set_gradients(leaves[m], flat_grad[m])
            own, reference = references[m]
            for n in shapes:
                own[n].grad = grads[n][m]
            reference.step()
        before = packed.flat[1].clone()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step == 2:
            assert torch.equal(packed.flat[1], before)
        for m, (own, _) in enumerate(references):
            views = packed.views(packed.flat)
            for n in shapes:
                assert torch.equal(views[n][m], own[n].detach()), (step, m, n)
    assert [float(optimizer.state[leaves[m][0]]["step"]) for m in range(2)] == [4.0, 3.0]


def test_empty_tiny_and_diverging_models_do_not_disturb_the_others(data):
    spec, hp, engine, folds = _setup(data)
    fold = folds[0]
    known = data.any_known(fold.train)
    normal = Job(hp, known, fold.test, 5, hp["epochs"])
    trainer = BatchedTrainer(spec, data, 0, engine.features)
    [alone] = trainer.run([normal])
    diverging = Job({**hp, "lr": 1e30}, known, fold.test, 5, hp["epochs"])
    together = trainer.run([Job(hp, known[:0], fold.test, 5, 3), Job(hp, known[:1], fold.test, 5, 3), normal, diverging])
    np.testing.assert_allclose(together[2].probs, alone.probs, atol=1e-5)
    assert together[0].failed_at is None and len(together[0].epochs) == hp["epochs"]  # nothing to learn from: initial model
    assert together[1].failed_at is None
    assert together[3].failed_at is not None and "non-finite loss" in together[3].reason
    assert together[2].failed_at is None


def test_engine_choice_is_explicit(data, synthetic, tmp_path):
    assert choose_engine("auto", "m", True) == "batched" and choose_engine("auto", "m", False, "x") == "sequential"
    with pytest.raises(EngineChoiceError, match="cannot be fold-batched"):
        choose_engine("batched", "constant", False, "constant has no batched form")
    _, _, full, _ = _setup(data, backbone_mode="full")
    assert full.batchable == (True, "") and "compute-bound" in full.sequential_preferred  # a trained tower on a CPU
    assert choose_engine("auto", "m", True, "", full.sequential_preferred) == "sequential"
    assert choose_engine("batched", "m", True, "", full.sequential_preferred) == "batched"
    root = synthetic / "CASME2"
    with pytest.raises(EngineChoiceError, match="constant has no batched form"):
        run("constant", "casme2", root, {"selection": "inner"}, 1, results=tmp_path, log=None, engine="batched")
    [path] = run("micro_au_clip", "casme2", root, {"epochs": "1", "selection": "inner"}, 1, results=tmp_path, log=None)
    import json

    assert json.loads(path.read_text())["engine"] == "batched"
    [path] = run("constant", "casme2", root, {"selection": "inner"}, 1, results=tmp_path, log=None)
    record = json.loads(path.read_text())
    assert (record["engine"], record["engine_reason"]) == ("sequential", "constant has no batched form")  # printed and recorded
    lines = []
    [path] = run("micro_au_clip", "casme2", root, {"epochs": "1", "selection": "inner", "backbone_mode": "full"}, 1, results=tmp_path,
                 log=lines.append)
    record = json.loads(path.read_text())
    assert record["engine"] == "sequential" and "compute-bound" in record["engine_reason"] and any("sequential engine (its encoder is trained" in line for line in lines)


def test_seeds_batched_together_equal_each_seed_run_alone(data):
    """Final seeds train as one batch: each seed's random-init tower gives its own features and
    its own text prompts, and every seed's outputs equal the sequential engine with that seed."""
    spec, hp, _, _ = _setup(data)
    seeds = (1, 2)
    engines = {s: Engine(spec, hp, data, AUS, seed=s) for s in seeds}
    folds = {s: loso_folds(data.subject, hp["inner_val_fraction"], s) for s in seeds}
    trainer = BatchedTrainer(spec, data, seeds[0], {s: e.features for s, e in engines.items()})
    batched = run_folds_batched(trainer, [(f, hp, s) for s in seeds for f in folds[s]])
    sequential = [engines[s].run_fold(f, "inner") for s in seeds for f in folds[s]]
    for s, b in zip(sequential, batched):
        assert b.epochs == s.epochs and np.array_equal(b.threshold, s.threshold)
        np.testing.assert_allclose(b.prob, s.prob, atol=1e-4)


@pytest.mark.parametrize("method", ["off_apexnet", "sssnet", "sca"])
def test_flow_networks_batched_equal_sequential(flow_data, method):
    """The small flow networks train fold-batched on their input computed once; batch norm (SSSNet,
    SCA) keeps per-model running statistics and never sees padding, so evaluation agrees too."""
    spec, hp, engine, folds = _setup(flow_data, method, epochs=2)
    assert engine.batchable == (True, "") and engine.sequential_preferred == "" and engine.features is not None
    folds = folds[:3]
    trainer = BatchedTrainer(spec, flow_data, 0, engine.features)
    sequential = [engine.run_fold(f, "inner") for f in folds]
    _assert_same_outputs(run_folds_batched(trainer, [(f, hp) for f in folds]), sequential, atol=1e-3)  # convolutions sum in another order
    chunked = run_folds_batched(BatchedTrainer(spec, flow_data, 0, engine.features, max_models=2), [(f, hp) for f in folds])
    _assert_same_outputs(chunked, sequential, atol=1e-3)


@pytest.mark.parametrize("mode", ["full", "last_n"])
def test_fine_tuned_towers_batched_equal_sequential(data, mode):
    """With a trained image tower the models take frames: each model's tower weights (trained and
    frozen) and AdamW state are stacked, the tower at backbone_lr_scale as in the sequential
    engine's parameter groups."""
    spec, hp, engine, folds = _setup(data, backbone_mode=mode, epochs=1, batch_size=16)
    assert engine.features is None
    folds = folds[:2]
    trainer = BatchedTrainer(spec, data, 0, None)
    _assert_same_outputs(run_folds_batched(trainer, [(f, hp) for f in folds]), [engine.run_fold(f, "inner") for f in folds], atol=2e-4)
