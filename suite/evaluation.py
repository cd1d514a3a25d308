"""What a run trains and tests on, and its outer folds: the evaluation protocols of ``--protocol``.

- ``loso``: one release, leave-one-subject-out (one evaluation per ``--datasets`` entry). Its key
  is the release's name, as every record before cross-dataset protocols had it.
- ``transfer:SRC->DST``: one outer fold — train on every clip of SRC, test on every clip of DST.
  Epochs, thresholds and a search's choices are made on SRC alone: the inner validation is a
  seeded, subject-disjoint share of SRC's subjects; DST's labels choose nothing. Evaluated AUs:
  those both releases evaluate. Key ``SRC-to-DST``.
- ``composite:A+B[+C]``: leave-one-subject-out over the union. Subjects are namespaced by release
  (the readers write ``casme2/01``), so an id that exists in two releases is two subjects.
  Evaluated AUs: those every release evaluates (shared AUs, not per-release masks: a per-release
  mask would make the pooled F1 of an AU a figure over some releases only, and the pooled mean
  over AUs a mix of populations). Figures are reported pooled and per release
  (``per_release``). Key ``A+B``.

Release keys are ``[a-z][a-z0-9_]*`` (``suite.data.registry.register``), so ``-to-`` and ``+``
never occur inside one and a key names its evaluation unambiguously (``evaluation_of``).
Records carry ``describe()`` as their ``protocol``; the page and the exports show one section per
protocol and never rank figures of different evaluations together.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from .protocol import Fold, Protocol, loso_folds, verify_fold

KINDS = ("loso", "transfer", "composite")
PROTOCOL_HELP = "loso | transfer:SRC->DST | composite:A+B[+C]"


class EvaluationError(ValueError):
    """A ``--protocol`` (or a key) that names no evaluation the suite can run."""


@dataclass(frozen=True)
class Evaluation:
    kind: str  # loso | transfer | composite
    releases: tuple[str, ...]  # loso: (release,); transfer: (SRC, DST); composite: its releases in the order given

    def __post_init__(self):
        from .data.registry import get_release

        if self.kind not in KINDS:
            raise EvaluationError(f"protocol {self.kind!r}: choose {PROTOCOL_HELP}")
        n = {"loso": (1, 1), "transfer": (2, 2), "composite": (2, 99)}[self.kind]
        if not n[0] <= len(self.releases) <= n[1]:
            raise EvaluationError(f"--protocol {self.spec}: {self.kind} takes {'one release' if n[1] == 1 else 'two releases' if n[1] == 2 else 'two or more releases'}")
        if len(set(self.releases)) != len(self.releases):
            raise EvaluationError(f"--protocol {self.spec}: a release named twice" + (" (LOSO on one release: --protocol loso --datasets "
                                                                                        f"{self.releases[0]})" if self.kind == "transfer" else ""))
        for r in self.releases:
            try:
                get_release(r)
            except Exception as e:
                raise EvaluationError(f"--protocol {self.spec}: {e}") from None
        if not self.aus:
            raise EvaluationError(f"--protocol {self.spec}: the releases share no evaluated AU "
                                  f"({'; '.join(f'{r}: {get_release(r).aus}' for r in self.releases)})")

    # --- names ----------------------------------------------------------------------------
    @property
    def key(self) -> str:
        """How records, folders and page columns name this evaluation."""
        return {"loso": self.releases[0], "transfer": "-to-".join(self.releases), "composite": "+".join(self.releases)}[self.kind]

    @property
    def spec(self) -> str:
        """The ``--protocol`` text that asks for it."""
        return {"loso": "loso", "transfer": f"transfer:{self.releases[0]}->{self.releases[-1]}",
                "composite": "composite:" + "+".join(self.releases)}[self.kind]

    @property
    def title(self) -> str:
        from .data.registry import get_release

        titles = [get_release(r).title for r in self.releases]
        return {"loso": titles[0], "transfer": f"{titles[0]} → {titles[-1]}", "composite": " + ".join(titles)}[self.kind]

    @property
    def section(self) -> str:
        """The page section (and export table) its figures belong to: LOSO columns share one."""
        return "loso" if self.kind == "loso" else self.key

    @property
    def aus(self) -> tuple[int, ...]:
        """The evaluated AUs: the release's own, or those every release evaluates (in the first release's order)."""
        from .data.registry import get_release

        lists = [get_release(r).aus for r in self.releases]
        return tuple(a for a in lists[0] if all(a in other for other in lists[1:]))

    @property
    def train_releases(self) -> tuple[str, ...]:
        return self.releases[:1] if self.kind == "transfer" else self.releases

    @property
    def test_releases(self) -> tuple[str, ...]:
        return self.releases[1:] if self.kind == "transfer" else self.releases

    def describe(self) -> dict:
        """What a record's ``protocol`` says: the kind, the releases on each side, the AUs and how they were chosen."""
        return {"name": self.kind, "spec": self.spec, "key": self.key, "title": self.title, "releases": list(self.releases),
                "train": list(self.train_releases), "test": list(self.test_releases), "aus": [f"AU{a}" for a in self.aus],
                "aus_rule": "the release's own" if self.kind == "loso" else "shared: evaluated by every release"}

    # --- folds ----------------------------------------------------------------------------
    def folds(self, subjects, protocol: Protocol, seed: int = 0) -> list[Fold]:
        """The outer folds over ``subjects`` (namespaced ``release/id``), with ``protocol``'s
        inner-validation share, split with ``seed``."""
        subjects = np.asarray(subjects)
        if self.kind != "transfer":
            return loso_folds(subjects, protocol.inner_val_fraction, seed)
        return [transfer_fold(subjects, release_of(subjects), self.releases[0], self.releases[1], protocol.inner_val_fraction, seed)]


def release_of(subjects) -> np.ndarray:
    """Each sample's release, from its namespaced subject (``casme2/01`` → ``casme2``)."""
    return np.array([str(s).split("/", 1)[0] for s in np.asarray(subjects)])


def transfer_fold(subjects: np.ndarray, release: np.ndarray, source: str, target: str, inner_val_fraction: float, seed: int) -> Fold:
    """The one outer fold of a transfer: train on every ``source`` clip, test on every ``target``
    clip; inner validation a seeded share of the source's subjects (at least one), never a target subject."""
    src = sorted(set(subjects[release == source].tolist()))
    if len(src) < 2:
        raise EvaluationError(f"transfer from {source}: inner validation by subject needs at least 2 {source} subjects, got {len(src)}")
    rng = np.random.default_rng([seed, 0])
    n_val = max(1, int(round(len(src) * inner_val_fraction)))
    val_subjects = set(rng.choice(src, size=n_val, replace=False).tolist())
    train = np.flatnonzero(release == source)
    test = np.flatnonzero(release == target)
    inner_val = train[np.isin(subjects[train], list(val_subjects))]
    fold = Fold(0, f"every {target} subject ({len(set(subjects[test].tolist()))})", train, test, np.setdiff1d(train, inner_val), inner_val)
    verify_fold(subjects, fold)
    return fold


def parse_protocol(text: str, datasets=()) -> list[Evaluation]:
    """``--protocol`` (with ``--datasets`` for ``loso``) → the evaluations to run."""
    text = (text or "loso").strip()
    kind, _, rest = text.partition(":")
    if kind == "loso":
        if rest:
            raise EvaluationError(f"--protocol {text}: loso takes its releases from --datasets")
        return [Evaluation("loso", (d,)) for d in datasets]
    if kind == "transfer":
        src, arrow, dst = rest.partition("->")
        if not arrow or not src.strip() or not dst.strip():
            raise EvaluationError(f"--protocol {text}: expected transfer:SRC->DST, e.g. transfer:casme2->samm")
        return [Evaluation("transfer", (src.strip(), dst.strip()))]
    if kind == "composite":
        parts = tuple(p.strip() for p in rest.split("+"))
        if not all(parts):
            raise EvaluationError(f"--protocol {text}: expected composite:A+B[+C], e.g. composite:casme2+samm")
        from .data.registry import release_names

        order = {name: i for i, name in enumerate(release_names())}  # one key per union: A+B and B+A are the same evaluation
        return [Evaluation("composite", tuple(sorted(parts, key=lambda p: order.get(p, len(order)))))]
    raise EvaluationError(f"--protocol {text!r}: choose {PROTOCOL_HELP}")


def evaluation_of(key: str) -> Evaluation:
    """The evaluation a record's ``dataset`` (an evaluation key) names."""
    if "-to-" in key:
        return Evaluation("transfer", tuple(key.split("-to-", 1)))
    if "+" in key:
        return Evaluation("composite", tuple(key.split("+")))
    return Evaluation("loso", (key,))


def combined_fingerprint(fingerprints: dict[str, str]) -> str:
    """The data fingerprint of several releases' caches in one evaluation (release → cache fingerprint, in order)."""
    return hashlib.sha256(json.dumps(list(fingerprints.items())).encode()).hexdigest()


def load_tensors(evaluation: Evaluation, caches: dict, device):
    """The evaluation's data resident on ``device``: each release's Arrow cache (release →
    ``(path, fingerprint)``) with the evaluation's AUs, concatenated in release order (one release:
    its cache's tensors, fingerprint unchanged)."""
    from .data import load_cache
    from .engine import DatasetTensors

    missing = [r for r in evaluation.releases if r not in caches]
    if missing:
        raise EvaluationError(f"{evaluation.key}: no cache given for {missing}")
    parts = [DatasetTensors.from_cache(load_cache(caches[r][0])[0], evaluation.aus, device, caches[r][1]) for r in evaluation.releases]
    if len(parts) == 1:
        return parts[0]
    return DatasetTensors.concat(parts, combined_fingerprint({r: caches[r][1] for r in evaluation.releases}))


def per_release(frame, releases) -> dict:
    """A composite's predictions (``suite.results.predictions_frame``) split by release: release → rows."""
    of = release_of(frame["subject"].to_numpy())
    return {r: frame[of == r] for r in releases}
