"""CASME II reader (Yan et al., "CASME II: An Improved Spontaneous Micro-Expression Database and
the Baseline Evaluation", PLoS ONE 2014). Release layout and quirks: ``docs/datasets.md``."""
from __future__ import annotations

import re
from pathlib import Path

from ..emotions import CASME2_EMOTIONS
from .au_strings import AURules
from .options import FRAME_CHOICES
from .records import Problem, Release
from .registry import ReleaseSpec, register
from .release import COLUMNS, REQUIRED, attach_frames, read_sheet, rows_to_samples
from .sheets import as_int, read_table, subject_id

SHEET_PATTERN = "CASME2-coding-*.xlsx"
FRAME_SOURCES = {
    "cropped": ("Cropped", re.compile(r"reg_img(\d+)\.(?:jpe?g|png|bmp)", re.IGNORECASE)),
    "raw_selected": ("CASME2_RAW_selected", re.compile(r"img(\d+)\.(?:jpe?g|png|bmp)", re.IGNORECASE)),
    "raw": ("CASME2_RAW/CASME2-RAW", re.compile(r"img(\d+)\.(?:jpe?g|png|bmp)", re.IGNORECASE)),
}
assert tuple(FRAME_SOURCES) == FRAME_CHOICES  # the --frames choices, declared without importing a release


def read_casme2(root: Path, rules: AURules = AURules(), frames: str = "cropped", annotations_only: bool = False) -> Release:
    """Parse a CASME II release folder (either coding-sheet version, 9 or 10 columns)."""
    if frames not in FRAME_SOURCES:
        raise ValueError(f"unknown CASME II frames option {frames!r}; choose one of {list(FRAME_SOURCES)}")
    root = Path(root)
    table = read_sheet(SPEC, root)
    sheet = table.path
    samples, problems = rows_to_samples(table, SPEC, rules)
    if "objective" not in table.frame.columns:
        problems += _join_objective_classes(root, samples)
    if not annotations_only:
        folder, pattern = FRAME_SOURCES[frames]
        problems += attach_frames(samples, lambda s: root / folder / f"sub{s.subject.split('/')[1]}" / s.clip, pattern)
    options = {"rules": vars(rules), "frames": frames}
    return Release("casme2", root, sheet, samples, problems, options)


def _join_objective_classes(root: Path, samples) -> list[Problem]:
    """The 20140508 sheet has no objective classes; the release ships them in a second file."""
    path = root / "CASME2-ObjectiveClasses.xlsx"
    if not path.exists():
        return [Problem(None, None, f"{path.name} not found and the coding sheet has no 'Objective Classes' column",
                        "objective-class recognition metrics are skipped for CASME II")]
    table = read_table(path, "Sheet1", {"subject": ("Subject",), "filename": ("Filename",), "objective": ("Objective Class", "Objective Classes")},
                       {"subject", "filename", "objective"})
    classes = {(subject_id(r["subject"], 2), str(r["filename"]).strip()): as_int(r["objective"]) for _, r in table.frame.iterrows()}
    problems = []
    for s in samples:
        s.objective_class = classes.get((s.subject.split("/")[1], s.clip))
        if s.objective_class is None:
            problems.append(Problem(s.row, s.clip, f"no objective class in {path.name}", "excluded from objective-class metrics"))
    return problems


def _write_synthetic(root, spec, rng):
    from .synthetic import write_casme2

    return write_casme2(root, spec, rng)


SPEC = register(ReleaseSpec(
    name="casme2", title="CASME II", folder="CASME2",
    sheet_pattern=SHEET_PATTERN, sheet_expected="CASME2-coding-20140508.xlsx or CASME2-coding-20190701.xlsx", sheet_name="Sheet1",
    columns=COLUMNS, required=frozenset(REQUIRED),
    aus=(1, 2, 4, 7, 12, 14, 15, 17),
    subject_id=lambda cell: subject_id(cell, 2), subject_prefix="sub",
    frame_layout="Cropped/sub{Subject}/{Filename}/reg_img{N}.jpg (or CASME2_RAW_selected/, CASME2_RAW/CASME2-RAW/: img{N}.jpg)",
    frame_number=FRAME_SOURCES["cropped"][1],
    emotions=CASME2_EMOTIONS, objective_form="separate_file",
    reader=read_casme2, synthetic_writer=_write_synthetic, seed_index=0, default=True, reader_options=("frames",),
))
