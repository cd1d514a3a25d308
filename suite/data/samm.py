"""SAMM reader (Davison et al., "SAMM: A Spontaneous Micro-Facial Movement Dataset", IEEE TAC
2016). Frames are uncropped grayscale; faces are located by ``suite.data.faces``."""
from __future__ import annotations

import re
from pathlib import Path

from ..emotions import SAMM_EMOTION_NAMES
from .au_strings import AURules
from .faces import attach_face_boxes
from .records import Release
from .registry import ReleaseSpec, register
from .release import COLUMNS, REQUIRED, attach_frames, read_sheet, rows_to_samples
from .sheets import subject_id

SHEET_PATTERN = "SAMM_Micro_FACS_Codes*.xlsx"
# '<subject>_<absolute frame number, any zero-padding>.jpg': the digits after the last '_'.
FRAME_FILE = re.compile(r".*_(\d+)\.(?:jpe?g|png|bmp)", re.IGNORECASE)


def read_samm(root: Path, rules: AURules = AURules(), annotations_only: bool = False, boxes: Path | None = None) -> Release:
    """Parse a SAMM release folder; with frames, locate each clip's face (or take ``boxes``)."""
    root = Path(root)
    table = read_sheet(SPEC, root)
    sheet = table.path
    samples, problems = rows_to_samples(table, SPEC, rules)
    if not annotations_only:
        problems += attach_frames(samples, lambda s: root / "SAMM" / s.subject.split("/")[1] / s.clip, FRAME_FILE)
        problems += attach_face_boxes(samples, boxes)
    options = {"rules": vars(rules), "boxes": str(boxes) if boxes else None}
    return Release("samm", root, sheet, samples, problems, options)


def _write_synthetic(root, spec, rng):
    from .synthetic import write_samm

    return write_samm(root, spec, rng)


SPEC = register(ReleaseSpec(
    name="samm", title="SAMM", folder="SAMM",
    sheet_pattern=SHEET_PATTERN, sheet_expected="SAMM_Micro_FACS_Codes_v2.xlsx", sheet_name="MICRO_ONLY",
    columns=COLUMNS, required=frozenset(REQUIRED),
    aus=(2, 4, 7, 12),
    subject_id=lambda cell: subject_id(cell, 3),
    frame_layout="SAMM/{Subject}/{Filename}/{Subject}_{N}.jpg (N zero-padded to any width)",
    frame_number=FRAME_FILE,
    emotions=SAMM_EMOTION_NAMES, objective_form="integer",
    reader=read_samm, synthetic_writer=_write_synthetic, seed_index=1, default=True, reader_options=("boxes",),
))
