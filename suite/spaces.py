"""Declarative search spaces (``search_spaces/*.yaml``): a method, distributions over its
hyper-parameters, and fixed overrides. Loading validates every name against the method's
declared defaults and every distribution's form, so a typo fails before any work starts.

    method: micro_au_clip
    params:
      lambda_gd: {float: [0.01, 1.0], log: true}
      gda_layers: {int: [1, 3]}
      gda_heads: {categorical: [1, 2, 4]}
    fixed: {epochs: 40}

Protocol settings (``suite.protocol.Protocol``: ``selection``, ``inner_val_fraction``,
``metric``) are not hyper-parameters: a space that names one under ``params:`` is refused, as are
``selection`` (a search always chooses epochs and thresholds on inner validation) and ``metric``
(``--metric``) under ``fixed:``; ``inner_val_fraction`` under ``fixed:`` sets the search's
inner-validation share (``SearchSpace.protocol``), which every fold's split follows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import yaml

from .protocol import PROTOCOL_KEYS, Protocol, split_settings
from .registry import get_method, resolve_hparams

SPACES_DIR = Path(str(files("suite.search_spaces")))  # the installed package's folder (a plain directory in wheels and editable installs)
KINDS = ("float", "int", "categorical")


class SpaceError(ValueError):
    """A search space that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None

    def suggest(self, trial):
        """Draw a value from an Optuna trial (define-by-run)."""
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))


@dataclass(frozen=True)
class SearchSpace:
    name: str
    path: Path
    method: str
    params: tuple[Param, ...]
    fixed: dict  # the model's fixed hyper-parameters (never a protocol setting)
    description: str = ""
    protocol: dict = field(default_factory=dict)  # protocol settings the space fixes (only inner_val_fraction)

    def suggest(self, trial) -> None:
        """Optuna define-by-run space: draws every parameter on an asked trial."""
        for p in self.params:
            p.suggest(trial)


def available() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def _param(path: Path, name: str, spec) -> Param:
    if not isinstance(spec, dict):
        raise SpaceError(f"{path}: parameter {name!r} must be a mapping like {{float: [low, high], log: true}}")
    kinds = [k for k in KINDS if k in spec]
    extra = set(spec) - set(KINDS) - {"log"}
    if len(kinds) != 1 or extra:
        raise SpaceError(f"{path}: parameter {name!r} needs exactly one of {KINDS} (plus optional 'log'); got {sorted(spec)}")
    kind, value = kinds[0], spec[kinds[0]]
    if kind == "categorical":
        if not isinstance(value, list) or not value:
            raise SpaceError(f"{path}: {name}: categorical needs a non-empty list of choices")
        return Param(name, kind, choices=tuple(value))
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value) and value[0] < value[1]):
        raise SpaceError(f"{path}: {name}: {kind} needs [low, high] with low < high; got {value!r}")
    log = bool(spec.get("log", False))
    if log and value[0] <= 0:
        raise SpaceError(f"{path}: {name}: a log scale needs low > 0")
    return Param(name, kind, float(value[0]), float(value[1]), log)


def load_space(name_or_path: str) -> SearchSpace:
    """A space by name (``gsd``) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = SPACES_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise SpaceError(f"unknown search space {name_or_path!r}; available: {', '.join(available())} (or a path to a .yaml file)")
    elif not path.exists():
        raise SpaceError(f"search space file {path} not found")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpaceError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(doc, dict) or "method" not in doc or not isinstance(doc.get("params"), dict) or not doc["params"]:
        raise SpaceError(f"{path}: a space needs 'method' and a non-empty 'params' mapping")
    unknown_top = set(doc) - {"method", "params", "fixed", "description"}
    if unknown_top:
        raise SpaceError(f"{path}: unknown top-level key(s) {sorted(unknown_top)}")
    try:
        spec = get_method(doc["method"])
    except KeyError as e:
        raise SpaceError(f"{path}: {e.args[0]}") from e
    fixed = doc.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise SpaceError(f"{path}: 'fixed' must be a mapping of hyper-parameter: value")
    _refuse_protocol_settings(path, doc["params"], fixed)
    protocol, fixed = split_settings(fixed)
    names = set(doc["params"]) | set(fixed)
    unknown = sorted(names - set(spec.defaults))
    if unknown:
        raise SpaceError(f"{path}: unknown parameter(s) {unknown} for method {spec.name!r}; valid: {', '.join(sorted(spec.defaults))}")
    both = sorted(set(doc["params"]) & set(fixed))
    if both:
        raise SpaceError(f"{path}: {both} both searched and fixed")
    params = tuple(_param(path, n, s) for n, s in doc["params"].items())
    try:
        resolve_hparams(spec, fixed, Protocol().with_(**protocol))  # type-checks fixed values and the protocol's
    except ValueError as e:
        raise SpaceError(f"{path}: {e}") from e
    return SearchSpace(path.stem, path, spec.name, params, dict(fixed), str(doc.get("description", "")), dict(protocol))


# what to do instead of naming a protocol setting in a space
PROTOCOL_INSTEAD = {
    "selection": "a search always chooses epochs and thresholds on each fold's inner-validation subjects; remove it",
    "metric": "choose the F1 variant of every choice and of the headline with --metric (binary | macro)",
    "inner_val_fraction": "fix the inner-validation share for the whole search under fixed: (e.g. inner_val_fraction: 0.3)",
}


def _refuse_protocol_settings(path: Path, params: dict, fixed: dict) -> None:
    """Protocol settings are not hyper-parameters: every fold's split and choices follow one
    protocol, so a searched value would be recorded while the splits used another."""
    searched = [k for k in PROTOCOL_KEYS if k in params]
    fixed_bad = [k for k in ("selection", "metric") if k in fixed]
    if searched or fixed_bad:
        where = "; ".join([*([f"{searched} under params:"] if searched else []), *([f"{fixed_bad} under fixed:"] if fixed_bad else [])])
        todo = "; ".join(f"{k}: {PROTOCOL_INSTEAD[k]}" for k in dict.fromkeys(searched + fixed_bad))
        raise SpaceError(f"{path}: {where} — protocol setting(s), not hyper-parameters (suite.protocol.Protocol): a search does not "
                         f"search them. Instead — {todo}")
