"""SAMM reader (Davison et al., "SAMM: A Spontaneous Micro-Facial Movement Dataset", IEEE TAC
2016). Frames are uncropped grayscale; faces are located by ``suite.data.faces``."""
from __future__ import annotations

import re
from pathlib import Path

from ..aus import AURules
from .faces import attach_face_boxes
from .records import Release
from .release import COLUMNS, REQUIRED, attach_frames, rows_to_samples
from .sheets import find_sheet_file, read_table

SHEET_PATTERN = "SAMM_Micro_FACS_Codes*.xlsx"
# '<subject>_<absolute frame number, any zero-padding>.jpg': the digits after the last '_'.
FRAME_FILE = re.compile(r".*_(\d+)\.(?:jpe?g|png|bmp)", re.IGNORECASE)


def read_samm(root: Path, rules: AURules = AURules(), annotations_only: bool = False, boxes: Path | None = None) -> Release:
    """Parse a SAMM release folder; with frames, locate each clip's face (or take ``boxes``)."""
    root = Path(root)
    sheet = find_sheet_file(root, SHEET_PATTERN, "SAMM_Micro_FACS_Codes_v2.xlsx")
    table = read_table(sheet, "MICRO_ONLY", COLUMNS, REQUIRED)
    samples, problems = rows_to_samples(table, "samm", 3, rules)
    if not annotations_only:
        problems += attach_frames(samples, lambda s: root / "SAMM" / s.subject.split("/")[1] / s.clip, FRAME_FILE)
        problems += attach_face_boxes(samples, boxes)
    options = {"rules": vars(rules), "boxes": str(boxes) if boxes else None}
    return Release("samm", root, sheet, samples, problems, options)
