"""Preprocess a release once into a Hugging Face ``datasets`` Arrow dataset on disk.

Each row holds a clip's onset and apex frames (uint8, face-cropped, resized to the model size),
optionally the onset→apex optical flow (OpenCV Farneback), and its labels and ids. The cache
folder is named by a fingerprint of everything that determines its content: the parsed records,
the bytes of the frames used, the reader options and the preprocessing options. Same inputs →
the same folder (a cache hit); any change → a new folder."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .records import DataError, Release, Sample

PREPROCESS_VERSION = 2  # bump when the preprocessing below changes what it writes


def load_rgb(path: Path, box: tuple[int, int, int, int] | None, size: int) -> np.ndarray:
    """Decode a frame, crop ``box`` (x, y, w, h) if given, resize to size×size RGB uint8."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot decode frame {path}: the file is missing or corrupt; restore it from the release")
    if box is not None:
        x, y, w, h = box
        img = img[y:y + h, x:x + w]
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def optical_flow(onset: np.ndarray, apex: np.ndarray) -> np.ndarray:
    """Dense onset→apex flow (Farneback), [H, W, 2] float32 in pixels."""
    a = cv2.cvtColor(onset, cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(apex, cv2.COLOR_RGB2GRAY)
    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 9, 3, 5, 1.1, 0).astype(np.float32)


def _file_digest(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def fingerprint(release: Release, image_size: int, flow: bool) -> str:
    """Content fingerprint: records, frame bytes used, reader and preprocessing options."""
    h = hashlib.sha256()
    h.update(json.dumps({"dataset": release.dataset, "options": release.options, "image_size": image_size,
                         "flow": flow, "version": PREPROCESS_VERSION}, sort_keys=True).encode())
    for s in release.samples:
        h.update(json.dumps([s.sample_id, s.onset, s.apex, s.offset, s.aus, s.aus_unknown, s.emotion,
                             s.objective_class, s.face_box], default=str).encode())
        if s.frames:
            h.update(_file_digest(s.onset_path).encode())
            h.update(_file_digest(s.apex_path).encode())
    return h.hexdigest()


@dataclass
class CacheResult:
    path: Path
    fingerprint: str
    hit: bool
    dataset: str = ""
    root: Path | None = None
    findings: int = 0  # the release's non-fatal problems (fatal ones refuse the build)

    @property
    def findings_note(self) -> str | None:
        """One line for the terminal when the release had non-fatal findings: training and search
        go on with them (as ``docs/datasets.md`` rules), but never without saying so."""
        if not self.findings:
            return None
        return (f"{self.dataset}: {self.findings} non-fatal finding(s) in the release at {self.root} (AU labels left "
                f"unknown, apex frames replaced, text ignored, …); `python -m suite.data validate --dataset {self.dataset} "
                f"--root {self.root}` lists each with its row, clip and action")


def _features(image_size: int, flow: bool):
    from datasets import Array3D, Features, Sequence, Value

    feats = {
        "sample_id": Value("string"), "subject": Value("string"), "clip": Value("string"),
        "onset": Array3D((image_size, image_size, 3), "uint8"), "apex": Array3D((image_size, image_size, 3), "uint8"),
        "aus": Sequence(Value("int32")), "aus_unknown": Sequence(Value("int32")), "emotion": Value("string"),
        "objective_class": Value("int32"),
    }
    if flow:
        feats["flow"] = Array3D((image_size, image_size, 2), "float32")
    return Features(feats)


def _rows(samples: list[Sample], image_size: int, flow: bool):
    for s in tqdm(samples, desc="preprocessing", unit="clip", disable=None):
        onset = load_rgb(s.onset_path, s.face_box, image_size)
        apex = load_rgb(s.apex_path, s.face_box, image_size)
        row = {"sample_id": s.sample_id, "subject": s.subject, "clip": s.clip, "onset": onset, "apex": apex,
               "aus": list(s.aus), "aus_unknown": list(s.aus_unknown), "emotion": s.emotion,
               "objective_class": -1 if s.objective_class is None else s.objective_class}
        if flow:
            row["flow"] = optical_flow(onset, apex)
        yield row


def build_cache(release: Release, cache_root: Path, image_size: int = 112, flow: bool = False) -> CacheResult:
    """Build (or find) the cache for ``release``. Refuses a release with fatal problems."""
    from datasets import Dataset

    release.raise_if_fatal()
    if not release.samples:
        raise DataError(f"{release.dataset} release at {release.root} has no usable samples")
    fp = fingerprint(release, image_size, flow)
    path = Path(cache_root) / f"{release.dataset}-{image_size}px{'-flow' if flow else ''}-{fp[:16]}"
    found = {"dataset": release.dataset, "root": release.root, "findings": len(release.problems)}
    if (path / "meta.json").exists():
        return CacheResult(path, fp, hit=True, **found)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp-", dir=path.parent))
    try:
        samples = release.samples
        ds = Dataset.from_list(list(_rows(samples, image_size, flow)), features=_features(image_size, flow))
        ds.save_to_disk(str(tmp / "data"))
        meta = {"dataset": release.dataset, "fingerprint": fp, "image_size": image_size, "flow": flow,
                "n_samples": len(samples), "root": str(release.root), "sheet": str(release.sheet),
                "options": release.options, "preprocess_version": PREPROCESS_VERSION}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            os.replace(tmp, path)  # atomic publish; a concurrent builder may have won the race
        except OSError:
            if not (path / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CacheResult(path, fp, hit=False, **found)


def load_cache(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The cached dataset as numpy arrays (uint8 frames stay uint8) plus its metadata."""
    from datasets import load_from_disk

    path = Path(path)
    meta = json.loads((path / "meta.json").read_text())
    ds = load_from_disk(str(path / "data"))
    cols = {}
    for name in ds.column_names:
        if name in ("onset", "apex"):
            cols[name] = np.asarray(ds.with_format("numpy", dtype=np.uint8)[name])
        elif name == "flow":
            cols[name] = np.asarray(ds.with_format("numpy", dtype=np.float32)[name])
        elif name in ("aus", "aus_unknown"):
            cols[name] = ds[name]
        else:
            cols[name] = np.asarray(ds[name])
    return cols, meta
