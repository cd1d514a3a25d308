"""OFF-ApexNet (Gan, Liong, Yau, Huang, Tan, "OFF-ApexNet on micro-expression recognition
system", Signal Processing: Image Communication 2019): two shallow streams, one on the horizontal
and one on the vertical onset→apex flow, 28×28 each; conv 5×5 (6) → max-pool 2 → conv 5×5 (16) →
max-pool 2 per stream, concatenated, FC 1024 → FC 1024 → K. As in the MEB benchmark, the
recognition head is replaced by a K-AU multi-label head trained with BCE (our adaptation)."""
from __future__ import annotations

import torch
from torch import nn

from ..models.detector import Method
from ..streams import KeyedDropout
from .flow_input import FlowNetwork, flow_input

INPUT_SIZE = 28


def _stream() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())


class OffApexNet(FlowNetwork):
    def __init__(self, hp: dict, aus):
        super().__init__(len(aus))
        self.u, self.v = _stream(), _stream()
        self.head = nn.Sequential(nn.Linear(2 * 16 * 4 * 4, hp["fc"]), nn.ReLU(), KeyedDropout(hp["dropout"]),
                                  nn.Linear(hp["fc"], hp["fc"]), nn.ReLU(), KeyedDropout(hp["dropout"]), nn.Linear(hp["fc"], len(aus)))

    def encode(self, batch: dict) -> torch.Tensor:
        return flow_input(batch, INPUT_SIZE, magnitude=False)

    def network(self, flow: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.u(flow[:, :1]), self.v(flow[:, 1:])], 1))


def build_off_apexnet(hp: dict, aus) -> OffApexNet:
    return OffApexNet(hp, aus)


METHODS = (Method("off_apexnet", build_off_apexnet, {"fc": 1024, "dropout": 0.5, "epochs": 60, "lr": 1e-3},
                   "OFF-ApexNet: two-stream shallow CNN on horizontal/vertical flow, 28 px", needs_flow=True),)
