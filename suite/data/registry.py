"""The release registry: one module per release declares everything about it in a ``ReleaseSpec``.

A release module (``casme2``, ``samm``, ``casme3``) builds one ``ReleaseSpec`` and passes it to
``register``; everything that lists or branches on releases — ``read_release``, the synthetic
default, the command lines' ``--dataset``/``--datasets`` choices, ``suite.aus.DATASET_AUS``, the
validation summary — asks this registry. Adding a release touches its module, its tests and
``docs/datasets.md``; a test may ``register`` a toy release of its own (``tests/test_registry.py``).

What a protocol asks a release for: ``get_release(name).aus`` (the evaluated AUs),
``.read(root, ...)`` (the reader; a ``Release`` whose samples carry the namespaced subjects),
``.title`` and ``.folder``.
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .records import DataError

# The releases shipped with the suite, imported on first use (each registers itself).
RELEASE_MODULES = ("suite.data.casme2", "suite.data.samm", "suite.data.casme3")

ObjectiveForm = Literal["integer", "roman", "separate_file", "none"]
ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5, "VI": 6, "VII": 7}


@dataclass(frozen=True)
class ReleaseSpec:
    """Everything the suite knows about one release (``docs/datasets.md`` has the prose).

    The fields that describe the coding sheet and frames are what the shared reader
    (``suite.data.release.read_sheet``, ``rows_to_samples``, ``attach_frames``) consumes; ``reader``
    is the release's own entry point (it may add steps: CASME II's objective-class file, SAMM's face
    boxes); ``synthetic_writer`` writes a synthetic release in this format with its quirks."""

    name: str  # the command lines' --dataset value and the namespace of subjects and sample ids
    title: str  # "CASME II": how pages and messages name it
    folder: str  # the release folder's conventional name (synthetic default, --data-root ROOT/<folder>)
    sheet_pattern: str  # glob of the label file inside the release folder (newest match wins)
    sheet_expected: str  # the file name(s) said in an error when none matches
    sheet_name: str  # the worksheet holding the labels, selected by name
    columns: dict[str, tuple[str, ...]]  # canonical column → accepted header spellings
    required: frozenset[str]
    aus: tuple[int, ...]  # the AUs evaluated on this release (left/right merged)
    subject_id: Callable[[Any], str | None]  # a Subject cell → the release's subject id (None: unreadable)
    frame_layout: str  # where a clip's frames are, relative to the release folder (documentation)
    frame_number: re.Pattern  # a frame file's name → its frame number (group 1)
    emotions: tuple[str, ...]  # the emotion column's vocabulary, as read (after ``emotion_case``)
    objective_form: ObjectiveForm  # how the objective class is stored: integer column, Roman numerals, a second file
    reader: Callable[..., Any]  # (root, rules, annotations_only=..., **options) -> Release
    synthetic_writer: Callable[..., list] | None = None  # (root, SyntheticSpec, numpy Generator) -> [ClipTruth]
    seed_index: int = 0  # the generator's random stream for this release: SeedSequence(seed, spawn_key=(seed_index,))
    default: bool = False  # in the default synthetic data and main job (CASME II and SAMM)
    reader_options: tuple[str, ...] = ()  # which of the release-specific reader options (frames, boxes) apply
    subject_prefix: str = ""  # written before the subject in sample ids ("sub" for CASME II: casme2/sub01/EP02_01f)
    clip_key: tuple[str, ...] = ("subject", "filename")  # the columns that identify a clip (CAS(ME)³ adds onset)
    clip_name: Callable[[str, str, int], str] | None = None  # (subject, filename, onset) -> clip name; default: filename
    filename_rule: Callable[[str], tuple[str, str | None]] | None = None  # Filename cell -> (normalised, note or None)
    emotion_case: Literal["keep", "lower"] = "keep"  # 'lower': 'Others' is read as 'others' (with a note)
    offset_before_onset: Literal["fatal", "drop"] = "fatal"  # 'drop': the row is dropped with a non-fatal finding
    notes: tuple[str, ...] = field(default=())  # one-line facts for `validate` (sources, layout)

    def read(self, root: Path, rules=None, annotations_only: bool = False, **options):
        """The release at ``root`` read by its reader (``rules``: ``AURules``; ``options``: those in
        ``reader_options``)."""
        from .au_strings import AURules

        return self.reader(Path(root), rules or AURules(), annotations_only=annotations_only, **options)

    def objective(self, cell) -> int | None:
        """An objective-class cell as 1–7 (None when the cell is not one)."""
        from .au_strings import cell_to_text
        from .sheets import as_int

        if self.objective_form == "roman":
            return ROMAN.get(cell_to_text(cell).strip().upper())
        return as_int(cell)


_RELEASES: dict[str, ReleaseSpec] = {}
_loaded = False


def register(spec: ReleaseSpec) -> ReleaseSpec:
    """Add (or replace, by name) a release; returns it, so a module can keep ``SPEC = register(...)``."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", spec.name):
        raise ValueError(f"release name {spec.name!r}: lower-case letters, digits and '_' (it names records and folders)")
    _RELEASES[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a release (a test's toy release, when the test ends)."""
    _RELEASES.pop(name, None)


def _load_all() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in RELEASE_MODULES:
            importlib.import_module(module)


def releases() -> dict[str, ReleaseSpec]:
    """Every registered release by name, the shipped ones first (in ``RELEASE_MODULES`` order)."""
    _load_all()
    shipped = [m.rsplit(".", 1)[1] for m in RELEASE_MODULES]  # a release module is named as its release
    order = {name: i for i, name in enumerate(shipped)}
    return dict(sorted(_RELEASES.items(), key=lambda item: order.get(item[0], len(order))))


def get_release(name: str) -> ReleaseSpec:
    all_releases = releases()
    if name not in all_releases:
        raise DataError(f"unknown dataset {name!r}; choose one of {list(all_releases)}")
    return all_releases[name]


def release_names() -> list[str]:
    return list(releases())


def default_releases() -> list[str]:
    """The releases of the default synthetic data and main job: CASME II and SAMM."""
    return [n for n, r in releases().items() if r.default]


class ReleaseNames(Sequence):
    """The registered release names as a live sequence: usable as ``argparse`` ``choices`` and with
    ``in``, it lists a release registered after import too (``suite.data.DATASETS`` is one)."""

    def __getitem__(self, i):
        return release_names()[i]

    def __len__(self) -> int:
        return len(release_names())

    def __iter__(self) -> Iterator[str]:
        return iter(release_names())

    def __contains__(self, name) -> bool:
        return name in releases()

    def __eq__(self, other) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, (tuple, list, Sequence)) else NotImplemented

    def __repr__(self) -> str:
        return repr(tuple(self))


class ReleaseTable(Mapping):
    """A name → value view computed from the registry on each access (``RELEASE_FOLDER``,
    ``SHEET_PATTERN``). ``of_key``: how a name that is no release (an evaluation key) is answered;
    it raises ``KeyError`` for names it does not know."""

    def __init__(self, attribute: str, of_key: Callable[[str], Any] | None = None):
        self._attribute, self._of_key = attribute, of_key

    def _table(self) -> dict:
        return {n: getattr(r, self._attribute) for n, r in releases().items()}

    def __getitem__(self, name):
        table = self._table()
        if name in table or self._of_key is None:
            return table[name]
        return self._of_key(name)

    def __iter__(self):
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())

    def __repr__(self) -> str:
        return repr(self._table())
