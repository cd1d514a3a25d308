"""Method registry: name → builder and declared defaults (timm-style ``register``).

Hyper-parameters are plain dicts validated against the method's declared defaults: an unknown
key is an error listing the valid ones; values given as text (``--set k=v``) are coerced to the
default's type."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from .metrics import F1_VARIANTS

# Modules that register methods when imported (Micro-AU CLIP and every baseline).
METHOD_MODULES = (
    "suite.models.micro_au_clip",
    "baselines.constant",
    "baselines.prior",
    "baselines.clip_global",
    "baselines.resnet_flow",
    "baselines.sssnet",
    "baselines.off_apexnet",
    "baselines.sca",
)

# Training knobs every method shares; a method's own defaults may override them.
TRAINING_DEFAULTS = {
    "epochs": 20,
    "batch_size": 16,
    "lr": 1e-3,
    "weight_decay": 0.01,
    "selection": "fixed",  # fixed epochs + threshold 0.5, or "inner": epochs & thresholds on inner-val subjects
    "inner_val_fraction": 0.25,  # share of training subjects held out as inner validation
    "metric": "binary",  # F1 variant of every choice (epochs, thresholds, search objective) and of the headline: binary | macro
}


@dataclass
class MethodSpec:
    name: str
    build: Callable  # build(hparams, aus, data_info) -> nn.Module
    defaults: dict
    description: str
    needs_flow: bool = False


_REGISTRY: dict[str, MethodSpec] = {}


def register(name: str, defaults: dict, description: str, needs_flow: bool = False):
    def deco(build):
        _REGISTRY[name] = MethodSpec(name, build, {**TRAINING_DEFAULTS, **defaults}, description, needs_flow)
        return build
    return deco


def register_variant(name: str, base: str, overrides: dict, description: str) -> None:
    """A named configuration of a registered method (e.g. an ablation)."""
    spec = _REGISTRY[base]
    _REGISTRY[name] = MethodSpec(name, spec.build, {**spec.defaults, **overrides}, description, spec.needs_flow)


def needs_flow(spec: MethodSpec, hparams: dict) -> bool:
    """Whether a configuration reads the onset→apex optical flow (the flow baselines; Micro-AU CLIP
    with ``motion=flow``): its dataset cache must hold the flow."""
    return spec.needs_flow or hparams.get("motion") == "flow"


def _load_all() -> None:
    for module in METHOD_MODULES:
        importlib.import_module(module)


def methods() -> dict[str, MethodSpec]:
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> MethodSpec:
    all_methods = methods()
    if name not in all_methods:
        raise KeyError(f"unknown method {name!r}; registered methods: {', '.join(all_methods)}")
    return all_methods[name]


def _coerce(key: str, value, default):
    """A value as its default's type: text from the command line, and an integer where the default
    is a float (``1`` and ``1.0`` are one configuration: the same identity, the same random streams)."""
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or isinstance(default, str):
        return value
    text = value.strip()
    if isinstance(default, bool):
        if text.lower() in ("true", "1", "yes", "on"):
            return True
        if text.lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{key}={value!r}: expected true or false")
    if text.lower() in ("none", "null"):
        return None
    try:
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError as e:
        raise ValueError(f"{key}={value!r}: expected a {type(default).__name__}") from e
    return text  # default None: keep text (paths, names)


def resolve_hparams(spec: MethodSpec, overrides: dict | None = None) -> dict:
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(spec.defaults))
    if unknown:
        raise KeyError(f"unknown hyper-parameter(s) {unknown} for method {spec.name!r}; valid: {', '.join(sorted(spec.defaults))}")
    hp = {**spec.defaults, **{k: _coerce(k, v, spec.defaults[k]) for k, v in overrides.items()}}
    if hp["metric"] not in F1_VARIANTS:
        raise ValueError(f"metric={hp['metric']!r}: choose one of {F1_VARIANTS}")
    return hp
