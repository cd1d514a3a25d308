"""Declarative search spaces (``search_spaces/*.yaml``): a method, distributions over its
hyper-parameters, and fixed overrides. Loading validates every name against the method's
declared defaults and every distribution's form, so a typo fails before any work starts.

    method: micro_au_clip
    params:
      lambda_gd: {float: [0.01, 1.0], log: true}
      gda_layers: {int: [1, 3]}
      gda_heads: {categorical: [1, 2, 4]}
    fixed: {epochs: 40}
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import yaml

from .registry import get_method, resolve_hparams

SPACES_DIR = Path(str(files("search_spaces")))  # the installed package's folder (a plain directory in wheels and editable installs)
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
    fixed: dict
    description: str = ""

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
    names = set(doc["params"]) | set(fixed)
    unknown = sorted(names - set(spec.defaults))
    if unknown:
        raise SpaceError(f"{path}: unknown parameter(s) {unknown} for method {spec.name!r}; valid: {', '.join(sorted(spec.defaults))}")
    both = sorted(set(doc["params"]) & set(fixed))
    if both:
        raise SpaceError(f"{path}: {both} both searched and fixed")
    params = tuple(_param(path, n, s) for n, s in doc["params"].items())
    resolve_hparams(spec, {k: v for k, v in fixed.items()})  # type-checks fixed values
    return SearchSpace(path.stem, path, spec.name, params, dict(fixed), str(doc.get("description", "")))
