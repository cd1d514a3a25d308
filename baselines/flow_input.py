"""Optical-flow input shared by the flow baselines: the cached onset→apex flow [B, H, W, 2]
resized to the network's input size (vectors rescaled with the image) plus its magnitude."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def flow_input(batch: dict, size: int, magnitude: bool = True) -> torch.Tensor:
    flow = batch["flow"].permute(0, 3, 1, 2).float()
    if flow.shape[-1] != size:
        flow = F.interpolate(flow, size=(size, size), mode="bilinear", align_corners=False) * (size / flow.shape[-1])
    if magnitude:
        flow = torch.cat([flow, flow.norm(dim=1, keepdim=True)], dim=1)
    return flow
