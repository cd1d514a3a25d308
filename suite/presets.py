"""Named configurations of Micro-AU CLIP (``--preset`` on ``suite.train`` and ``suite.search``).

* ``ours`` — the suite's reading of the paper's abstract (the method's declared defaults).
* ``paper`` — the setup as one secondary source describes the full paper: ViT-B/32, optical-flow
  input, a fine-tuned text encoder, prompt-based recognition beside the rule tables. That source
  is an AI-written digest (``arxivsub/arXivSub_daily_arxiv``, README entry 466 of 2026-03-18) and
  not fully reliable; ``docs/method.md`` sets its words beside the abstract's and the suite's.

A preset is a set of hyper-parameter overrides applied before ``--set`` (and, in a search, before
the space's own values), so any key can still be changed. Records name the preset and its source.
"""
from __future__ import annotations

from dataclasses import dataclass, field

PRESET_METHODS = ("micro_au_clip",)  # and its registered ablations (same hyper-parameters)


@dataclass(frozen=True)
class Preset:
    name: str
    source: str
    overrides: dict = field(default_factory=dict)


PRESETS = {
    "ours": Preset("ours", "the suite's reading of the abstract of arXiv 2603.16302 (docs/method.md)"),
    "paper": Preset(
        "paper",
        "arXiv 2603.16302 as described by an AI-written digest of the full text (arxivsub/arXivSub_daily_arxiv, "
        "entry 466, 2026-03-18; not fully reliable): ViT-B/32, optical-flow input, fine-tuned text encoder, "
        "prompt-based recognition",
        {"clip_model": "ViT-B-32", "image_size": 224, "motion": "flow", "backbone_mode": "full", "text_mode": "full",
         "prompt_recognition": True},
    ),
}


class PresetError(ValueError):
    pass


def preset_overrides(name: str | None, method: str) -> tuple[dict, dict]:
    """(hyper-parameter overrides, the record fields naming the preset) for ``--preset NAME``."""
    if name is None:
        return {}, {}
    if name not in PRESETS:
        raise PresetError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    if not method.startswith(PRESET_METHODS):
        raise PresetError(f"--preset {name}: presets configure {', '.join(PRESET_METHODS)} (and its ablations), not {method!r}")
    p = PRESETS[name]
    return dict(p.overrides), {"preset": p.name, "preset_source": p.source}
