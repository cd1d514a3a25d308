"""Method registry: name → builder and declared defaults.

The methods are found through an explicit list (``method_modules``): each of those modules declares
its methods as ``METHODS`` (``suite.models.detector.Method``) and imports nothing from this one, so
the registry depends on the methods and never the other way round. They are imported on first use
(they import torch models); ``register`` adds a method at run time (e.g. a test's toy method).

Hyper-parameters are plain dicts validated against the method's declared defaults: an unknown
key is an error listing the valid ones; values given as text (``--set k=v``) are coerced to the
default's type."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from .protocol import PROTOCOL_KEYS, Protocol, split_settings

# Training knobs every method shares; a method's own defaults may override them. The protocol
# settings (selection inside a run, inner-validation share, metric) are not among them: they are
# ``suite.protocol.Protocol``, which ``resolve_hparams`` adds to every resolved configuration.
TRAINING_DEFAULTS = {
    "epochs": 20,
    "batch_size": 16,
    "lr": 1e-3,
    "weight_decay": 0.01,
}


@dataclass
class MethodSpec:
    name: str
    build: Callable  # build(hparams, aus) -> suite.models.detector.Detector
    defaults: dict
    description: str
    needs_flow: bool = False


_REGISTRY: dict[str, MethodSpec] = {}
_LOADED = False  # the methods of method_modules() are in _REGISTRY


def register(method) -> MethodSpec:
    """Add (or replace, by name) a method declared as ``suite.models.detector.Method``; its
    defaults are the training defaults with the method's own on top."""
    spec = MethodSpec(method.name, method.build, {**TRAINING_DEFAULTS, **method.defaults}, method.description, method.needs_flow)
    _REGISTRY[method.name] = spec
    return spec


def method_modules() -> tuple[ModuleType, ...]:
    """The modules that declare methods (``METHODS``): Micro-AU CLIP and every baseline — the explicit
    list. Imported on first use: they import torch models."""
    from .baselines import clip_global, constant, off_apexnet, prior, resnet_flow, sca, sssnet
    from .models import micro_au_clip

    return (micro_au_clip, constant, prior, clip_global, resnet_flow, sssnet, off_apexnet, sca)


def needs_flow(spec: MethodSpec, hparams: dict) -> bool:
    """Whether a configuration reads the onset→apex optical flow (the flow baselines; Micro-AU CLIP
    with ``motion=flow``): its dataset cache must hold the flow."""
    return spec.needs_flow or hparams.get("motion") == "flow"


def _load_all() -> None:
    global _LOADED
    if not _LOADED:
        for module in method_modules():
            for method in module.METHODS:
                if method.name not in _REGISTRY:  # a method registered at run time under a shipped name stays
                    register(method)
        _LOADED = True


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


def resolve_hparams(spec: MethodSpec, overrides: dict | None = None, protocol: Protocol | None = None) -> dict:
    """The one resolved configuration of a run: the method's declared defaults with ``overrides``
    (its own keys; text coerced to the default's type), then the protocol settings of
    ``protocol`` (default ``Protocol()``) — which protocol keys among ``overrides`` change
    (``--set selection=inner``, ``--set metric=macro``): the engine and the records read them from
    the resolved dict, but they are never part of the method's defaults."""
    settings, model = split_settings(overrides or {})
    unknown = sorted(set(model) - set(spec.defaults))
    if unknown:
        raise KeyError(f"unknown hyper-parameter(s) {unknown} for method {spec.name!r}; valid: {', '.join(sorted(spec.defaults))} "
                       f"(protocol settings: {', '.join(PROTOCOL_KEYS)})")
    protocol = (protocol or Protocol()).with_(**settings)
    return {**spec.defaults, **{k: _coerce(k, v, spec.defaults[k]) for k, v in model.items()}, **protocol.as_hparams()}
