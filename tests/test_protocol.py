"""Protocol settings are not hyper-parameters: a typed ``Protocol`` builds the folds, a space may
not search one, and a task's hyper-parameters are resolved in one function."""
import numpy as np
import pytest
import torch

from suite.protocol import Protocol, loso_folds
from suite.registry import get_method, resolve_hparams
from suite.spaces import SpaceError, load_space


@pytest.mark.parametrize("key, spec, hint", [
    ("inner_val_fraction", "{float: [0.2, 0.5]}", "under fixed:"),
    ("metric", "{categorical: [binary, macro]}", "--metric"),
    ("selection", "{categorical: [fixed, inner]}", "inner-validation subjects"),
])
def test_a_space_that_searches_a_protocol_setting_is_refused(tmp_path, key, spec, hint):
    path = tmp_path / "protocol.yaml"
    path.write_text(f"method: micro_au_clip\nparams:\n  lr: {{float: [0.001, 0.01]}}\n  {key}: {spec}\n")
    with pytest.raises(SpaceError) as e:
        load_space(str(path))
    message = str(e.value)
    assert f"['{key}'] under params:" in message and "protocol setting" in message and hint in message and str(path) in message


def test_a_space_fixes_the_inner_share_as_the_searchs_protocol(tmp_path):
    path = tmp_path / "share.yaml"
    path.write_text("method: micro_au_clip\nparams:\n  lr: {float: [0.001, 0.01]}\nfixed: {epochs: 2, inner_val_fraction: 0.67}\n")
    space = load_space(str(path))
    assert space.fixed == {"epochs": 2} and space.protocol == {"inner_val_fraction": 0.67}
    path.write_text("method: micro_au_clip\nparams:\n  lr: {float: [0.001, 0.01]}\nfixed: {metric: macro}\n")
    with pytest.raises(SpaceError, match="--metric"):
        load_space(str(path))


def test_protocol_settings_are_typed_and_apart_from_the_models_defaults():
    spec = get_method("micro_au_clip")
    assert not {"selection", "inner_val_fraction", "metric"} & set(spec.defaults)
    hp = resolve_hparams(spec, {"epochs": "2", "selection": "inner", "inner_val_fraction": "0.3"})  # --set, as text
    assert hp["epochs"] == 2 and Protocol.of(hp) == Protocol(selection="inner", inner_val_fraction=0.3, metric="binary")
    assert resolve_hparams(spec, {}, Protocol(metric="macro"))["metric"] == "macro"
    for bad in ({"selection": "outer"}, {"metric": "micro"}, {"inner_val_fraction": 1.5}):
        with pytest.raises(ValueError):
            resolve_hparams(spec, bad)


def test_a_tasks_hyper_parameters_are_resolved_in_one_function():
    from suite.search.trial import SEARCH_PROTOCOL, task_hparams

    spec = get_method("micro_au_clip")
    protocol = SEARCH_PROTOCOL.with_(metric="macro", inner_val_fraction=0.5)
    hp = task_hparams(spec, {"epochs": 2}, {"lr": 0.002}, protocol)
    assert (hp["epochs"], hp["lr"]) == (2, 0.002) and Protocol.of(hp) == protocol
    with pytest.raises(ValueError, match="protocol settings, not hyper-parameters"):
        task_hparams(spec, {"epochs": 2}, {"metric": "binary"}, protocol)


def test_the_inner_split_follows_the_protocol_object(synthetic, tmp_path):
    """A search whose space fixes the inner-validation share: the driver's protocol, every trial's
    folds and the folds of a run carrying that protocol are split with it, not with the default."""
    from suite.data import load_cache, prepare
    from suite.engine import DatasetTensors
    from suite.evaluation import Evaluation
    from suite.search.driver import DatasetSearch
    from suite.search.options import SearchOptions
    from suite.search.trial import TaskRunner

    path = tmp_path / "share.yaml"
    path.write_text("method: micro_au_clip\nparams:\n  lr: {float: [0.001, 0.01]}\nfixed: {epochs: 1, inner_val_fraction: 0.67}\n")
    space = load_space(str(path))
    results = tmp_path / "results"
    cache = prepare("casme2", synthetic / "CASME2", results)
    opts = SearchOptions(space=str(path), datasets=("casme2",), trials=1, round_size=1, final_seeds=0, baselines=(), metric="macro",
                         name="share", results=results, seed=4)
    search = DatasetSearch(space, Evaluation("loso", ("casme2",)), {"casme2": synthetic / "CASME2"}, {"casme2": cache}, None, opts, results,
                           results / "searches" / "share", None)
    assert search.protocol == Protocol(selection="inner", inner_val_fraction=0.67, metric="macro")
    ctx = search.context(results / "out", None)
    assert ctx.protocol == search.protocol and "metric" not in ctx.fixed
    data = DatasetTensors.from_cache(load_cache(cache.path)[0], search.aus, torch.device("cpu"), cache.fingerprint)
    runner = TaskRunner(ctx, data=data)
    expected, default = loso_folds(data.subject, 0.67, 4), loso_folds(data.subject, 0.25, 4)
    for f in expected:
        assert np.array_equal(runner.folds[f.index].inner_val, f.inner_val)
    assert any(len(f.inner_val) != len(g.inner_val) for f, g in zip(expected, default))  # the share made a difference
    assert Protocol.of(runner.hparams({"lr": 0.002})) == search.protocol == Protocol.of(search.hparams({"lr": 0.002}))
    assert [f.index for f in search.protocol.folds(data.subject, 4)] == search.folds
    assert [f.index for f in search.evaluation.folds(data.subject, search.protocol, 4)] == search.folds
