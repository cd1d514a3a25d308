"""How a release is read (``docs/datasets.md``): the AU-string rules, CASME II's frame folders
and SAMM's face boxes — one value, and the command-line arguments for it, shared by
``suite.data``, ``suite.train`` and ``suite.search``. Why: the cache a search trains on must be
the one ``suite.data validate/build`` was told how to read (a SAMM clip whose face the detector
misses needs ``--boxes`` for training too), never a default-read one."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from .au_strings import ALTERNATIVE_RULES, REF_RULES, AURules
from .records import DataError

# The frame folders of CASME II (``suite.data.casme2.FRAME_SOURCES``), the one release with several.
FRAME_CHOICES = ("cropped", "raw_selected", "raw")


@dataclass(frozen=True)
class ReaderOptions:
    rules: AURules = AURules()
    frames: str = "cropped"  # the releases whose spec lists "frames" (CASME II)
    boxes: Path | None = None  # the releases whose spec lists "boxes" (SAMM)

    @classmethod
    def from_release_options(cls, options: dict) -> "ReaderOptions":
        """From a release's (and its cache's ``meta.json``) ``options``."""
        boxes = options.get("boxes")
        return cls(AURules(**options.get("rules", {})), options.get("frames", "cropped"), Path(boxes) if boxes else None)

    def check(self, datasets) -> None:
        """An option for a dataset that is not read is an error, never silently unused."""
        from .registry import get_release, releases

        for option, flag, given in (("frames", f"--frames {self.frames}", self.frames != "cropped"),
                                    ("boxes", "--boxes", self.boxes is not None)):
            if given and not any(option in get_release(d).reader_options for d in datasets):
                takers = " and ".join(r.title for r in releases().values() if option in r.reader_options)
                raise DataError(f"{flag} applies to {takers}, which is not among {list(datasets)}")

    def for_dataset(self, dataset: str) -> dict:
        """Keyword arguments of ``read_release``/``prepare`` for ``dataset`` (the release-specific
        options only where its spec declares them)."""
        from .registry import get_release

        takes = get_release(dataset).reader_options
        return {"rules": self.rules, "frames": self.frames if "frames" in takes else "cropped",
                "boxes": self.boxes if "boxes" in takes else None}

    def non_default(self) -> dict:
        """The options that differ from the defaults: what a record's data provenance and the page name (a
        search's identity needs none of it: the data fingerprints cover how a release was read)."""
        mine, default = self._as_dict(), ReaderOptions()._as_dict()
        return {k: v for k, v in mine.items() if v != default[k]}

    def _as_dict(self) -> dict:
        return {"ref": self.rules.ref, "alternatives": self.rules.alternatives, "frames": self.frames,
                "boxes": str(self.boxes) if self.boxes else None}


def add_reader_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", default="cropped", choices=FRAME_CHOICES,
                   help="CASME II frame folders: Cropped/, CASME2_RAW_selected/ or CASME2_RAW/ (default: %(default)s)")
    p.add_argument("--boxes", type=Path, help="SAMM: CSV clip,x,y,w,h of face boxes, instead of face detection (default: detect)")
    p.add_argument("--ref", default="present", choices=REF_RULES, help="how ref(x) AU tokens count (default: %(default)s)")
    p.add_argument("--alternatives", default=AURules().alternatives, choices=ALTERNATIVE_RULES,
                   help="how 'a or b' AU cells resolve: mask makes the AUs they disagree on unknown (default: %(default)s)")


def reader_options(args: argparse.Namespace) -> ReaderOptions:
    return ReaderOptions(AURules(args.ref, args.alternatives), args.frames, args.boxes)
