"""The evaluation protocol: leave-one-subject-out outer folds with subject-disjoint inner
validation splits, and the settings of how a run chooses (``Protocol``).

The promise: no test subject ever contributes to training, epoch choice or thresholds.
``check_disjoint`` is called on every split the engine uses and fails loudly otherwise.

``Protocol`` holds the protocol settings — the inner-validation share, how a run chooses epochs
and thresholds, the F1 variant of every choice — apart from any model's configuration: they are
not hyper-parameters (a search space may not search them) and the folds are built from it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from .metrics import F1_VARIANTS

RUN_SELECTIONS = ("fixed", "inner")  # how a run chooses epochs and thresholds (not a search's --selection, not a record's label)


class LeakageError(AssertionError):
    """A subject appears on both sides of a split."""


@dataclass(frozen=True)
class Fold:
    index: int
    test_subject: str
    train: np.ndarray  # sample indices (outer train = inner_train ∪ inner_val)
    test: np.ndarray
    inner_train: np.ndarray
    inner_val: np.ndarray


def check_disjoint(subjects: np.ndarray, a: np.ndarray, b: np.ndarray, what: str) -> None:
    shared = set(subjects[a]) & set(subjects[b])
    if shared:
        raise LeakageError(f"{what}: subject(s) {sorted(shared)} on both sides of the split")


def loso_folds(subjects, inner_val_fraction: float = 0.25, seed: int = 0) -> list[Fold]:
    """One fold per subject (sorted). Inner validation: a seeded, subject-disjoint share of the
    remaining subjects (at least one)."""
    subjects = np.asarray(subjects)
    order = sorted(set(subjects.tolist()))
    if len(order) < 3:
        raise ValueError(f"leave-one-subject-out with inner validation needs at least 3 subjects, got {len(order)}")
    folds = []
    for i, test_subject in enumerate(order):
        rest = [s for s in order if s != test_subject]
        rng = np.random.default_rng([seed, i])
        n_val = max(1, int(round(len(rest) * inner_val_fraction)))
        val_subjects = set(rng.choice(rest, size=n_val, replace=False).tolist())
        test = np.flatnonzero(subjects == test_subject)
        train = np.flatnonzero(subjects != test_subject)
        inner_val = np.flatnonzero(np.isin(subjects, list(val_subjects)))
        inner_train = np.setdiff1d(train, inner_val)
        fold = Fold(i, test_subject, train, test, inner_train, inner_val)
        verify_fold(subjects, fold)
        folds.append(fold)
    return folds


def verify_fold(subjects: np.ndarray, fold: Fold) -> None:
    check_disjoint(subjects, fold.train, fold.test, f"fold {fold.index} train/test")
    check_disjoint(subjects, fold.inner_train, fold.inner_val, f"fold {fold.index} inner train/val")
    check_disjoint(subjects, fold.inner_val, fold.test, f"fold {fold.index} inner val/test")


@dataclass(frozen=True)
class Protocol:
    """How a run is evaluated and chooses, apart from the model's configuration.

    ``selection``: ``fixed`` (every epoch, threshold 0.5) or ``inner`` (epochs and thresholds
    chosen on the inner-validation subjects); ``inner_val_fraction``: the share of each fold's
    training subjects held out as inner validation (``loso_folds``); ``metric``: the F1 variant of
    every choice (epochs, thresholds, a search's objective) and of the headline. A record's
    ``hparams`` carry these three beside the model's values (``as_hparams``), as before."""

    selection: str = "fixed"
    inner_val_fraction: float = 0.25
    metric: str = "binary"

    def __post_init__(self):
        if self.selection not in RUN_SELECTIONS:
            raise ValueError(f"selection={self.selection!r}: choose one of {RUN_SELECTIONS}")
        if isinstance(self.inner_val_fraction, bool) or not isinstance(self.inner_val_fraction, (int, float)) \
                or not 0 < self.inner_val_fraction < 1:
            raise ValueError(f"inner_val_fraction={self.inner_val_fraction!r}: expected a number between 0 and 1")
        if self.metric not in F1_VARIANTS:
            raise ValueError(f"metric={self.metric!r}: choose one of {F1_VARIANTS}")
        object.__setattr__(self, "inner_val_fraction", float(self.inner_val_fraction))

    def with_(self, **settings) -> "Protocol":
        """Settings changed; values given as text (``--set inner_val_fraction=0.3``) are converted."""
        unknown = sorted(set(settings) - set(PROTOCOL_KEYS))
        if unknown:
            raise KeyError(f"unknown protocol setting(s) {unknown}; protocol settings: {', '.join(PROTOCOL_KEYS)}")
        if isinstance(settings.get("inner_val_fraction"), str):
            try:
                settings = {**settings, "inner_val_fraction": float(settings["inner_val_fraction"])}
            except ValueError as e:
                raise ValueError(f"inner_val_fraction={settings['inner_val_fraction']!r}: expected a float") from e
        return replace(self, **{k: v.strip() if isinstance(v, str) else v for k, v in settings.items()})

    def as_hparams(self) -> dict:
        """The settings as a run's resolved hyper-parameters and its record carry them."""
        return asdict(self)

    @classmethod
    def of(cls, hparams: dict) -> "Protocol":
        """The protocol a resolved hyper-parameter dict carries (``registry.resolve_hparams``)."""
        return cls(**{k: hparams[k] for k in PROTOCOL_KEYS if k in hparams})

    def folds(self, subjects, seed: int = 0) -> list[Fold]:
        """The LOSO folds with this protocol's inner-validation share, split with ``seed``."""
        return loso_folds(subjects, self.inner_val_fraction, seed)


PROTOCOL_KEYS = tuple(f.name for f in fields(Protocol))


def split_settings(settings: dict) -> tuple[dict, dict]:
    """(protocol settings, the model's hyper-parameters) of a mapping of both (``--set``)."""
    return ({k: v for k, v in settings.items() if k in PROTOCOL_KEYS},
            {k: v for k, v in settings.items() if k not in PROTOCOL_KEYS})
