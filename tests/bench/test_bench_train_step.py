"""pytest-benchmark: one training step of Micro-AU CLIP (tiny CLIP, CPU), frozen and full backbone.

Run with ``tox -e bench`` or ``pytest tests/bench --benchmark-enable``; in the normal test run
each benchmark executes once, as a smoke test."""
import pytest
import torch

from suite.aus import DATASET_AUS
from suite.models.micro_au_clip import MicroAUCLIP
from suite.registry import get_method, resolve_hparams

AUS = DATASET_AUS["casme2"]


def _step_fn(mode: str, batch_size: int = 16):
    torch.manual_seed(0)
    model = MicroAUCLIP(resolve_hparams(get_method("micro_au_clip"), {"backbone_mode": mode}), AUS)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    g = torch.Generator().manual_seed(0)
    batch = {
        "onset": torch.randint(0, 256, (batch_size, 112, 112, 3), generator=g, dtype=torch.uint8),
        "apex": torch.randint(0, 256, (batch_size, 112, 112, 3), generator=g, dtype=torch.uint8),
        "au": torch.randint(0, 2, (batch_size, len(AUS)), generator=g).float(),
    }
    if model.encoder_frozen:  # as the engine does: frozen tokens computed once, outside the step
        with torch.no_grad():
            batch["features"] = model.encode(batch)

    def step():
        opt.zero_grad()
        loss = model(batch)["loss"]
        loss.backward()
        opt.step()
        return loss.item()
    return step


@pytest.mark.parametrize("mode", ["frozen", "full"])
def test_train_step(benchmark, mode):
    loss = benchmark(_step_fn(mode))
    assert loss == loss and loss > 0  # finite, positive
