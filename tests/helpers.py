"""Builders the model tests share (imported by test modules; pytest puts tests/ on the path)."""
import torch

from suite.aus import DATASET_AUS
from suite.models.micro_au_clip import MicroAUCLIP
from suite.registry import get_method, resolve_hparams

AUS = DATASET_AUS["casme2"]


def micro_au_clip(**overrides) -> MicroAUCLIP:
    """Micro-AU CLIP for CASME II's AUs with these hyper-parameters, seed 0."""
    torch.manual_seed(0)
    return MicroAUCLIP(resolve_hparams(get_method("micro_au_clip"), overrides), AUS)


def frames_batch(b: int = 3, size: int = 112, seed: int = 0) -> dict:
    """Random onset/apex frames (the apex differs in one patch), labels and an onset→apex flow."""
    g = torch.Generator().manual_seed(seed)
    onset = torch.randint(0, 256, (b, size, size, 3), generator=g, dtype=torch.uint8)
    apex = onset.clone()
    apex[:, 20:40, 30:60] = torch.randint(0, 256, (b, 20, 30, 3), generator=g, dtype=torch.uint8)
    return {"onset": onset, "apex": apex, "au": torch.randint(0, 2, (b, len(AUS)), generator=g).float(),
            "flow": torch.randn(b, size, size, 2, generator=g) * 2}
