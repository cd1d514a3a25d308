"""open_clip image tower as a patch-token encoder, plus CLIP text embeddings for prompts.

Any open_clip model name works; ``tiny`` is the embedded default (random init, sized for CPU:
112 px, patch 8 → 14×14 tokens, width 128, 4 layers; a 2-layer text tower with a 32-token context),
an open_clip model config shipped in ``model_configs/tiny.json`` and registered with open_clip's
``add_model_config`` when this module is imported, so it is built, tokenized and forced to another
image size like any other open_clip name. ``pretrained`` is a local weights file
(or, for users with hub access, an open_clip tag). Patch tokens come from open_clip's own
``forward_intermediates``; they are mapped into the joint embedding space with the tower's own
``ln_post`` and ``proj``, so AU features and text embeddings share one space.
"""
from __future__ import annotations

import logging
from pathlib import Path

import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn

BACKBONE_MODES = ("frozen", "last_n", "full")
TEXT_MODES = ("frozen", "last_n", "full")


# The suite's own open_clip model configs (``tiny``), added to open_clip's registry of model names.
MODEL_CONFIGS = Path(__file__).parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIGS)


class _RandomInitNotice(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded … initialized randomly" warning, emitted on
    every random-init model (the tiny default is one by design; records and the page say so)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


def create_clip(name: str, pretrained: str | None, image_size: int):
    """(open_clip model, tokenizer) of an open_clip model name (the suite's ``tiny`` among them) at
    ``image_size`` pixels (None: the config's own)."""
    kwargs = {"force_image_size": image_size} if image_size else {}
    root, notice = logging.getLogger(), _RandomInitNotice()
    root.addFilter(notice)  # open_clip logs through the root logger, only while it builds the model
    try:
        model = open_clip.create_model(name, pretrained=pretrained, **kwargs)
    finally:
        root.removeFilter(notice)
    return model, open_clip.get_tokenizer(name)


class ClipTokenEncoder(nn.Module):
    """The image tower (trainable as ``backbone_mode`` allows) and the prompt embeddings: encoded
    once by a frozen text tower (``text_mode='frozen'``, the tower then dropped), or by a text
    tower kept and trained (``last_n`` of its blocks, or ``full``), all prompts re-encoded in one
    batch whenever ``prompt_embeddings()`` is called (once per training step)."""

    def __init__(self, name: str, pretrained: str | None, image_size: int, mode: str, last_n: int,
                 token_layer: int, prompts: list[str], text_mode: str = "frozen", text_last_n: int = 1):
        super().__init__()
        if mode not in BACKBONE_MODES:
            raise ValueError(f"backbone_mode {mode!r}: choose one of {BACKBONE_MODES}")
        if text_mode not in TEXT_MODES:
            raise ValueError(f"text_mode {text_mode!r}: choose one of {TEXT_MODES}")
        clip, tokenizer = create_clip(name, pretrained, image_size)
        self.visual = clip.visual
        self.mode = mode
        n_blocks = len(self.visual.transformer.resblocks)
        self.token_index = token_layer % n_blocks
        self.grid = tuple(self.visual.grid_size)
        self.width = self.visual.transformer.width
        self.embed_dim = self.visual.proj.shape[1]
        if mode == "frozen":
            self.visual.lock(unlocked_groups=0)
        elif mode == "last_n":
            # open_clip's groups end with [last block, ln_post] and proj: n blocks → n + 1 groups.
            self.visual.lock(unlocked_groups=min(last_n, n_blocks) + 1)
        self.text_mode = text_mode
        tokens = tokenizer(prompts, context_length=clip.context_length) if prompts else None
        if text_mode == "frozen":  # prompts encoded once, the text tower dropped
            with torch.no_grad():
                text = clip.encode_text(tokens) if prompts else torch.zeros(0, self.embed_dim)
            self.register_buffer("text_features", nn.functional.normalize(text.float(), dim=-1))
            self.text = None
        else:
            del clip.visual  # kept above as self.visual; the rest of the model is the text tower
            clip.logit_scale.requires_grad_(False)  # CLIP's own image-text scale: unused here
            if text_mode == "last_n":
                clip.lock_text_tower(unlocked_layers=text_last_n)
            self.text = clip
            self.register_buffer("prompt_tokens", tokens)
        self.register_buffer("mean", torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1))

    @property
    def frozen(self) -> bool:
        return self.mode == "frozen"

    def prompt_embeddings(self) -> torch.Tensor:
        """Normalised prompt embeddings [P, embed_dim], in the order the prompts were given."""
        if self.text is None:
            return self.text_features
        return nn.functional.normalize(self.text.encode_text(self.prompt_tokens).float(), dim=-1)

    def text_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.text.parameters() if p.requires_grad] if self.text is not None else []

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] (or float in [0, 1]) → normalised float [B, 3, H, W]."""
        x = images.permute(0, 3, 1, 2).float()
        if images.dtype == torch.uint8:
            x = x / 255.0
        return (x - self.mean) / self.std

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens [B, N, width] of block ``token_layer`` (no class token)."""
        out = self.visual.forward_intermediates(x, indices=[self.token_index], output_fmt="NLC", intermediates_only=True)
        return out["image_intermediates"][0]

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens → the joint image-text embedding space [B, N, embed_dim]."""
        return self.visual.ln_post(tokens) @ self.visual.proj

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Projected patch tokens of uint8 frames [B, N, embed_dim]."""
        return self.project(self.tokens(self.normalize(images)))

    def image_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP's global image embedding [B, embed_dim] (the tower's own pooling)."""
        return self.visual(self.normalize(images))
