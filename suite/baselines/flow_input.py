"""Optical-flow input shared by the flow baselines: the cached onset→apex flow [B, H, W, 2]
resized to the network's input size (vectors rescaled with the image) plus its magnitude.

``FlowNetwork``: the base of the small flow networks. Their input is a fixed function of the
frames, so it is computed once per dataset (the engine's ``encoder_frozen`` path: the network
then receives ``features``). They train on the sequential engine: a convolution batched over models
rounds by their number, so a model's numbers would depend on its company (``suite.batched.batch_refusal``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.detector import Detector


def flow_input(batch: dict, size: int, magnitude: bool = True) -> torch.Tensor:
    flow = batch["flow"].permute(0, 3, 1, 2).float()
    if flow.shape[-1] != size:
        flow = F.interpolate(flow, size=(size, size), mode="bilinear", align_corners=False) * (size / flow.shape[-1])
    if magnitude:
        flow = torch.cat([flow, flow.norm(dim=1, keepdim=True)], dim=1)
    return flow


class FlowNetwork(Detector):
    """A detector on a fixed preprocessing of the flow (``encode``) followed by a trained network
    (``network``). Fixed inputs have no weights (no ``feature_encoder``), so they are not stored in
    the token cache; ``encode_config`` is the default, the class name."""

    @property
    def encoder_frozen(self) -> bool:
        return True  # the input is computed once per dataset

    def encode(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def network(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: dict) -> dict:
        x = batch["features"] if "features" in batch else self.encode(batch)
        return self.outputs(self.network(x), batch)
