"""Whole-face CLIP baselines — the approach Micro-AU CLIP argues against.

``clip_global``: CLIP's pooled image embedding of the apex minus that of the onset (``input``:
``diff``; or ``apex``, or ``both`` concatenated) → linear multi-label head, BCE(pos_weight).
``clip_zeroshot``: no training; per AU, CLIP similarity of the apex embedding to the "with AUk"
vs "without AUk" prompt. Meaningful only with pretrained weights: with the tiny random-init
default it is a **chance-level reference**, not a CLIP result.
"""
from __future__ import annotations

import torch
from torch import nn

from ..aus import au_prompt
from ..models.clip_backbone import ClipTokenEncoder
from ..models.detector import Detector, Method
from ..streams import KeyedDropout

CLIP_DEFAULTS = {"clip_model": "tiny", "pretrained": None, "image_size": 112, "backbone_mode": "frozen", "last_n": 1}


def _encoder(hp: dict, prompts: list[str]) -> ClipTokenEncoder:
    return ClipTokenEncoder(hp["clip_model"], hp["pretrained"], hp["image_size"], hp["backbone_mode"], hp["last_n"], -1, prompts)


class ClipGlobal(Detector):
    batchable = True  # on cached features, the fold-batched engine may train many of these as one

    def __init__(self, hp: dict, aus):
        super().__init__(len(aus))
        if hp["input"] not in ("diff", "apex", "both"):
            raise ValueError(f"input {hp['input']!r}: choose 'diff', 'apex' or 'both'")
        self.input = hp["input"]
        self.encoder = _encoder(hp, [])
        d = self.encoder.embed_dim * (2 if self.input == "both" else 1)
        self.head = nn.Sequential(KeyedDropout(hp["dropout"]), nn.Linear(d, len(aus)))

    @property
    def encoder_frozen(self) -> bool:
        return self.encoder.frozen

    @property
    def feature_encoder(self) -> nn.Module:
        return self.encoder

    @property
    def encode_config(self) -> dict:
        return {"method": "clip_global", "input": self.input}

    def encode(self, batch: dict) -> torch.Tensor:
        if self.input == "apex":
            return self.encoder.image_embedding(batch["apex"])
        apex, onset = self.encoder.image_embedding(torch.cat([batch["apex"], batch["onset"]])).chunk(2)  # one tower pass
        diff = apex - onset
        return diff if self.input == "diff" else torch.cat([apex, diff], -1)

    def forward(self, batch: dict) -> dict:
        x = batch["features"] if "features" in batch else self.encode(batch)
        return self.outputs(self.head(x.float()), batch)


class ClipZeroShot(Detector):
    def __init__(self, hp: dict, aus):
        super().__init__(len(aus))
        prompts = [au_prompt(a, True) for a in aus] + [au_prompt(a, False) for a in aus]
        self.encoder = _encoder({**hp, "backbone_mode": "frozen"}, prompts)
        self.k, self.scale = len(aus), hp["logit_scale"]

    def forward(self, batch: dict) -> dict:
        img = nn.functional.normalize(self.encoder.image_embedding(batch["apex"]).float(), dim=-1)
        text = self.encoder.prompt_embeddings()
        return {"logits": self.scale * (img @ text[: self.k].T - img @ text[self.k:].T)}


def build_clip_global(hp: dict, aus) -> ClipGlobal:
    return ClipGlobal(hp, aus)


def build_clip_zeroshot(hp: dict, aus) -> ClipZeroShot:
    return ClipZeroShot(hp, aus)


METHODS = (
    Method("clip_global", build_clip_global, {**CLIP_DEFAULTS, "input": "diff", "dropout": 0.1, "epochs": 40, "lr": 2e-3},
           "whole-face CLIP embedding (apex − onset) → linear head"),
    Method("clip_zeroshot", build_clip_zeroshot, {**CLIP_DEFAULTS, "logit_scale": 100.0, "epochs": 0},
           "CLIP zero-shot AU prompts, no training (chance-level with the random-init default)"),
)
