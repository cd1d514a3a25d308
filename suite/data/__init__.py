"""The data layer: release readers, the synthetic generator, validation and the Arrow cache."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ..paths import cache_dir, synthetic_dir
from .au_strings import AURules
from .cache import CacheResult, build_cache, load_cache
from .options import ReaderOptions
from .records import DataError, Problem, Release, Sample
from .registry import ReleaseNames, ReleaseSpec, ReleaseTable, default_releases, get_release, register, releases

# Live views of the release registry (``suite.data.registry``), kept under their old names.
DATASETS = ReleaseNames()
RELEASE_FOLDER = ReleaseTable("folder")
SHEET_PATTERN = ReleaseTable("sheet_pattern")

__all__ = ["DATASETS", "DataError", "Problem", "Release", "Sample", "CacheResult", "build_cache", "load_cache",
           "read_release", "release_roots", "synthetic_root", "prepare", "is_release", "ReaderOptions", "ReleaseSpec", "get_release",
           "register", "releases"]


def read_casme2(*args, **kwargs) -> Release:
    from .casme2 import read_casme2 as read

    return read(*args, **kwargs)


def read_samm(*args, **kwargs) -> Release:
    from .samm import read_samm as read

    return read(*args, **kwargs)


def release_roots(datasets, data_root) -> dict[str, Path | None]:
    """``--data-root``: one release folder (one release), a folder holding each release's
    conventional folder (CASME2/, SAMM/, …), or ``casme2=PATH,samm=PATH`` (a mapping is taken as
    it is). None → the synthetic default for every release."""
    if not data_root:
        return {d: None for d in datasets}
    if isinstance(data_root, dict):
        missing = [d for d in datasets if d not in data_root]
        if missing:
            raise DataError(f"no release folder given for {missing}")
        return {d: Path(data_root[d]) if data_root[d] else None for d in datasets}
    if "=" in str(data_root):
        pairs = dict(item.split("=", 1) for item in str(data_root).split(","))
        missing = [d for d in datasets if d not in pairs]
        if missing:
            raise DataError(f"--data-root names no folder for {missing}")
        return {d: Path(pairs[d]) for d in datasets}
    root = Path(data_root)
    if len(datasets) == 1 and is_release(datasets[0], root):  # the release itself (SAMM's holds a SAMM/ frames folder)
        return {datasets[0]: root}
    if all((root / RELEASE_FOLDER[d]).is_dir() for d in datasets):
        return {d: root / RELEASE_FOLDER[d] for d in datasets}
    if len(datasets) == 1:
        return {datasets[0]: root}
    raise DataError(f"--data-root {root}: expected subfolders {[RELEASE_FOLDER[d] for d in datasets]} or "
                    + ",".join(f"{d}=PATH" for d in datasets))


def is_release(dataset: str, root: Path) -> bool:
    """Whether ``root`` is the dataset's release folder itself (it holds the coding spreadsheet)."""
    return any(Path(root).glob(get_release(dataset).sheet_pattern))


_OPTION_FLAGS = {"frames": "--frames", "boxes": "--boxes"}


def read_release(dataset: str, root: Path, rules: AURules = AURules(), annotations_only: bool = False,
                 frames: str = "cropped", boxes: Path | None = None) -> Release:
    """Read ``root`` as the registered release ``dataset``; ``frames``/``boxes`` apply to the releases
    that declare them (CASME II's frame folders, SAMM's face boxes) and are an error elsewhere."""
    spec = get_release(dataset)
    given = {"frames": frames if frames != "cropped" else None, "boxes": boxes}
    options = {}
    for option, value in given.items():
        if option in spec.reader_options:
            options[option] = frames if option == "frames" else boxes
        elif value:
            takers = [r.title for r in releases().values() if option in r.reader_options]
            raise DataError(f"{_OPTION_FLAGS[option]} applies to {' and '.join(takers)} "
                            f"({spec.title} {'has one frame layout' if option == 'frames' else 'takes no face boxes'})")
    return spec.read(root, rules, annotations_only=annotations_only, **options)


def _generated(out: Path, name: str) -> bool:
    """Whether the synthetic folder ``out`` holds release ``name`` (its truth file is written last)."""
    return (out / "truth" / f"{name}.jsonl").exists() and (out / "truth" / "spec.json").exists()


def synthetic_root(dataset: str, results: Path | None = None, seed: int = 0, scale: str = "small") -> Path:
    """The embedded default: a synthetic release, generated on first use (atomically, so
    concurrent trials do not see half-written folders). The default releases (CASME II and SAMM)
    are generated together, as always; another release is added beside them on first use, from
    its own random stream (so adding it changes none of theirs)."""
    from .synthetic import SyntheticSpec, generate

    spec = get_release(dataset)
    out = synthetic_dir(results, seed, scale)
    if not _generated(out, dataset):
        names = default_releases() if spec.default else [dataset]
        titles = " and ".join(get_release(n).title for n in names)
        print(f"generating the synthetic {titles} release{'s' if len(names) > 1 else ''} (seed {seed}, {scale} scale) in {out} — once",
              file=sys.stderr, flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
        try:
            generate(tmp, seed, SyntheticSpec.preset(scale), releases=names)
            try:
                os.replace(tmp, out)
            except OSError:  # ``out`` exists: move this release in beside the others
                _move_into(tmp, out, names)
            for _ in range(600):  # another process that moved the folder in first writes its truth file next
                if _generated(out, dataset):
                    break
                time.sleep(0.2)
            else:
                raise DataError(f"synthetic {spec.title} release not complete in {out}; remove the folder and retry")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out / spec.folder


def _move_into(tmp: Path, out: Path, names: list[str]) -> None:
    """Move freshly generated releases ``names`` from ``tmp`` into the existing ``out`` (another
    process may be doing the same: the first to move a folder wins; truth files last)."""
    (out / "truth").mkdir(parents=True, exist_ok=True)
    for name in names:
        if _generated(out, name):
            continue
        try:
            os.replace(tmp / get_release(name).folder, out / get_release(name).folder)
        except OSError:
            continue  # another process moved it in first; its truth file follows
        for f in sorted((tmp / "truth").iterdir(), key=lambda f: f.name == f"{name}.jsonl"):
            if f.name.startswith(name) or f.name == "spec.json" and not (out / "truth" / "spec.json").exists():
                os.replace(f, out / "truth" / f.name)


def prepare(dataset: str, root: Path | None = None, results: Path | None = None, image_size: int = 112,
            flow: bool = False, reader: ReaderOptions = ReaderOptions()) -> CacheResult:
    """Release folder (synthetic default when ``root`` is None), read as ``reader`` says → built
    or found Arrow cache."""
    root = Path(root) if root else synthetic_root(dataset, results)
    release = read_release(dataset, root, **reader.for_dataset(dataset))
    return build_cache(release, cache_dir(results), image_size=image_size, flow=flow)
