"""Face boxes for uncropped releases (SAMM): OpenCV's bundled Haar cascade on the onset frame,
reused for the whole clip, or a user-supplied boxes file."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from .records import DataError, Problem, Sample

# The Haar box spans roughly brows to mouth; the aligned-face template spans forehead to chin.
# The margins were calibrated on the synthetic faces (raw Haar box vs the true template box;
# tests check IoU > 0.8). On real faces a boxes file (--boxes) gives full control.
EXPAND_X, EXPAND_TOP, EXPAND_BOTTOM = -0.06, 0.0, 0.02


@lru_cache(maxsize=1)
def _cascade() -> cv2.CascadeClassifier:
    if not hasattr(cv2, "CascadeClassifier"):  # OpenCV 5 dropped the Haar cascades
        raise DataError(f"OpenCV {cv2.__version__} has no Haar face detector, which finds the faces in uncropped frames (SAMM): "
                        "install opencv-python-headless<5 (as pyproject.toml asks), or give every clip's face box with --boxes FILE")
    path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"OpenCV's Haar cascade could not be loaded from {path}")
    return cascade


def read_gray(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise DataError(f"cannot decode image {path}: the file is missing or corrupt; restore it from the release")
    return img


def detect_face(gray: np.ndarray) -> tuple[int, int, int, int] | None:
    """The aligned-face crop box (x, y, w, h) around the largest detected face, or None."""
    h, w = gray.shape
    min_side = max(24, min(h, w) // 8)
    found = _cascade().detectMultiScale(cv2.equalizeHist(gray), scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    if len(found) == 0:
        return None
    x, y, bw, bh = max(found, key=lambda b: b[2] * b[3])
    x0 = max(0, int(x - EXPAND_X * bw))
    y0 = max(0, int(y - EXPAND_TOP * bh))
    x1 = min(w, int(x + bw * (1 + EXPAND_X)))
    y1 = min(h, int(y + bh * (1 + EXPAND_BOTTOM)))
    return x0, y0, x1 - x0, y1 - y0


def load_boxes(path: Path) -> dict[str, tuple[int, int, int, int]]:
    """A CSV with columns clip,x,y,w,h (clip = the sheet's Filename)."""
    try:
        table = pd.read_csv(path)
    except Exception as e:
        raise DataError(f"cannot read boxes file {path}: {e}") from e
    need = ["clip", "x", "y", "w", "h"]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise DataError(f"boxes file {path}: missing column(s) {missing}; columns found: {list(table.columns)}; expected {need}")
    return {str(r.clip): (int(r.x), int(r.y), int(r.w), int(r.h)) for r in table.itertuples()}


def attach_face_boxes(samples: list[Sample], boxes_file: Path | None) -> list[Problem]:
    """Set ``face_box`` on every sample whose onset frame exists. No face → a fatal problem
    telling the user to supply the box."""
    given = load_boxes(boxes_file) if boxes_file else {}
    problems = []
    for s in samples:
        if s.onset not in s.frames:
            continue  # already reported by attach_frames
        if s.clip in given:
            s.face_box = given[s.clip]
            continue
        try:
            gray = read_gray(s.onset_path)
        except DataError as e:
            p = Problem(s.row, s.clip, str(e), "restore the file from the release", fatal=True)
        else:
            s.face_box = detect_face(gray)  # an OpenCV without the detector raises here, once, not per clip
            if s.face_box is not None:
                continue
            p = Problem(s.row, s.clip, f"no face found in onset frame {s.onset_path}",
                        "supply the box in a CSV (clip,x,y,w,h) with --boxes FILE", fatal=True)
        s.problems.append(p)
        problems.append(p)
    return problems
