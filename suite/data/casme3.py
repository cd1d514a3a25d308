"""CAS(ME)³ Part A micro-expressions (Li et al., "CAS(ME)³: A Third Generation Facial Spontaneous
Micro-Expression Database with Depth Information and High Ecological Validity", IEEE TPAMI 2023).

The label file is the one the authors publish (v2); the frame layout is the released clips' as the
public loaders read them (not stated in the authors' text). Format and quirks: ``docs/datasets.md``.
This module declares the release (``SPEC``), its reader and its synthetic writer."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from .au_strings import AURules, cell_to_text
from .faces import attach_face_boxes, detect_face
from .records import Release
from .registry import ReleaseSpec, register
from .release import attach_frames, read_sheet, rows_to_samples

SHEET_PATTERN = "[cC][aA][sS]([mM][eE])3_part_A_ME_label*.xlsx"
SHEET_NAME = "label"  # the workbook also holds a stray 'Sheet1' (~434 mostly empty rows) and an empty 'Sheet3'
CLIP_DIR = "Part_A_ME_clip/frame"  # {Subject}_{Filename}_{Onset}/{N}.jpg, folders spelled 'spNo.'
FRAME_FILE = re.compile(r"(\d+)\.(?:jpe?g|png|bmp)", re.IGNORECASE)  # the video's frame number, not zero-padded
COLUMNS = {
    "subject": ("Subject",),
    "filename": ("Filename",),
    "onset": ("Onset", "OnsetFrame", "Onset Frame"),
    "apex": ("Apex", "ApexFrame", "Apex Frame"),
    "offset": ("Offset", "OffsetFrame", "Offset Frame"),
    "aus": ("AU", "Action Units"),
    "emotion": ("emotion", "Estimated Emotion"),
    "objective": ("Objective class", "Objective Classes"),
}
REQUIRED = frozenset({"subject", "filename", "onset", "apex", "offset", "aus", "emotion"})
EMOTIONS = ("disgust", "surprise", "others", "fear", "anger", "sad", "happy")
# AUs with at least 40 occurrences among Part A's 860 micro-expressions (left/right/T/B merged):
# AU4 274, AU14 193, AU1 153, AU2 128, AU24 59, AU9 50, AU5 44 (docs/datasets.md).
EVALUATED_AUS = (1, 2, 4, 5, 9, 14, 24)


def subject_id(cell) -> str | None:
    """'spNO.12', 'spNo.12', 'spno12', '12', 12.0 → 'spNO.12' (the labels' spelling; ids unpadded)."""
    m = re.fullmatch(r"(?:sp\s*no\.?\s*)?0*(\d+)", cell_to_text(cell).strip(), re.IGNORECASE)
    return f"spNO.{int(m.group(1))}" if m else None


def filename_rule(text: str) -> tuple[str, str | None]:
    """The video letter; an upper-case letter (one row has 'J') is the same video as its lower case."""
    if text != text.lower():
        return text.lower(), f"Filename {text!r} is upper-case (the other rows of this video say {text.lower()!r})"
    return text, None


def clip_name(subject: str, filename: str, onset: int) -> str:
    """The clip's key and folder name as the labels spell it: (Subject, Filename, Onset)."""
    return f"{subject}_{filename}_{onset}"


def _clip_folders(folder: Path) -> dict[str, Path]:
    """Clip folder by lower-cased name: the folders say 'spNo.' where the labels say 'spNO.'."""
    return {p.name.lower(): p for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else {}


def read_casme3(root: Path, rules: AURules = AURules(), annotations_only: bool = False, boxes: Path | None = None) -> Release:
    """Parse a CAS(ME)³ Part A release folder (the label file and ``Part_A_ME_clip/frame``); with
    frames, locate each clip's face (uncropped video frames) or take ``boxes``."""
    root = Path(root)
    table = read_sheet(SPEC, root)
    samples, problems = rows_to_samples(table, SPEC, rules)
    if not annotations_only:
        clips = _clip_folders(root / CLIP_DIR)
        problems += attach_frames(samples, lambda s: clips.get(s.clip.lower(), root / CLIP_DIR / s.clip), FRAME_FILE)
        problems += attach_face_boxes(samples, boxes)
    options = {"rules": vars(rules), "boxes": str(boxes) if boxes else None}
    return Release("casme3", root, table.path, samples, problems, options)


# --------------------------------------------------------------------------------------------
# Synthetic writer: the label file and clip folders with every quirk of docs/datasets.md
# --------------------------------------------------------------------------------------------

SCALES = {  # subjects, clips, onset..offset length in frames at 30 fps
    "small": (6, 48, (5, 9)),
    "full": (94, 860, (6, 16)),
}
_EMOTION_P = {"disgust": 250, "surprise": 200, "others": 160, "fear": 85, "anger": 65, "sad": 55, "happy": 45}
# P(AU | emotion), tuned so the marginal AU frequencies resemble the release's (AU4 most, then 14, 1, 2).
_EMOTION_AUS = {
    "disgust": {4: 0.6, 9: 0.15, 14: 0.3, 7: 0.2, 24: 0.08},
    "surprise": {1: 0.6, 2: 0.55, 5: 0.15, 25: 0.1},
    "others": {4: 0.25, 14: 0.3, 24: 0.08, 1: 0.1, 17: 0.1},
    "fear": {4: 0.4, 1: 0.3, 2: 0.2, 5: 0.15, 20: 0.2, 24: 0.1},
    "anger": {4: 0.6, 24: 0.25, 7: 0.3, 9: 0.1, 23: 0.1},
    "sad": {4: 0.35, 1: 0.3, 14: 0.25, 15: 0.35, 17: 0.25},
    "happy": {12: 0.85, 6: 0.35, 14: 0.15},
}
_NOISE = (1, 2, 4, 5, 9, 14, 24, 6, 7, 10, 12, 15, 17)
ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII")
FRAME_SIZE = (800, 450)  # the real clips are 1280×720 colour; smaller here to write fast


def _aus(rng: np.random.Generator, emotion: str) -> set[int]:
    table = _EMOTION_AUS[emotion]
    aus = {au for au, p in table.items() if rng.random() < p}
    if rng.random() < 0.1:
        aus.add(int(rng.choice(_NOISE)))
    return aus or {max(table, key=table.get)}


def _au_cell(rng: np.random.Generator, aus: set[int], lip: str | None) -> str:
    """'+'-joined, no spaces, no 'AU', no intensity, order as it comes; L/R sides; T/B on lip AUs."""
    tokens = []
    for au in aus:
        r = rng.random()
        side = "R" if r < 0.05 else "L" if r < 0.08 else ""
        tokens.append(side + str(au))
    rng.shuffle(tokens)
    if lip:  # 'T18', 'T28+14', 'B23': a lip AU (no motion drawn; outside the evaluated list)
        tokens.insert(0, lip)
    return "+".join(tokens)


def _videos(rng: np.random.Generator, n: int, many: int, first: str | None = None) -> list[str]:
    """The video letter of each of a subject's ``n`` micro-expressions (``many`` from video ``first``)."""
    letters = list("abcdefghijklm")
    first = first or letters[int(rng.integers(len(letters)))]
    rest = [letters[int(rng.integers(len(letters)))] for _ in range(n - many)]
    return sorted([first] * many + rest)


def write_casme3(root: Path, spec, rng: np.random.Generator, scale: str | None = None) -> list:
    """Write a CAS(ME)³ Part A release at ``root`` (scale: SCALES' name; default: the spec's own
    preset's, 'small' for a custom spec) and return the truth of every clip the reader keeps. The
    rows it must drop (offset before onset) are listed in ``truth/casme3_malformed.json``."""
    import json

    from tqdm import tqdm

    from .synthetic import JPEG_QUALITY, ClipTruth, _clip_frames, _identity, _jpeg, _pick_emotion, _pose, _subjects_clip_counts, _write_xlsx, coded_objective_class

    scale = scale or (spec.scale_name() if spec.scale_name() in SCALES else "small")
    n_subjects, n_clips, lengths = SCALES[scale]
    counts = _subjects_clip_counts(rng, n_subjects, n_clips)
    ids = sorted(int(i) for i in rng.choice(np.arange(1, 218), size=n_subjects, replace=False))
    ids[-1] = 217  # ids reach 217, not contiguous
    busiest = int(np.argmax(counts))
    n_rows = sum(counts)
    order = [int(i) for i in rng.permutation(n_rows)]
    # rows with a quirk (positions in writing order): apex before onset, onset after apex and offset,
    # offset 0 twice, 'Others' three times, T/B lip prefixes, missing frames
    apex_before, onset_after, offset_zero = order[0], order[1], set(order[2:4])
    others_cap, lip_rows = set(order[4:7]), {order[7]: "T18", order[8]: "B23", order[9]: "T28"}
    missing_frames = set(order[10:10 + max(2, n_rows // 20)])
    W, H = FRAME_SIZE
    truths, malformed, rows = [], [], []
    header = ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion"]
    j_done = False
    row = 0
    progress = tqdm(total=n_rows, desc="synthetic CAS(ME)³", unit="clip", disable=None)
    for s_idx, (sid, n) in enumerate(zip(ids, counts)):
        subject = f"spNO.{sid}"
        identity = _identity(rng)
        face_w = int(rng.integers(200, 240))
        many = min(17, n) if s_idx == busiest else min(n, int(rng.integers(1, 4)))
        videos = _videos(rng, n, many, "j" if s_idx == busiest else None)  # the busiest video is a 'j': one of its rows says 'J'

        onsets: dict[str, set[int]] = {}
        for video in videos:
            length = int(rng.integers(lengths[0], lengths[1] + 1))
            onset = int(rng.integers(30, 6000))
            while onset in onsets.setdefault(video, set()):
                onset += 1
            onsets[video].add(onset)
            offset = onset + length - 1
            apex = onset + int(round((length - 1) * rng.uniform(0.35, 0.6)))
            emotion = _pick_emotion(rng, _EMOTION_P)
            aus = _aus(rng, emotion)
            lip = lip_rows.get(row)
            au_cell = _au_cell(rng, aus, lip)
            coded = aus | ({int(lip[1:])} if lip else set())
            written = "J" if s_idx == busiest and video == "j" and not j_done else video  # one row says 'J'
            j_done = j_done or written == "J"
            render_apex, apex_cell, offset_cell, onset_cell = apex, apex, offset, onset
            if row == apex_before:
                apex_cell = onset - int(rng.integers(2, 9))
                render_apex = (onset + offset) // 2
            drop = None
            if row == onset_after:  # onset after both apex and offset: the clip's extent is unknown
                offset_cell, apex_cell = onset - int(rng.integers(20, 60)), onset - int(rng.integers(1, 10))
                drop = "onset after offset"
            elif row in offset_zero:
                offset_cell, drop = 0, "offset 0"
            emotion_cell = "Others" if emotion == "others" and row in others_cap else emotion
            if row in others_cap and emotion != "others":  # 'Others' three times whatever the draw
                emotion, emotion_cell = "others", "Others"
            objective = coded_objective_class(coded)
            excel_row = len(rows) + 2
            rows.append([subject, written, str(onset_cell), str(apex_cell), str(offset_cell), au_cell, ROMAN[objective - 1], emotion_cell])
            clip = f"{subject}_{video}_{onset}"
            folder = root / CLIP_DIR / f"spNo.{sid}_{written}_{onset}"
            amp = {au: rng.uniform(0.7, 1.1) for au in aus}
            pose = _pose(rng)
            fx, fy = rng.uniform(120, W - face_w - 120), rng.uniform(20, H - face_w * 1.15 - 20)
            skip = set()
            if row in missing_frames:  # some frames are missing from the released clips (never onset or apex)
                inner = [f for f in range(onset + 1, offset) if f != render_apex]
                skip = set(inner[: 1 + int(rng.integers(0, 2))])
            for attempt in range(5):  # a pose and place whose onset frame the reader's face detector finds (redrawn otherwise)
                if attempt:
                    pose = _pose(rng)
                    fx, fy = rng.uniform(120, W - face_w - 120), rng.uniform(20, H - face_w * 1.15 - 20)
                box = (fx, fy, float(face_w), face_w * 1.15)
                frames = list(_clip_frames(rng, identity, amp, onset, render_apex, offset, (W, H), box, False, pose))
                written = cv2.imencode(".jpg", frames[0][1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1]  # as the reader will see it
                if detect_face(cv2.imdecode(written, cv2.IMREAD_GRAYSCALE)) is not None:
                    break
            for frame, img, _ in frames:
                if frame not in skip:
                    _jpeg(folder / f"{frame}.jpg", img)
            if drop:
                malformed.append({"row": excel_row, "clip": clip, "why": drop})
            else:
                truths.append(ClipTruth("casme3", subject, video, emotion, sorted(coded), au_cell, onset, apex_cell, offset,
                                        render_apex, objective, [], 0, box))
            row += 1
            progress.update()
    progress.close()
    stray = [[None] * 8 for _ in range(434)]
    stray[0][0], stray[211][3], stray[433][1] = "Subject", "1", " "  # mostly empty rows, a stray cell or two down to row 434
    _write_xlsx(root / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx", {"Sheet1": stray, "label": [header, *rows], "Sheet3": []})
    (root.parent / "truth").mkdir(exist_ok=True)
    (root.parent / "truth" / "casme3_malformed.json").write_text(json.dumps(malformed))
    return truths


def _write_synthetic(root, spec, rng):
    return write_casme3(root, spec, rng)


SPEC = register(ReleaseSpec(
    name="casme3", title="CAS(ME)³", folder="CASME3",
    sheet_pattern=SHEET_PATTERN, sheet_expected="cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx", sheet_name=SHEET_NAME,
    columns=COLUMNS, required=REQUIRED, aus=EVALUATED_AUS,
    subject_id=subject_id, clip_key=("subject", "filename", "onset"), clip_name=clip_name, filename_rule=filename_rule,
    frame_layout=f"{CLIP_DIR}/{{Subject}}_{{Filename}}_{{Onset}}/{{N}}.jpg (folders 'spNo.', matched case-insensitively; N unpadded)",
    frame_number=FRAME_FILE, emotions=EMOTIONS, objective_form="roman", emotion_case="lower",
    offset_before_onset="drop", reader=read_casme3, synthetic_writer=_write_synthetic, seed_index=2,
    reader_options=("boxes",),
))
