"""The model contract (``suite.models.detector.Detector``): a toy method that defines only the hooks
it needs trains under both engines through the base class's defaults; a per-model
hyper-parameter no buffer holds is refused; the registry finds methods without importing them back."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from suite.batched import BatchedTrainer, check_per_model, per_model_names
from suite.engine import DatasetTensors
from suite.folds import FoldRunner, FoldTask
from suite.jobs import ModelJob
from suite.models.detector import Detector, Method
from suite.protocol import loso_folds
from suite.registry import TRAINING_DEFAULTS, MethodSpec, get_method, resolve_hparams

AUS = (1, 2, 4)


@pytest.fixture(scope="module")
def data() -> DatasetTensors:
    """4 subjects × 6 clips of 16-px frames whose apex brightens where its AUs are coded."""
    g = np.random.default_rng(0)
    n = 24
    labels = [tuple(a for a in AUS if g.random() < 0.4) or (AUS[0],) for _ in range(n)]
    onset = g.integers(0, 200, (n, 16, 16, 3), dtype=np.uint8)
    apex = onset.copy()
    for i, row in enumerate(labels):
        for k, a in enumerate(AUS):
            if a in row:
                apex[i, :, :, k] += 40
    arrays = {"sample_id": np.array([f"c{i}" for i in range(n)]), "subject": np.repeat([f"s{s}" for s in range(4)], 6),
              "emotion": np.array(["other"] * n), "objective_class": np.zeros(n, int), "aus": labels,
              "aus_unknown": [(AUS[2],) if i % 5 == 0 else () for i in range(n)], "onset": onset, "apex": apex}
    return DatasetTensors.from_cache(arrays, AUS, torch.device("cpu"))


class Toy(Detector):
    """Defines forward and, for the batched engine, a frozen input: every other hook is the base's
    (on_fold_start: pos_weight; param_groups; encode_config; feature_encoder; batch_refusal; per_model_hparams)."""

    batchable = True

    def __init__(self, hp: dict, aus):
        super().__init__(len(aus))
        self.head = nn.Linear(3, len(aus))

    @property
    def encoder_frozen(self) -> bool:
        return True

    def encode(self, batch: dict) -> torch.Tensor:
        return (batch["apex"].float() - batch["onset"].float()).mean((1, 2)) / 40.0

    def forward(self, batch: dict) -> dict:
        x = batch["features"] if "features" in batch else self.encode(batch)
        return self.outputs(self.head(x), batch)


class ScaledToy(Toy):
    """``scale`` multiplies the logits; held in a buffer, so it may differ inside one batch."""

    def __init__(self, hp: dict, aus):
        super().__init__(hp, aus)
        self.register_buffer("scale", torch.tensor(float(hp["scale"])))

    @property
    def per_model_hparams(self) -> dict[str, tuple[str, ...]]:
        return {"scale": ("scale",)}

    def forward(self, batch: dict) -> dict:
        x = batch["features"] if "features" in batch else self.encode(batch)
        return self.outputs(self.head(x) * self.scale, batch)


class UnheldToy(Toy):
    """Declares ``scale`` per model but reads it from its configuration: batched, every model of
    a batch would silently use the first one's value."""

    def __init__(self, hp: dict, aus):
        super().__init__(hp, aus)
        self.scale = hp["scale"]

    @property
    def per_model_hparams(self) -> dict[str, tuple[str, ...]]:
        return {"scale": ("scale",)}


def _spec(cls, **defaults) -> MethodSpec:
    """A method as the registry makes it, without adding it to the registry."""
    m = Method(cls.__name__.lower(), lambda hp, aus: cls(hp, aus), {"epochs": 3, "batch_size": 4, **defaults}, "toy")
    return MethodSpec(m.name, m.build, {**TRAINING_DEFAULTS, **m.defaults}, m.description, m.needs_flow)


def _tasks(data, spec, *configs, seeds=(0, 1)):
    folds = loso_folds(data.subject, 0.25, 0)
    return [FoldTask(f, resolve_hparams(spec, c), s) for c in configs for f in folds for s in seeds]


@pytest.mark.parametrize("selection", ["fixed", "inner"])
def test_toy_method_trains_under_both_engines_through_the_defaults(data, selection):
    spec = _spec(Toy)
    tasks = _tasks(data, spec, {"selection": selection})
    batched = FoldRunner(spec, data, "batched").run(tasks)
    sequential = FoldRunner(spec, data, "sequential").run(tasks)
    for b, s in zip(batched, sequential):
        assert b.ok and s.ok, (b.output, s.output)
        assert (b.engine, s.engine) == ("batched", "sequential")
        assert b.output.epochs == s.output.epochs and np.array_equal(b.output.threshold, s.output.threshold)
        np.testing.assert_allclose(b.output.prob, s.output.prob, atol=1e-5)
    first, trained = sequential[0].output.prob, FoldRunner(spec, data, "sequential").run(_tasks(data, spec, {"epochs": 0}, seeds=(0,)))[0].output.prob
    assert not np.allclose(first, trained)  # the default param_groups gave the optimizer the head: it trained


def test_default_hooks_set_pos_weight_and_train_every_parameter(data):
    model = Toy({}, AUS)
    assert model.encode_config == {"method": "Toy"} and model.feature_encoder is None and model.batch_refusal is None
    assert model.per_model_hparams == {}
    (group,) = model.param_groups(0.1, 0.01)
    assert group["lr"] == 0.1 and group["weight_decay"] == 0.01 and {id(p) for p in group["params"]} == {id(p) for p in model.parameters()}
    model.on_fold_start(data.labels, data.known)
    assert not torch.equal(model.pos_weight, torch.ones(len(AUS)))
    with pytest.raises(NotImplementedError, match="encode"):
        Detector(2).encode({})


def test_a_per_model_hyperparameter_held_in_a_buffer_differs_inside_one_batch(data):
    spec = _spec(ScaledToy, scale=1.0)
    tasks = _tasks(data, spec, {"scale": 1.0}, {"scale": 3.0, "lr": 3e-3}, seeds=(0,))
    runner = FoldRunner(spec, data, "batched")
    trainer = BatchedTrainer(spec, data, runner.features_of, runner.model)
    a, b = tasks[0], tasks[len(tasks) // 2]
    jobs = [ModelJob(t.hparams, t.seed, 0, t.fold.train, t.fold.test, 1) for t in (a, b)]
    assert trainer.architecture(jobs[0]) == trainer.architecture(jobs[1])  # one batch
    batched, sequential = runner.run(tasks), FoldRunner(spec, data, "sequential").run(tasks)
    for x, y in zip(batched, sequential):
        assert x.engine == "batched"
        np.testing.assert_allclose(x.output.prob, y.output.prob, atol=1e-5)
    assert not np.allclose(batched[0].output.prob, batched[len(tasks) // 2].output.prob)


def test_a_per_model_hyperparameter_no_buffer_holds_is_refused(data):
    spec = _spec(UnheldToy, scale=1.0)
    tasks = _tasks(data, spec, {"scale": 1.0}, {"scale": 3.0}, seeds=(0,))
    with pytest.raises(ValueError, match=r"'scale' per model.*scale is not a buffer of the model.*first one's value"):
        FoldRunner(spec, data, "batched").run(tasks)
    assert all(o.ok for o in FoldRunner(spec, data, "sequential").run(tasks))  # the sequential engine has no batch to share it


@pytest.mark.parametrize("declared, message", [
    ({"scale": ()}, "names no buffer"),
    ({"lr": ("scale",)}, "the optimizer holds it"),
    ({"colour": ("scale",)}, "not one of the method's hyper-parameters"),
])
def test_per_model_declarations_that_cannot_hold_are_errors(declared, message):
    declaring = type("Declaring", (ScaledToy,), {"per_model_hparams": property(lambda self: declared)})
    model = declaring({"scale": 2.0}, AUS)
    with pytest.raises(ValueError, match=message):
        check_per_model(model, {"scale": 2.0, "lr": 1e-3}, "toy")
    with pytest.raises(ValueError, match="does not hold its value"):  # a buffer holding another value
        check_per_model(ScaledToy({"scale": 2.0}, AUS), {"scale": 5.0}, "toy")


def test_micro_au_clip_per_model_hyperparameters_are_buffers():
    spec = get_method("micro_au_clip")
    for overrides in ({}, {"use_gda": False}, {"gda_layers": 2}):
        hp = resolve_hparams(spec, overrides)
        model = spec.build(hp, AUS)
        check_per_model(model, hp, spec.name)
        names = set(per_model_names(model))
        assert {"lr", "weight_decay", "lambda_gd", "lambda_cl", "tau_cl"} <= names
        assert ("tau_gd" in names) == bool(hp["use_gda"])


def test_a_model_that_is_not_a_detector_is_refused(data):
    spec = MethodSpec("plain", lambda hp, aus: nn.Linear(3, len(aus)), dict(TRAINING_DEFAULTS), "not a detector")
    with pytest.raises(TypeError, match="derives from suite.models.detector.Detector"):
        FoldRunner(spec, data, "auto").run(_tasks(data, spec, {}, seeds=(0,)))


def test_method_modules_do_not_import_the_registry():
    """The registry imports the method modules (an explicit list); they never import it back."""
    code = ("import sys; import suite.models.micro_au_clip, suite.baselines.clip_global, suite.baselines.constant, "
            "suite.baselines.prior, suite.baselines.resnet_flow, suite.baselines.sssnet, suite.baselines.off_apexnet, "
            "suite.baselines.sca; assert 'suite.registry' not in sys.modules, 'a method module imported the registry'")
    subprocess.run([sys.executable, "-c", code], check=True)
