"""Every registered method: a short train through the same engine, valid records; flow networks
see the input shape their papers specify; optical flow is computed once and cached."""
import pandas as pd
import pytest
import torch

from suite.registry import get_method, methods
from suite.results import RECORD_KEYS, load_record, metrics_from_predictions
from suite.runs import run

ALL = sorted(methods())
FLOW_INPUT = {"resnet_flow": (3, 112, 112), "sssnet": (3, 64, 64), "off_apexnet": (1, 28, 28), "sca": (3, 112, 112)}


@pytest.mark.parametrize("method", ALL)
def test_short_train_writes_valid_record(method, synthetic, tmp_path):
    [path] = run(method, "casme2", synthetic / "CASME2", {"epochs": "1"}, 1, results=tmp_path, log=lambda *_: None)
    record = load_record(path)
    assert set(RECORD_KEYS) <= set(record) and record["method"] == method
    frame = pd.read_parquet(path.with_name(record["predictions"]))
    assert len(frame) == 24 and frame.filter(like="prob_").notna().all().all()
    assert metrics_from_predictions(frame, "casme2", (1, 2, 4, 7, 12, 14, 15, 17))["f1_avg"] == pytest.approx(record["f1_avg"])
    assert 0.0 <= record["f1_avg"] <= 1.0


@pytest.mark.parametrize("method, shape", FLOW_INPUT.items())
def test_flow_networks_input_shape(method, shape):
    spec = get_method(method)
    assert spec.needs_flow
    model = spec.build(spec.defaults, (1, 2, 4, 7))
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    seen = []
    first.register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape[1:])))
    batch = {"flow": torch.randn(2, 112, 112, 2), "onset": torch.zeros(2, 112, 112, 3, dtype=torch.uint8),
             "apex": torch.zeros(2, 112, 112, 3, dtype=torch.uint8), "au": torch.ones(2, 4)}
    out = model(batch)
    assert seen[0] == shape and out["logits"].shape == (2, 4) and torch.isfinite(out["loss"])


def test_flow_is_computed_once_and_cached(synthetic, tmp_path):
    lines = []
    run("off_apexnet", "samm", synthetic / "SAMM", {"epochs": "1"}, 1, results=tmp_path, log=lines.append)
    run("sssnet", "samm", synthetic / "SAMM", {"epochs": "1"}, 1, results=tmp_path, log=lines.append)
    data_lines = [line for line in lines if line.startswith("data:")]
    assert "cache built" in data_lines[0] and "-flow-" in data_lines[0]
    assert "cache hit" in data_lines[1] and data_lines[1].split()[-1] == data_lines[0].split()[-1]


def test_zero_shot_and_floors_have_nothing_to_train():
    for name in ("constant", "prior", "clip_zeroshot"):
        spec = get_method(name)
        model = spec.build(spec.defaults, (1, 2))
        assert spec.defaults["epochs"] == 0
        assert not any(p.requires_grad for p in model.parameters())


def test_resnet_flow_loads_local_weights(tmp_path):
    import timm

    torch.manual_seed(7)
    source = timm.create_model("resnet18", pretrained=False, in_chans=3, num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    spec = get_method("resnet_flow")
    model = spec.build({**spec.defaults, "weights": str(path)}, (1, 2, 4))
    assert torch.equal(model.net.conv1.weight, source.conv1.weight)
    assert torch.equal(model.net.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert model.net.fc.out_features == 3  # the 1000-class head is replaced by the AU head
    fresh = spec.build(spec.defaults, (1, 2, 4))
    assert not torch.equal(fresh.net.conv1.weight, source.conv1.weight)
