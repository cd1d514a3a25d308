"""Micro-AU CLIP (Wei, Guo, Li, Chen, Lu, Zhao, "Micro-AU CLIP", arXiv 2603.16302, 2026).

Only the paper's abstract is available to us. What the abstract states: CLIP patch tokens; LSI
(local semantic independence) through per-AU Patch Token Attention; GSD (global semantic
dependency) through Global Dependency Attention and a GDLoss; a micro-AU contrastive loss
(MiAUCL) aligning AU features with text; emotion-label-free recognition from predicted AUs.
Everything else here is **our reading**, each choice a hyper-parameter (``DEFAULTS``) and
documented in ``docs/method.md``:

* motion input: apex − onset difference of projected patch tokens (``motion``); or the onset→apex
  optical flow fed to the image tower as an image (``motion='flow'``: horizontal, vertical and
  magnitude channels, ``flow_scale`` pixels mapped onto [0, 1]; the ``paper`` preset);
* text tower: frozen, prompts encoded once (default), or trained (``text_mode``), prompts then
  re-encoded once per step (the ``paper`` preset, after a secondary source);
* prompt-based recognition (``prompt_recognition``): the clip's AU features, weighted by the
  predicted AU probabilities, compared in the joint space with class prompts built from each
  class's AU descriptions (``suite.aus.class_prompt``); no emotion label is used;
* PTA: per-AU learnable multi-head query attending *only* over the tokens of that AU's
  face-template region (a hard mask), output projected in the joint embedding space;
* GDA: pre-norm self-attention across the K AU features with a temperature ``tau_gd``;
* GDLoss: KL from the training fold's conditional co-occurrence matrix P(AU j | AU i)
  (row-normalised) to GDA's head-averaged K×K attention;
* MiAUCL: cross-entropy of each AU feature against all 2K prompts (every AU present/absent),
  the correct one being its own AU in its true state; temperature ``tau_cl``;
* detection: scaled cosine difference to the AU's present vs absent prompt (``head='text'``) or
  a per-AU linear head; BCE with the training fold's per-AU ``pos_weight``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..aus import ACTION_UNITS, au_prompt
from ..emotions import RECOGNITION_CLASSES, class_prompt
from .clip_backbone import ClipTokenEncoder
from .detector import Detector, Method
from .losses import weighted_bce, weighted_mean
from ..streams import KeyedDropout

MOTION_MODES = ("token_diff", "apex", "diff_image", "concat", "flow")

DEFAULTS = {
    # backbone
    "clip_model": "tiny",
    "pretrained": None,
    "image_size": 112,
    "backbone_mode": "frozen",
    "last_n": 1,
    "token_layer": -1,
    "backbone_lr_scale": 0.1,
    "motion": "token_diff",
    "flow_scale": 4.0,  # motion=flow: pixels of onset→apex flow mapped onto the full input range
    # text tower: frozen (prompts encoded once) | last_n | full (prompts re-encoded every step)
    "text_mode": "frozen",
    "text_last_n": 1,
    "text_lr_scale": 0.1,
    "prompt_recognition": False,  # also recognise classes by text prompts (sequential engine)
    # LSI: Patch Token Attention
    "use_pta": True,
    "pta_heads": 2,
    "region_dilation": 0,
    # GSD: Global Dependency Attention + GDLoss
    "use_gda": True,
    "gda_layers": 1,
    "gda_heads": 1,
    "tau_gd": 1.0,
    "use_gdloss": True,
    "lambda_gd": 0.1,
    # MiAUCL
    "use_miaucl": True,
    "lambda_cl": 0.1,
    "tau_cl": 0.07,
    # detection
    "head": "text",
    "pos_weight": True,
    "dropout": 0.1,
    # training
    "epochs": 40,
    "lr": 2e-3,
}


def region_masks(aus, grid: tuple[int, int], dilation: int) -> torch.Tensor:
    """[K, N] bool: which patches lie in each AU's face-template region (dilated by whole patches)."""
    gh, gw = grid
    ys, xs = np.meshgrid((np.arange(gh) + 0.5) / gh, (np.arange(gw) + 0.5) / gw, indexing="ij")
    masks = []
    for au in aus:
        m = np.zeros((gh, gw), bool)
        for x0, y0, x1, y1 in ACTION_UNITS[au].regions:
            m |= (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
        t = torch.from_numpy(m).float()[None, None]
        if dilation > 0:
            t = F.max_pool2d(t, 2 * dilation + 1, stride=1, padding=dilation)
        masks.append(t.flatten() > 0)
    return torch.stack(masks)


class PatchTokenAttention(nn.Module):
    """Per-AU query attending only over its region's tokens (LSI).

    A patch outside every AU's region is never attended to, so the model keeps only the patches
    inside some region (``positions``, ``keep``; e.g. 106 of 196 for CASME II's AUs): the token
    cache, the minibatches and PTA's attention then cover about half the grid — the same
    function, about half the arithmetic and memory."""

    def __init__(self, n_aus: int, dim: int, heads: int, masks: torch.Tensor):
        super().__init__()
        if dim % heads:
            raise ValueError(f"pta_heads={heads} must divide the embedding width {dim}")
        self.heads, self.dh = heads, dim // heads
        self.query = nn.Parameter(torch.randn(n_aus, heads, self.dh) * 0.02)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.positions = tuple(torch.nonzero(masks.any(0)).flatten().tolist())  # grid patches inside some region
        self.register_buffer("masks", masks[:, list(self.positions)])  # [K, len(positions)]

    def keep(self, tokens: torch.Tensor) -> torch.Tensor:
        """Grid tokens [B, N, D] → the tokens PTA reads [B, len(positions), D]."""
        return tokens[:, list(self.positions)]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens``: the kept ones (``keep``). Keys and values are never materialised per token:
        q·(W_k t + b_k) = (W_kᵀq)·t + q·b_k, and q·b_k is the same for every token (it cancels in
        the softmax); Σ attn·(W_v t + b_v) = W_v(Σ attn·t) + b_v. Same function as projecting
        every token, ~8× fewer FLOPs."""
        b, n, d = tokens.shape
        w_k, w_v = self.kv.weight[:d].view(self.heads, self.dh, d), self.kv.weight[d:].view(self.heads, self.dh, d)
        query_in_tokens = torch.einsum("khe,hed->khd", self.query, w_k)  # [K, H, D]
        logits = torch.einsum("bnd,khd->bkhn", tokens, query_in_tokens) / math.sqrt(self.dh)
        logits = logits.masked_fill(~self.masks[None, :, None, :], float("-inf"))
        attn = logits.softmax(-1)
        pooled = torch.einsum("bkhn,bnd->bkhd", attn, tokens)
        values = torch.einsum("bkhd,hed->bkhe", pooled, w_v) + self.kv.bias[d:].view(self.heads, self.dh)
        return self.out(values.reshape(b, -1, d))


class GlobalPooling(nn.Module):
    """Ablation 'no PTA': every AU feature from the mean of all tokens, one projection per AU."""

    positions: tuple[int, ...] = ()  # no subset of the grid: every patch is kept

    def __init__(self, n_aus: int, dim: int):
        super().__init__()
        self.proj = nn.Parameter(torch.randn(n_aus, dim, dim) / math.sqrt(dim))
        self.bias = nn.Parameter(torch.zeros(n_aus, dim))

    @staticmethod
    def keep(tokens: torch.Tensor) -> torch.Tensor:
        return tokens  # every patch enters the mean

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bd,kde->bke", tokens.mean(1), self.proj) + self.bias


class GlobalDependencyAttention(nn.Module):
    """Self-attention across the K AU features with temperature; returns the K×K attention."""

    def __init__(self, dim: int, heads: int, tau: float, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"gda_heads={heads} must divide the embedding width {dim}")
        self.heads, self.dh = heads, dim // heads
        self.register_buffer("tau", torch.tensor(float(tau)))  # a buffer: fold-batched models may differ
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), KeyedDropout(dropout), nn.Linear(2 * dim, dim))

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, k, d = f.shape
        q, kk, v = self.qkv(self.norm1(f)).view(b, k, 3, self.heads, self.dh).permute(2, 0, 3, 1, 4)
        attn = (q @ kk.transpose(-1, -2) / (math.sqrt(self.dh) * self.tau)).softmax(-1)  # [B, H, K, K]
        f = f + self.out((attn @ v).transpose(1, 2).reshape(b, k, d))
        f = f + self.mlp(self.norm2(f))
        return f, attn.mean(1)


def dependency_matrix(labels: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """Row-normalised P(AU j | AU i) from training labels [N, K], each pair counted on the clips
    where both labels are known; uniform rows for absent AUs."""
    y = np.asarray(labels, float)
    m = np.ones_like(y) if known is None else np.asarray(known, float)
    co = (y * m).T @ (y * m)  # clips with both AUs present (and known)
    with_i = (y * m).T @ m  # clips with AU i present and AU j known
    count = np.diag(co).copy()
    cond = np.divide(co, with_i, out=np.zeros_like(co), where=with_i > 0)
    rows = cond.sum(1, keepdims=True)
    k = y.shape[1]
    return np.where(rows > 0, cond / np.where(rows > 0, rows, 1), 1.0 / k)


def gd_loss(attention: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over samples and rows of KL(target row ‖ attention row); 0 iff they are equal.
    ``weight`` [B, K]: a sample counts when any of its labels does (the target is the fold's)."""
    t = target.unsqueeze(0).expand_as(attention)
    kl = (t * (torch.log(t.clamp_min(1e-12)) - torch.log(attention.clamp_min(1e-12)))).sum(-1)
    return weighted_mean(kl.mean(-1), weight)


def miau_contrastive_loss(features: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, tau, weight: torch.Tensor | None = None) -> torch.Tensor:
    """features [B, K, E]; text [2K, E] (K present prompts, then K absent); labels [B, K] in {0, 1};
    ``weight`` [B, K] leaves out padding and unknown labels."""
    b, k = features.shape[:2]
    logits = F.normalize(features, dim=-1) @ text.T / tau  # [B, K, 2K]
    target = torch.arange(k, device=features.device)[None, :] + k * (1 - labels.long())
    ce = F.cross_entropy(logits.reshape(-1, 2 * k), target.reshape(-1), reduction="none").view(b, k)
    return weighted_mean(ce, weight)


def flow_image(flow: torch.Tensor, scale: float) -> torch.Tensor:
    """Onset→apex flow [B, H, W, 2] in pixels → an image in [0, 1] [B, H, W, 3]: horizontal and
    vertical displacement around 0.5 and the magnitude from 0, ``scale`` pixels spanning the range."""
    flow = flow.float() / scale
    uv = 0.5 + 0.5 * flow.clamp(-1, 1)
    return torch.cat([uv, flow.norm(dim=-1, keepdim=True).clamp(max=1)], dim=-1)


def prompt_recognition(features: torch.Tensor, probs: torch.Tensor, class_prompts: torch.Tensor) -> torch.Tensor:
    """Class scores [B, C]: cosine between the clip's AU features [B, K, E], averaged with the
    predicted AU probabilities [B, K] as weights, and the normalised class prompts [C, E]."""
    weighted = (F.normalize(features.float(), dim=-1) * probs[..., None]).sum(1) / probs.sum(1, keepdim=True).clamp_min(1e-6)
    return F.normalize(weighted, dim=-1) @ class_prompts.T


class MicroAUCLIP(Detector):
    def __init__(self, hp: dict, aus: tuple[int, ...]):
        super().__init__(len(aus), hp["pos_weight"])
        if hp["motion"] not in MOTION_MODES:
            raise ValueError(f"motion {hp['motion']!r}: choose one of {MOTION_MODES}")
        if hp["head"] not in ("text", "linear"):
            raise ValueError(f"head {hp['head']!r}: choose 'text' or 'linear'")
        self.hp, self.aus = hp, tuple(aus)
        k = len(aus)
        prompts = [au_prompt(a, True) for a in aus] + [au_prompt(a, False) for a in aus]
        if hp["prompt_recognition"]:  # the class prompts follow the AU prompts (RECOGNITION_CLASSES order)
            prompts += [class_prompt(c) for _, classes in RECOGNITION_CLASSES for c in classes]
        self.encoder = ClipTokenEncoder(hp["clip_model"], hp["pretrained"], hp["image_size"], hp["backbone_mode"],
                                        hp["last_n"], hp["token_layer"], prompts, hp["text_mode"], hp["text_last_n"])
        d = self.encoder.embed_dim
        self.fuse = nn.Linear(2 * d, d) if hp["motion"] == "concat" else None
        masks = region_masks(aus, self.encoder.grid, hp["region_dilation"])
        self.local = PatchTokenAttention(k, d, hp["pta_heads"], masks) if hp["use_pta"] else GlobalPooling(k, d)
        self.drop = KeyedDropout(hp["dropout"])
        self.gda = nn.ModuleList([GlobalDependencyAttention(d, hp["gda_heads"], hp["tau_gd"], hp["dropout"])
                                  for _ in range(hp["gda_layers"])]) if hp["use_gda"] else nn.ModuleList()
        if hp["head"] == "text":
            self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
            self.head_weight = None
        else:
            self.head_weight = nn.Parameter(torch.randn(k, d) / math.sqrt(d))
        self.head_bias = nn.Parameter(torch.zeros(k))
        self.register_buffer("dependency", torch.full((k, k), 1.0 / k))
        # continuous loss hyper-parameters as buffers, so models trained as one batch may differ in them
        self.register_buffer("lambda_gd", torch.tensor(float(hp["lambda_gd"])))
        self.register_buffer("lambda_cl", torch.tensor(float(hp["lambda_cl"])))
        self.register_buffer("tau_cl", torch.tensor(float(hp["tau_cl"])))

    # --- engine hooks (suite.models.detector.Detector) -----------------------------------
    batchable = True  # on cached features, the fold-batched engine may train many of these as one

    @property
    def batch_refusal(self) -> str | None:
        if self.hp["text_mode"] != "frozen":
            return f"its text tower is trained (text_mode={self.hp['text_mode']}): prompts are re-encoded every step"
        if self.hp["prompt_recognition"]:
            return "prompt-based recognition is predicted by the sequential engine"
        return None

    @property
    def per_model_hparams(self) -> dict[str, tuple[str, ...]]:
        """The continuous loss weights and temperatures, held in buffers (``tau_gd`` by every GDA layer)."""
        held = {"lambda_gd": ("lambda_gd",), "lambda_cl": ("lambda_cl",), "tau_cl": ("tau_cl",)}
        taus = tuple(f"gda.{i}.tau" for i in range(len(self.gda)))
        return {**held, "tau_gd": taus} if taus else held

    @property
    def encoder_frozen(self) -> bool:
        return self.encoder.frozen and self.fuse is None

    @property
    def feature_encoder(self) -> nn.Module:
        return self.encoder

    @property
    def encode_config(self) -> dict:
        config = {"method": "micro_au_clip", "motion": self.hp["motion"], "token_index": self.encoder.token_index,
                  "positions": list(self.local.positions)}
        return {**config, "flow_scale": self.hp["flow_scale"]} if self.hp["motion"] == "flow" else config

    def on_fold_start(self, labels: np.ndarray, known: np.ndarray) -> None:
        """``pos_weight`` (``Detector``) and the dependency matrix GDLoss aims at."""
        super().on_fold_start(labels, known)
        self.dependency.copy_(torch.as_tensor(dependency_matrix(np.asarray(labels, float), known), dtype=torch.float32))

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Heads at ``lr``; the image tower at ``lr·backbone_lr_scale``; the text tower at ``lr·text_lr_scale``."""
        backbone = [p for p in self.encoder.visual.parameters() if p.requires_grad]
        text = self.encoder.text_parameters()
        ids = {id(p) for p in backbone + text}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay}]
        if backbone:
            groups.append({"params": backbone, "lr": lr * self.hp["backbone_lr_scale"], "weight_decay": weight_decay})
        if text:
            groups.append({"params": text, "lr": lr * self.hp["text_lr_scale"], "weight_decay": weight_decay})
        return groups

    # --- forward ------------------------------------------------------------------------
    def encode(self, batch: dict) -> torch.Tensor:
        """Motion token features [B, N, E] from the onset/apex frames, of the patches the AU
        features read (``self.local.keep``)."""
        mode = self.hp["motion"]

        def embed(images):
            return self.local.keep(self.encoder.embed(images))

        if mode == "flow":
            return embed(flow_image(batch["flow"], self.hp["flow_scale"]))
        if mode == "diff_image":
            diff = (batch["apex"].float() - batch["onset"].float()) / 255.0
            return embed((0.5 + 2.0 * diff).clamp(0, 1))
        if mode == "apex":
            return embed(batch["apex"])
        # one tower pass over apex and onset together: twice the batch, larger matmuls
        apex, onset = embed(torch.cat([batch["apex"], batch["onset"]])).chunk(2)
        motion = apex - onset
        if mode == "token_diff":
            return motion
        return self.fuse(torch.cat([apex, motion], dim=-1))

    def au_features(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        f = self.drop(self.local(tokens))
        attention = None
        for layer in self.gda:
            f, attention = layer(f)
        return f, attention

    def forward(self, batch: dict) -> dict:
        tokens = batch["features"] if "features" in batch else self.encode(batch)
        f, attention = self.au_features(tokens.float())
        prompts = self.encoder.prompt_embeddings()  # one batch of every prompt, once per step
        k = len(self.aus)
        text = prompts[:2 * k]
        if self.head_weight is None:
            fn = F.normalize(f, dim=-1)
            logits = self.logit_scale.exp() * ((fn * text[:k]).sum(-1) - (fn * text[k:]).sum(-1)) + self.head_bias
        else:
            logits = (f * self.head_weight).sum(-1) + self.head_bias
        out = {"logits": logits, "au_features": f, "gda_attention": attention}
        if self.hp["prompt_recognition"]:
            out["recognition"] = prompt_recognition(f, torch.sigmoid(logits.float()), prompts[2 * k:])
        if "au" in batch:
            y, w = batch["au"].float(), batch.get("weight")
            bce = weighted_bce(logits, y, self.pos_weight, w)
            loss = bce
            out["bce"] = bce.detach()
            if attention is not None and self.hp["use_gdloss"]:
                out["gdloss"] = gd_loss(attention, self.dependency, w)
                loss = loss + self.lambda_gd * out["gdloss"]
            if self.hp["use_miaucl"]:
                out["miaucl"] = miau_contrastive_loss(f, text, y, self.tau_cl, w)
                loss = loss + self.lambda_cl * out["miaucl"]
            out["loss"] = loss
        return out


def build_micro_au_clip(hp: dict, aus) -> MicroAUCLIP:
    return MicroAUCLIP(hp, aus)


MICRO_AU_CLIP = Method("micro_au_clip", build_micro_au_clip, DEFAULTS,
                       "Micro-AU CLIP: per-AU patch attention (LSI), dependency attention + GDLoss (GSD), MiAUCL")


ABLATIONS = {
    "micro_au_clip_no_pta": ({"use_pta": False}, "ablation: global token pooling instead of Patch Token Attention"),
    "micro_au_clip_no_gda": ({"use_gda": False}, "ablation: no Global Dependency Attention (and so no GDLoss)"),
    "micro_au_clip_no_gdloss": ({"use_gdloss": False}, "ablation: GDA without GDLoss"),
    "micro_au_clip_no_miaucl": ({"use_miaucl": False}, "ablation: no MiAUCL"),
    "micro_au_clip_single_frame": ({"motion": "apex", "use_pta": False}, "ablation: apex frame only, global pooling"),
}
# the methods this module declares (``suite.registry``)
METHODS = (MICRO_AU_CLIP, *(MICRO_AU_CLIP.variant(name, overrides, description) for name, (overrides, description) in ABLATIONS.items()))
