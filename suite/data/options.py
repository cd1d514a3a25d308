"""How a release is read (``docs/datasets.md``): the AU-string rules, CASME II's frame folders
and SAMM's face boxes — one value, and the command-line arguments for it, shared by
``suite.data``, ``suite.train`` and ``suite.search``. Why: the cache a search trains on must be
the one ``suite.data validate/build`` was told how to read (a SAMM clip whose face the detector
misses needs ``--boxes`` for training too), never a default-read one."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..aus import ALTERNATIVE_RULES, REF_RULES, AURules
from .casme2 import FRAME_SOURCES
from .records import DataError


@dataclass(frozen=True)
class ReaderOptions:
    rules: AURules = AURules()
    frames: str = "cropped"  # CASME II only
    boxes: Path | None = None  # SAMM only

    @classmethod
    def from_release_options(cls, options: dict) -> "ReaderOptions":
        """From a release's (and its cache's ``meta.json``) ``options``."""
        boxes = options.get("boxes")
        return cls(AURules(**options.get("rules", {})), options.get("frames", "cropped"), Path(boxes) if boxes else None)

    def check(self, datasets) -> None:
        """An option for a dataset that is not read is an error, never silently unused."""
        if self.frames != "cropped" and "casme2" not in datasets:
            raise DataError(f"--frames {self.frames} applies to CASME II, which is not among {list(datasets)}")
        if self.boxes is not None and "samm" not in datasets:
            raise DataError(f"--boxes applies to SAMM, which is not among {list(datasets)}")

    def for_dataset(self, dataset: str) -> dict:
        """Keyword arguments of ``read_release``/``prepare`` for ``dataset``."""
        return {"rules": self.rules, "frames": self.frames if dataset == "casme2" else "cropped",
                "boxes": self.boxes if dataset == "samm" else None}

    def non_default(self) -> dict:
        """The options that differ from the defaults: what a record's data provenance and the page name (a
        search's identity needs none of it: the data fingerprints cover how a release was read)."""
        mine, default = self._as_dict(), ReaderOptions()._as_dict()
        return {k: v for k, v in mine.items() if v != default[k]}

    def _as_dict(self) -> dict:
        return {"ref": self.rules.ref, "alternatives": self.rules.alternatives, "frames": self.frames,
                "boxes": str(self.boxes) if self.boxes else None}


def add_reader_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", default="cropped", choices=list(FRAME_SOURCES),
                   help="CASME II frame folders: Cropped/, CASME2_RAW_selected/ or CASME2_RAW/ (default: %(default)s)")
    p.add_argument("--boxes", type=Path, help="SAMM: CSV clip,x,y,w,h of face boxes, instead of face detection (default: detect)")
    p.add_argument("--ref", default="present", choices=REF_RULES, help="how ref(x) AU tokens count (default: %(default)s)")
    p.add_argument("--alternatives", default=AURules().alternatives, choices=ALTERNATIVE_RULES,
                   help="how 'a or b' AU cells resolve: mask makes the AUs they disagree on unknown (default: %(default)s)")


def reader_options(args: argparse.Namespace) -> ReaderOptions:
    return ReaderOptions(AURules(args.ref, args.alternatives), args.frames, args.boxes)
