"""What every release reader shares: the label sheet read as its ``ReleaseSpec`` declares, coding-sheet
rows → samples (apex, offset and AU rules), and frame lookup."""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from typing import TYPE_CHECKING

from ..aus import ACTION_UNITS
from .au_strings import AURules, cell_to_text, parse_au_string
from .records import Problem, Sample
from .sheets import SheetTable, as_int, find_sheet_file, is_blank, read_table

if TYPE_CHECKING:
    from .registry import ReleaseSpec

# Canonical column → header spellings accepted (first is the release's own).
COLUMNS = {
    "subject": ("Subject",),
    "filename": ("Filename",),
    "onset": ("OnsetFrame", "Onset Frame"),
    "apex": ("ApexFrame", "Apex Frame"),
    "offset": ("OffsetFrame", "Offset Frame"),
    "aus": ("Action Units",),
    "emotion": ("Estimated Emotion",),
    "objective": ("Objective Classes", "Objective Class"),
}
REQUIRED = {"subject", "filename", "onset", "apex", "offset", "aus", "emotion"}


def read_sheet(spec: "ReleaseSpec", root: Path) -> SheetTable:
    """The release's label sheet: the newest file matching its pattern, its sheet selected by name."""
    sheet = find_sheet_file(root, spec.sheet_pattern, spec.sheet_expected)
    return read_table(sheet, spec.sheet_name, spec.columns, set(spec.required))


_KEY_WORDS = {"subject": "subject", "filename": "Filename", "onset": "Onset"}


def rows_to_samples(table: SheetTable, spec: "ReleaseSpec", rules: AURules) -> tuple[list[Sample], list[Problem]]:
    """Apply the suite's rules to every data row. Nothing is dropped without a Problem."""
    dataset = spec.name
    samples: list[Sample] = []
    problems: list[Problem] = []
    seen: dict[tuple, int] = {}
    for row, cells in table.frame.iterrows():
        if all(is_blank(v) for v in cells.tolist()):
            problems.append(Problem(row, None, "empty row", "skipped"))
            continue
        filename = cell_to_text(cells.get("filename")).strip()
        subject = spec.subject_id(cells.get("subject"))
        onset, offset = as_int(cells.get("onset")), as_int(cells.get("offset"))
        clip = spec.clip_name(subject, filename, onset) if spec.clip_name and None not in (subject, onset) and filename else filename
        bad = [name for name, ok in (("Subject", subject), ("Filename", filename), ("onset frame", onset), ("offset frame", offset)) if ok in (None, "")]
        if bad:
            problems.append(Problem(row, clip or None, f"missing or non-numeric {', '.join(bad)}", "fix this row of the coding sheet; the clip cannot be used", fatal=True))
            continue
        sample_problems: list[Problem] = []
        if spec.filename_rule:
            filename, note = spec.filename_rule(filename)
            if note:
                clip = spec.clip_name(subject, filename, onset) if spec.clip_name else filename
                sample_problems.append(Problem(row, clip, note, "read as the same video"))
        if offset < onset:
            if spec.offset_before_onset == "drop":
                problems.append(Problem(row, clip, f"offset frame {offset} is before onset frame {onset}",
                                        "dropped: the clip's extent is unknown (the row stays in the sheet; fix it to use the clip)"))
                problems += sample_problems  # the row's other findings are still reported
                continue
            problems.append(Problem(row, clip, f"offset frame {offset} is before onset frame {onset}", "fix this row of the coding sheet", fatal=True))
            continue
        apex_cell = cells.get("apex")
        apex = as_int(apex_cell)
        mid = (onset + offset) // 2
        if apex is None:
            sample_problems.append(Problem(row, clip, f"apex frame is {cell_to_text(apex_cell).strip() or 'empty'!r}", f"using the midpoint frame {mid}"))
            apex = mid
        elif not onset <= apex <= offset:
            sample_problems.append(Problem(row, clip, f"apex frame {apex} is outside [{onset}, {offset}]", f"using the midpoint frame {mid}"))
            apex = mid
        parsed = parse_au_string(cells.get("aus"), rules)
        sample_problems += [Problem(row, clip, p, a) for p, a in parsed.problems]
        emotion = cell_to_text(cells.get("emotion")).strip()
        if not emotion:
            sample_problems.append(Problem(row, clip, "emotion cell is empty", "kept for AU detection; excluded from emotion recognition"))
        elif spec.emotion_case == "lower" and emotion != emotion.lower():
            sample_problems.append(Problem(row, clip, f"emotion {emotion!r} is not lower-case like the rest of the column", f"read as {emotion.lower()!r}"))
            emotion = emotion.lower()
        objective = None
        if "objective" in cells:
            objective = spec.objective(cells.get("objective"))
            if objective is None and not is_blank(cells.get("objective")):
                sample_problems.append(Problem(row, clip, f"objective class {cell_to_text(cells.get('objective')).strip()!r} is not one of I–VII / 1–7",
                                               "excluded from objective-class metrics"))
        key = tuple({"subject": subject, "filename": filename, "onset": onset}[k] for k in spec.clip_key)
        if key in seen:
            what = ", ".join(_KEY_WORDS[k] for k in spec.clip_key[:-1]) + " and " + _KEY_WORDS[spec.clip_key[-1]]
            problems.append(Problem(row, clip, f"duplicate of row {seen[key]} (same {what})", "remove one of the rows; this one is skipped", fatal=True))
            continue
        seen[key] = row
        samples.append(Sample(
            sample_id=f"{dataset}/{spec.subject_prefix}{subject}/{clip}", dataset=dataset, subject=f"{dataset}/{subject}", clip=clip,
            onset=onset, apex=apex, offset=offset, aus=tuple(sorted(parsed.aus)), au_raw=parsed.raw,
            aus_unknown=tuple(a for a in sorted(set(ACTION_UNITS) | parsed.uncertain) if not parsed.known(a)), emotion=emotion,
            objective_class=objective, row=row, problems=sample_problems,
        ))
        problems += sample_problems
    return samples, problems


def attach_frames(samples: list[Sample], folder_of: Callable[[Sample], Path], frame_number: re.Pattern) -> list[Problem]:
    """Index each clip's frame files by the integer they carry (never by name order) and check
    that the onset and apex frames exist. Files that are not frames (e.g. '.lnk') are ignored."""
    problems = []
    for s in samples:
        folder = folder_of(s)
        if not folder.is_dir():
            p = Problem(s.row, s.clip, f"frame folder {folder} not found", "restore the clip folder from the release (or check the frames option)", fatal=True)
        else:
            s.frames = {int(m.group(1)): f for f in folder.iterdir() if (m := frame_number.fullmatch(f.name))}
            missing = [f"{what} frame {n}" for what, n in (("onset", s.onset), ("apex", s.apex)) if n not in s.frames]
            if not missing:
                continue
            have = f"{min(s.frames)}..{max(s.frames)}" if s.frames else "none"
            p = Problem(s.row, s.clip, f"{' and '.join(missing)} not in {folder} (frames present: {have})", "restore the missing files from the release", fatal=True)
        s.problems.append(p)
        problems.append(p)
    return problems


def check_frames_decode(samples: list[Sample]) -> list[Problem]:
    """Decode each clip's onset and apex frames (what preprocessing reads); name any that fail."""
    import cv2

    problems = []
    for s in samples:
        for n in {s.onset, s.apex}:
            if n in s.frames and cv2.imread(str(s.frames[n]), cv2.IMREAD_REDUCED_GRAYSCALE_2) is None:
                p = Problem(s.row, s.clip, f"frame file {s.frames[n]} cannot be decoded (corrupt or not an image)",
                            "restore the file from the release", fatal=True)
                s.problems.append(p)
                problems.append(p)
    return problems
