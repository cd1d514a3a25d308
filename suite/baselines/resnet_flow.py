"""ResNet-18 on onset→apex optical flow (u, v, magnitude) at 112 px, as the MEB benchmark
library does for AU detection (Varanka et al., "Data leakage and evaluation issues in
micro-expression analysis", IEEE TAC 2024). timm's ResNet-18, random init by default; a local
timm/torchvision-format weights file is accepted (``weights``: path), adapted to 3 flow
channels by timm."""
from __future__ import annotations

import timm

from ..models.detector import Detector, Method
from .flow_input import flow_input


class ResNetFlow(Detector):
    def __init__(self, hp: dict, aus):
        super().__init__(len(aus))
        kwargs = {"pretrained": True, "pretrained_cfg_overlay": {"file": hp["weights"]}} if hp["weights"] else {"pretrained": False}
        self.size = hp["input_size"]
        self.net = timm.create_model("resnet18", in_chans=3, num_classes=len(aus), drop_rate=hp["dropout"], **kwargs)

    def forward(self, batch: dict) -> dict:
        return self.outputs(self.net(flow_input(batch, self.size)), batch)


def build_resnet_flow(hp: dict, aus) -> ResNetFlow:
    return ResNetFlow(hp, aus)


METHODS = (Method("resnet_flow", build_resnet_flow, {"weights": None, "input_size": 112, "dropout": 0.2, "epochs": 15, "lr": 1e-3},
                  "ResNet-18 (timm) on onset→apex optical flow, 112 px", needs_flow=True),)
