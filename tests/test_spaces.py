"""Search spaces load, validate names against declared defaults, and reject bad files clearly."""
import pytest

from suite.registry import get_method
from suite.spaces import SpaceError, available, load_space


def test_every_shipped_space_loads():
    names = available()
    assert {"gsd", "miaucl", "lsi", "full", "ablation", "clip_global", "resnet_flow", "sssnet", "off_apexnet", "sca"} <= set(names)
    for name in names:
        space = load_space(name)
        defaults = get_method(space.method).defaults
        assert {p.name for p in space.params} <= set(defaults)


def test_gsd_space_content():
    space = load_space("gsd")
    params = {p.name: p for p in space.params}
    assert space.method == "micro_au_clip" and params["lambda_gd"].log and params["gda_heads"].choices == (1, 2, 4)


@pytest.mark.parametrize("text, message", [
    ("method: micro_au_clip\nparams:\n  lamda_gd: {float: [0.1, 1]}\n", "unknown parameter(s) ['lamda_gd']"),
    ("method: nope\nparams:\n  lr: {float: [0.1, 1]}\n", "unknown method 'nope'"),
    ("method: micro_au_clip\nparams:\n  lr: {float: [1, 0.1]}\n", "low < high"),
    ("method: micro_au_clip\nparams:\n  lr: {float: [0, 1], log: true}\n", "log scale needs low > 0"),
    ("method: micro_au_clip\nparams:\n  lr: {uniform: [0.1, 1]}\n", "exactly one of"),
    ("method: micro_au_clip\nparams: [\n", "not valid YAML"),
    ("method: micro_au_clip\n", "non-empty 'params'"),
])
def test_bad_space_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError) as e:
        load_space(str(path))
    assert message in str(e.value) and str(path) in str(e.value)


def test_unknown_space_name_lists_available():
    with pytest.raises(SpaceError, match="available: .*gsd"):
        load_space("gsdd")
