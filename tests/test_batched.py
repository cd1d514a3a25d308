"""The fold-batched engine against the sequential one, both executing the fold protocol
(``suite.folds``): same initial weights, the same fold outputs within 1e-5 with dropout (each
model's masks come from its own keyed stream), isolation of empty, tiny and diverging models, and
the engine choice."""
import json

import numpy as np
import pytest
import torch

from suite.aus import DATASET_AUS
from suite.batched import BatchedTrainer, StackedParameters, architecture_key, per_model_names
from suite.data import load_cache, prepare
from suite.engine import DatasetTensors, SequentialEngine
from suite.folds import EngineChoiceError, FoldRunner, FoldTask, engine_request
from suite.jobs import ModelJob
from suite.protocol import loso_folds
from suite.registry import get_method, resolve_hparams
from suite.runs import run

AUS = DATASET_AUS["casme2"]
FAST = {"epochs": 3, "batch_size": 8, "dropout": 0.3, "selection": "inner", "inner_val_fraction": 0.67}


@pytest.fixture(scope="module")
def data(synthetic, tmp_path_factory):
    cache = prepare("casme2", synthetic / "CASME2", tmp_path_factory.mktemp("batched"))
    return DatasetTensors.from_cache(load_cache(cache.path)[0], AUS, torch.device("cpu"), cache.fingerprint)


@pytest.fixture(scope="module")
def flow_data(synthetic, tmp_path_factory):
    cache = prepare("casme2", synthetic / "CASME2", tmp_path_factory.mktemp("batched-flow"), flow=True)
    return DatasetTensors.from_cache(load_cache(cache.path)[0], AUS, torch.device("cpu"), cache.fingerprint)


def _assert_same_outputs(batched, sequential, atol=1e-5):
    for s, b in zip(sequential, batched, strict=True):
        assert (b.engine, s.engine) == ("batched", "sequential")
        b, s = b.output, s.output
        assert b.fold == s.fold and b.epochs == s.epochs and np.array_equal(b.threshold, s.threshold)
        np.testing.assert_allclose(b.inner.probs, s.inner.probs, atol=10 * atol)
        np.testing.assert_allclose(b.prob, s.prob, atol=atol)
        assert np.array_equal(b.prob >= b.threshold, s.prob >= s.threshold)  # same predictions, so the same F1


def _setup(data, method="micro_au_clip", **overrides):
    spec = get_method(method)
    hp = resolve_hparams(spec, {**FAST, **overrides})
    return spec, hp, loso_folds(data.subject, hp["inner_val_fraction"], 0)


def _both(spec, data, tasks, **batched_options):
    return FoldRunner(spec, data, "batched", **batched_options).run(tasks), FoldRunner(spec, data, "sequential").run(tasks)


@pytest.mark.parametrize("method", ["micro_au_clip", "clip_global"])
def test_batched_equals_sequential_with_dropout_for_every_fold_and_two_configurations(data, method):
    spec, hp, folds = _setup(data, method)
    other = {**hp, "lr": hp["lr"] * 3}
    if method == "micro_au_clip":
        other.update(lambda_gd=0.7, tau_gd=0.3, tau_cl=0.2)
    per_model = per_model_names(FoldRunner(spec, data).model(hp, 0))
    assert architecture_key(hp, per_model) == architecture_key(other, per_model)
    tasks = [FoldTask(f, hp, 0) for f in folds] + [FoldTask(f, other, 0) for f in folds]
    batched, sequential = _both(spec, data, tasks)
    _assert_same_outputs(batched, sequential)
    for s, b in zip(sequential, batched):
        assert b.output.inner_f1 == pytest.approx(s.output.inner_f1, abs=1e-12)


def test_same_initial_weights_as_the_sequential_engine(data):
    spec, hp, folds = _setup(data)
    engine = SequentialEngine(spec, hp, data, AUS, seed=0)
    runner = FoldRunner(spec, data)
    trainer = BatchedTrainer(spec, data, runner.features_of, runner.model)
    _, params, _ = trainer._stack([ModelJob(hp, 0, 7, folds[0].train, folds[0].test, 1), ModelJob(hp, 0, 8, folds[1].train, folds[1].test, 1)])
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
    spec, hp, folds = _setup(data)
    fold = folds[0]
    known = data.any_known(fold.train)
    normal = ModelJob(hp, 0, 5, known, fold.test, hp["epochs"])
    runner = FoldRunner(spec, data)
    trainer = BatchedTrainer(spec, data, runner.features_of, runner.model)
    [alone] = trainer.run([normal])
    diverging = ModelJob({**hp, "lr": 1e30}, 0, 5, known, fold.test, hp["epochs"])
    together = trainer.run([ModelJob(hp, 0, 5, known[:0], fold.test, 3), ModelJob(hp, 0, 5, known[:1], fold.test, 3), normal, diverging])
    assert np.array_equal(together[2].probs, alone.probs)  # its own stream: the company changes no bit
    assert together[0].failed_at is None and len(together[0].epochs) == hp["epochs"]  # nothing to learn from: initial model
    assert together[1].failed_at is None
    assert together[3].failed_at is not None and "non-finite loss" in together[3].reason
    assert together[2].failed_at is None


def test_engine_choice_is_explicit(data, synthetic, tmp_path):
    spec, hp, _ = _setup(data)
    assert FoldRunner(spec, data).engine_for(hp) == ("batched", "")
    assert FoldRunner(get_method("constant"), data).engine_for(resolve_hparams(get_method("constant"), {"selection": "inner"})) == \
        ("sequential", "constant has no batched form")
    with pytest.raises(EngineChoiceError, match="cannot be fold-batched"):
        FoldRunner(get_method("constant"), data, "batched").engine_for(resolve_hparams(get_method("constant"), {"selection": "inner"}))
    full = {**hp, "backbone_mode": "full"}
    assert "encoder is trained" in FoldRunner(spec, data).engine_for(full)[1]
    with pytest.raises(EngineChoiceError, match="encoder is trained"):
        FoldRunner(spec, data, "batched").engine_for(full)
    # options only the sequential engine has: said and recorded, never a silent switch; with batched, an error
    assert engine_request("auto", fold_workers=2) == ("sequential", "--fold-workers 2 run on the sequential engine")
    with pytest.raises(EngineChoiceError, match="drop --compile inductor"):
        engine_request("batched", compile="inductor")
    root = synthetic / "CASME2"
    with pytest.raises(EngineChoiceError, match="constant has no batched form"):
        run("constant", "casme2", root, {"selection": "inner"}, 1, results=tmp_path, log=None, engine="batched")
    [path] = run("micro_au_clip", "casme2", root, {"epochs": "1", "selection": "inner"}, 1, results=tmp_path, log=None)
    assert json.loads(path.read_text())["engine"] == "batched"
    [path] = run("constant", "casme2", root, {"selection": "inner"}, 1, results=tmp_path, log=None)
    record = json.loads(path.read_text())
    assert (record["engine"], record["engine_reason"]) == ("sequential", "constant has no batched form")  # printed and recorded
    lines = []
    [path] = run("micro_au_clip", "casme2", root, {"epochs": "1", "selection": "inner", "backbone_mode": "full"}, 1, results=tmp_path,
                 log=lines.append)
    record = json.loads(path.read_text())
    assert record["engine"] == "sequential" and "encoder is trained" in record["engine_reason"]
    assert any("sequential engine (micro_au_clip's encoder is trained" in line for line in lines)


def test_seeds_batched_together_equal_each_seed_run_alone(data):
    """Final seeds train as one batch: each seed's random-init tower gives its own features and
    its own text prompts, and every seed's outputs equal the sequential engine with that seed."""
    spec, hp, _ = _setup(data)
    tasks = [FoldTask(f, hp, s) for s in (1, 2) for f in loso_folds(data.subject, hp["inner_val_fraction"], s)]
    _assert_same_outputs(*_both(spec, data, tasks))


@pytest.mark.parametrize("method", ["off_apexnet", "sssnet", "sca"])
def test_convolutional_networks_are_never_batched(flow_data, method):
    """A convolution batched over models rounds by their number: a model's numbers would depend
    on its company (docs/protocol.md). Auto keeps them sequential and says why; --engine batched
    fails the task with the reason (the other tasks of a call go on)."""
    spec, hp, folds = _setup(flow_data, method, epochs=1)
    assert FoldRunner(spec, flow_data).engine_for(hp) == ("sequential", f"{method} has no batched form")
    with pytest.raises(EngineChoiceError, match="no batched form"):
        FoldRunner(spec, flow_data, "batched").engine_for(hp)


@pytest.mark.parametrize("mode", ["full", "last_n"])
def test_trained_towers_are_never_batched(data, mode):
    """A trained tower's patch embedding is a convolution: batched, a model's numbers moved with
    its company (3e-5 after 2 epochs, tiny CLIP), so fine-tuning runs on the sequential engine."""
    spec, hp, folds = _setup(data, backbone_mode=mode, epochs=1, batch_size=16)
    engine, why = FoldRunner(spec, data).engine_for(hp)
    assert engine == "sequential" and "encoder is trained" in why
    frozen = {**hp, "backbone_mode": "frozen"}
    outcomes = FoldRunner(spec, data, "batched").run([FoldTask(folds[0], hp, 0), FoldTask(folds[1], frozen, 0)])
    assert not outcomes[0].ok and outcomes[0].output.refused and "encoder is trained" in outcomes[0].output.reason
    assert outcomes[1].ok and outcomes[1].engine == "batched"  # the refusal fails its own task only
