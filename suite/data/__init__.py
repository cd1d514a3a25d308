"""The data layer: release readers, the synthetic generator, validation and the Arrow cache."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..aus import AURules
from ..paths import cache_dir, synthetic_dir
from .cache import CacheResult, build_cache, load_cache
from . import casme2, samm
from .casme2 import read_casme2
from .options import ReaderOptions
from .records import DataError, Problem, Release, Sample
from .samm import read_samm

DATASETS = ("casme2", "samm")
RELEASE_FOLDER = {"casme2": "CASME2", "samm": "SAMM"}
SHEET_PATTERN = {"casme2": casme2.SHEET_PATTERN, "samm": samm.SHEET_PATTERN}

__all__ = ["DATASETS", "DataError", "Problem", "Release", "Sample", "CacheResult", "build_cache", "load_cache",
           "read_release", "synthetic_root", "prepare", "is_release", "ReaderOptions"]


def is_release(dataset: str, root: Path) -> bool:
    """Whether ``root`` is the dataset's release folder itself (it holds the coding spreadsheet)."""
    return any(Path(root).glob(SHEET_PATTERN[dataset]))


def read_release(dataset: str, root: Path, rules: AURules = AURules(), annotations_only: bool = False,
                 frames: str = "cropped", boxes: Path | None = None) -> Release:
    if dataset == "casme2":
        if boxes:
            raise DataError("--boxes applies to SAMM (CASME II ships cropped faces)")
        return read_casme2(root, rules, frames=frames, annotations_only=annotations_only)
    if dataset == "samm":
        if frames != "cropped":
            raise DataError("--frames applies to CASME II; SAMM has one frame layout")
        return read_samm(root, rules, annotations_only=annotations_only, boxes=boxes)
    raise DataError(f"unknown dataset {dataset!r}; choose one of {list(DATASETS)}")


def synthetic_root(dataset: str, results: Path | None = None, seed: int = 0, scale: str = "small") -> Path:
    """The embedded default: a synthetic release, generated on first use (atomically, so
    concurrent trials do not see half-written folders)."""
    from .synthetic import SyntheticSpec, generate

    out = synthetic_dir(results, seed, scale)
    if not (out / "truth" / "spec.json").exists():
        print(f"generating the synthetic CASME II and SAMM releases (seed {seed}, {scale} scale) in {out} — once", file=sys.stderr, flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
        try:
            generate(tmp, seed, SyntheticSpec.preset(scale))
            try:
                os.replace(tmp, out)
            except OSError:
                if not (out / "truth" / "spec.json").exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out / RELEASE_FOLDER[dataset]


def prepare(dataset: str, root: Path | None = None, results: Path | None = None, image_size: int = 112,
            flow: bool = False, reader: ReaderOptions = ReaderOptions()) -> CacheResult:
    """Release folder (synthetic default when ``root`` is None), read as ``reader`` says → built
    or found Arrow cache."""
    root = Path(root) if root else synthetic_root(dataset, results)
    release = read_release(dataset, root, **reader.for_dataset(dataset))
    return build_cache(release, cache_dir(results), image_size=image_size, flow=flow)
