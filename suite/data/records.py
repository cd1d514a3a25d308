"""Sample records and problems: what a dataset reader returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class DataError(Exception):
    """A fatal problem with a dataset installation; the message says what and what to do."""


@dataclass(frozen=True)
class Problem:
    """One finding about the release. ``fatal`` problems stop preprocessing and training."""

    row: int | None  # spreadsheet row as Excel numbers it (header row + n), None if not a row
    clip: str | None
    problem: str
    action: str
    fatal: bool = False

    def as_dict(self) -> dict:
        return {"row": self.row, "clip": self.clip, "problem": self.problem, "action": self.action, "fatal": self.fatal}

    def __str__(self) -> str:
        where = ", ".join(x for x in (f"row {self.row}" if self.row else "", self.clip or "") if x)
        return f"{'ERROR' if self.fatal else 'note'}: {where + ': ' if where else ''}{self.problem} -> {self.action}"


@dataclass
class Sample:
    sample_id: str  # dataset-namespaced: "casme2/sub01/EP02_01f", "samm/006/006_1_2"
    dataset: str
    subject: str  # dataset-namespaced: "casme2/01", "samm/006"
    clip: str  # the sheet's Filename
    onset: int
    apex: int  # after the apex rules (midpoint when missing or outside the clip)
    offset: int
    aus: tuple[int, ...]  # sorted AU numbers under the parsing rules
    au_raw: str
    aus_unknown: tuple[int, ...]  # AUs whose label this clip's cell leaves unknown ('?', disagreeing alternatives)
    emotion: str
    objective_class: int | None
    row: int
    frames: dict[int, Path] = field(default_factory=dict)  # frame number → file (empty if annotations only)
    face_box: tuple[int, int, int, int] | None = None  # x, y, w, h (uncropped releases)
    problems: list[Problem] = field(default_factory=list)

    @property
    def onset_path(self) -> Path:
        return self.frames[self.onset]

    @property
    def apex_path(self) -> Path:
        return self.frames[self.apex]


@dataclass
class Release:
    """A parsed release: samples kept, and every problem found (recoverable and fatal)."""

    dataset: str
    root: Path
    sheet: Path
    samples: list[Sample]
    problems: list[Problem]
    options: dict  # reader options that change the samples (part of the cache fingerprint)

    @property
    def fatal(self) -> list[Problem]:
        return [p for p in self.problems if p.fatal]

    def raise_if_fatal(self) -> None:
        fatal = self.fatal
        if fatal:
            shown = "\n  ".join(str(p) for p in fatal[:20])
            more = f"\n  … and {len(fatal) - 20} more" if len(fatal) > 20 else ""
            raise DataError(
                f"{self.dataset} release at {self.root} has {len(fatal)} fatal problem(s):\n  {shown}{more}\n"
                f"Run `python -m suite.data validate --dataset {self.dataset} --root {self.root}` for the full list."
            )
