"""SSSNet, the shallow single-stream network of Varanka, Peng & Zhao ("Micro-expression
recognition with noisy labels", IS&T Electronic Imaging 2021), used by the MEB library as its
strongest cross-dataset AU detector (46.3 F1 on CASME II held out, REFERENCE_RESULTS.md).

Our reading (layer sizes follow our recollection of MEB's implementation; unverified here):
input u, v, |flow| at 64×64; conv 5×5 (32) → BN → ReLU → max-pool 3; conv 5×5 (64) → BN → ReLU →
max-pool 3; dropout; FC 256 → ReLU → dropout → FC K. The convolutions before batch norm have no
bias (batch norm's shift replaces it; as a parameter its gradient is exactly zero in training, and
AdamW turned floating-point noise in that zero into full steps, which batch norm's running mean
then carried into evaluation)."""
from __future__ import annotations

from torch import nn

from ..models.detector import Method
from ..streams import KeyedDropout
from .flow_input import FlowNetwork, flow_input


class SSSNet(FlowNetwork):
    def __init__(self, hp: dict, aus):
        super().__init__(len(aus))
        h1, h2, h3 = hp["h1"], hp["h2"], hp["h3"]
        self.net = nn.Sequential(
            nn.Conv2d(3, h1, 5, bias=False), nn.BatchNorm2d(h1), nn.ReLU(), nn.MaxPool2d(3),
            nn.Conv2d(h1, h2, 5, bias=False), nn.BatchNorm2d(h2), nn.ReLU(), nn.MaxPool2d(3),
            nn.Flatten(), KeyedDropout(hp["dropout"]), nn.Linear(h2 * 5 * 5, h3), nn.ReLU(), KeyedDropout(hp["dropout"]),
            nn.Linear(h3, len(aus)),
        )  # 64 → conv 60 → pool 20 → conv 16 → pool 5

    def encode(self, batch: dict):
        return flow_input(batch, 64)

    def network(self, x):
        return self.net(x)


def build_sssnet(hp: dict, aus) -> SSSNet:
    return SSSNet(hp, aus)


METHODS = (Method("sssnet", build_sssnet, {"h1": 32, "h2": 64, "h3": 256, "dropout": 0.5, "epochs": 60, "lr": 1e-3},
                   "SSSNet: shallow single-stream CNN on optical flow, 64 px", needs_flow=True),)
