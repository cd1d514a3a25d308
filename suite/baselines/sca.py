"""SCA: micro-AU detection with spatial and channel attention (Li, Huang, Chen, Zhao et al.,
"Micro-expression action unit detection with spatial and channel attention", Neurocomputing
2021).

Our reading (the paper's exact architecture and inputs are not available here): the input is
the onset→apex optical flow (u, v) plus the apex − onset grayscale difference at 112 px; four
conv stages (3×3 conv → BN → ReLU, ×2, then max-pool), each followed by channel attention
(squeeze-and-excitation) and spatial attention (CBAM-style: a 7×7 conv over channel mean and max);
global average pooling; a K-AU linear head; BCE(pos_weight)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.detector import Method
from ..streams import KeyedDropout
from .flow_input import FlowNetwork, flow_input


class ChannelAttention(nn.Module):
    def __init__(self, c: int, reduction: int = 8):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(c, max(c // reduction, 4)), nn.ReLU(), nn.Linear(max(c // reduction, 4), c))

    def forward(self, x):
        return x * torch.sigmoid(self.fc(x.mean((2, 3))))[:, :, None, None]


class SpatialAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x):
        return x * torch.sigmoid(self.conv(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2),
                         ChannelAttention(cout), SpatialAttention())


class SCANet(FlowNetwork):
    def __init__(self, hp: dict, aus):
        super().__init__(len(aus))
        w = hp["width"]
        self.size = hp["input_size"]
        self.features = nn.Sequential(_stage(3, w), _stage(w, 2 * w), _stage(2 * w, 4 * w), _stage(4 * w, 4 * w))
        self.head = nn.Sequential(KeyedDropout(hp["dropout"]), nn.Linear(4 * w, len(aus)))

    def encode(self, batch: dict) -> torch.Tensor:
        flow = flow_input(batch, self.size, magnitude=False)
        gray = (batch["apex"].float().mean(-1) - batch["onset"].float().mean(-1)) / 255.0
        gray = F.interpolate(gray[:, None], size=(self.size, self.size), mode="bilinear", align_corners=False) * 10
        return torch.cat([flow, gray], 1)

    def network(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def build_sca(hp: dict, aus) -> SCANet:
    return SCANet(hp, aus)


METHODS = (Method("sca", build_sca, {"width": 16, "input_size": 112, "dropout": 0.3, "epochs": 30, "lr": 1e-3},
                   "SCA: CNN with spatial and channel attention on flow + difference image", needs_flow=True),)
