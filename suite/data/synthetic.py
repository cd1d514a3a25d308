"""Synthetic CASME II and SAMM releases: the embedded default and the data of every test.

Faces are drawn procedurally from a 68-point landmark layout with a per-subject identity (feature
geometry, skin tone, brow/lip style, texture), per-clip head pose and illumination, and per-frame
sensor noise. AUs are small local landmark displacements (a few pixels) with an
onset → apex → offset profile; AU sets follow emotion-driven co-occurrence plus noise, so AU
dependency is real and learnable. The identity variation of every feature is several times the
AU displacement, so a single frame's appearance says little about the AUs while the onset→apex
motion does (``docs/datasets.md`` "Calibration" says how this was checked).

The writers produce the release layouts of ``docs/datasets.md`` *with their quirks*; the real
readers are what consume them. Nothing in a reader special-cases synthetic data.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..aus import ACTION_UNITS
from ..emotions import SAMM_EMOTIONS, objective_matches

# --------------------------------------------------------------------------------------------
# Face template: 68 landmarks on the aligned face, x and y in [0, 1]. Index layout follows the
# iBUG 68-point convention (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, lips 48-67).
# --------------------------------------------------------------------------------------------


def _template() -> np.ndarray:
    pts = np.zeros((68, 2))
    t = np.linspace(-1, 1, 17)
    pts[0:17, 0] = 0.5 + 0.42 * np.sin(t * np.pi / 2 * 0.95)
    pts[0:17, 1] = 0.35 + 0.62 * np.cos(t * np.pi / 2 * 0.95) ** 0.9
    left_brow = [(0.16, 0.29), (0.22, 0.255), (0.29, 0.245), (0.36, 0.25), (0.43, 0.265)]
    left_eye = [(0.24, 0.38), (0.28, 0.36), (0.34, 0.36), (0.38, 0.385), (0.34, 0.40), (0.28, 0.40)]
    pts[17:22] = left_brow
    pts[22:27] = [(1 - x, y) for x, y in reversed(left_brow)]
    pts[27:31] = [(0.5, y) for y in (0.38, 0.45, 0.52, 0.58)]
    pts[31:36] = [(0.42, 0.62), (0.46, 0.635), (0.5, 0.645), (0.54, 0.635), (0.58, 0.62)]
    pts[36:42] = left_eye
    right_eye = [(1 - x, y) for x, y in left_eye]
    pts[42:48] = [right_eye[3], right_eye[2], right_eye[1], right_eye[0], right_eye[5], right_eye[4]]
    pts[48:60] = [
        (0.34, 0.76), (0.39, 0.735), (0.45, 0.72), (0.5, 0.725), (0.55, 0.72), (0.61, 0.735),
        (0.66, 0.76), (0.61, 0.80), (0.55, 0.82), (0.5, 0.825), (0.45, 0.82), (0.39, 0.80),
    ]
    pts[60:68] = [
        (0.36, 0.76), (0.45, 0.745), (0.5, 0.75), (0.55, 0.745), (0.64, 0.76), (0.55, 0.775),
        (0.5, 0.78), (0.45, 0.775),
    ]
    return pts


TEMPLATE = _template()

JAW, BROW_L, BROW_R = range(0, 17), range(17, 22), range(22, 27)
NOSE_BRIDGE, NOSE_BASE = range(27, 31), range(31, 36)
EYE_L, EYE_R, LIP_OUT, LIP_IN = range(36, 42), range(42, 48), range(48, 60), range(60, 68)


def _motion_fields() -> dict[int, np.ndarray]:
    """Per-AU displacement of every landmark at full intensity, in template units (face = 1).

    Micro-expressions are a few pixels: 0.02 of the face is ~2 px at 112 px, ~6 px at 300 px."""
    f: dict[int, np.ndarray] = {}

    def field(moves: dict[int, tuple[float, float]]) -> np.ndarray:
        d = np.zeros((68, 2))
        for i, v in moves.items():
            d[i] = v
        return d

    a = 0.022
    f[1] = field({19: (0.003, -a * 0.6), 20: (0.004, -a), 21: (0.004, -a), 22: (-0.004, -a), 23: (-0.004, -a), 24: (-0.003, -a * 0.6)})
    f[2] = field({17: (0, -a), 18: (0, -a), 19: (0, -a * 0.6), 24: (0, -a * 0.6), 25: (0, -a), 26: (0, -a)})
    f[4] = field({i: ((0.012 if i < 22 else -0.012) * (1 if i in (20, 21, 22, 23) else 0.5), a * 0.8) for i in range(17, 27)})
    f[5] = field({37: (0, -a * 0.5), 38: (0, -a * 0.5), 43: (0, -a * 0.5), 44: (0, -a * 0.5)})
    f[6] = field({40: (0, -a * 0.4), 41: (0, -a * 0.4), 46: (0, -a * 0.4), 47: (0, -a * 0.4), 48: (-0.004, -a * 0.3), 54: (0.004, -a * 0.3)})
    f[7] = field({37: (0, a * 0.35), 38: (0, a * 0.35), 43: (0, a * 0.35), 44: (0, a * 0.35), 40: (0, -a * 0.45), 41: (0, -a * 0.45), 46: (0, -a * 0.45), 47: (0, -a * 0.45)})
    f[9] = field({29: (0, -a * 0.4), 30: (0, -a * 0.6), 31: (-0.004, -a * 0.7), 32: (0, -a * 0.7), 33: (0, -a * 0.7), 34: (0, -a * 0.7), 35: (0.004, -a * 0.7)})
    f[10] = field({i: (0, -a * 0.8) for i in (49, 50, 51, 52, 53, 61, 62, 63)})
    f[12] = field({48: (-a * 0.7, -a * 0.7), 60: (-a * 0.6, -a * 0.6), 54: (a * 0.7, -a * 0.7), 64: (a * 0.6, -a * 0.6), 49: (-0.004, -0.006), 53: (0.004, -0.006), 59: (-0.004, -0.004), 55: (0.004, -0.004)})
    f[14] = field({48: (a * 0.6, 0.002), 60: (a * 0.5, 0.002), 54: (-a * 0.6, 0.002), 64: (-a * 0.5, 0.002)})
    f[15] = field({48: (-0.003, a * 0.9), 60: (-0.002, a * 0.8), 54: (0.003, a * 0.9), 64: (0.002, a * 0.8), 59: (0, a * 0.3), 55: (0, a * 0.3)})
    f[17] = field({7: (0, -a * 0.7), 8: (0, -a * 0.9), 9: (0, -a * 0.7), 56: (0, -a * 0.7), 57: (0, -a * 0.8), 58: (0, -a * 0.7), 65: (0, -a * 0.5), 66: (0, -a * 0.5), 67: (0, -a * 0.5)})
    f[20] = field({48: (-a * 0.8, a * 0.3), 60: (-a * 0.7, a * 0.3), 54: (a * 0.8, a * 0.3), 64: (a * 0.7, a * 0.3)})
    f[23] = field({i: (0, (TEMPLATE[i, 1] - 0.77) * -0.5) for i in LIP_OUT})
    f[24] = field({i: (0, (TEMPLATE[i, 1] - 0.77) * -0.6) for i in list(LIP_OUT) + list(LIP_IN)})
    f[25] = field({i: (0, a * 0.8) for i in (55, 56, 57, 58, 59, 65, 66, 67)})
    f[26] = field({**{i: (0, a) for i in (55, 56, 57, 58, 59, 65, 66, 67)}, **{i: (0, a * 0.8) for i in (6, 7, 8, 9, 10)}})
    f[43] = field({37: (0, a), 38: (0, a), 43: (0, a), 44: (0, a)})
    return f


MOTION = _motion_fields()

# Emotion-driven AU co-occurrence: P(AU | emotion). Emotions use CASME II spelling here.
_EMOTION_AUS: dict[str, dict[int, float]] = {
    "happiness": {12: 0.85, 6: 0.45, 25: 0.1},
    "disgust": {4: 0.75, 7: 0.45, 9: 0.25, 10: 0.25, 14: 0.1},
    "repression": {15: 0.45, 17: 0.55, 14: 0.35, 24: 0.1},
    "surprise": {1: 0.8, 2: 0.75, 5: 0.2, 25: 0.15},
    "others": {4: 0.45, 1: 0.15, 7: 0.2, 14: 0.2, 17: 0.12, 15: 0.08, 12: 0.05, 2: 0.05},
    "sadness": {4: 0.6, 15: 0.5, 1: 0.4, 17: 0.3},
    "fear": {4: 0.6, 1: 0.5, 2: 0.3, 20: 0.6},
}
_CASME2_EMOTION_P = {"others": 99, "disgust": 63, "happiness": 32, "repression": 27, "surprise": 25, "sadness": 7, "fear": 2}
_SAMM_EMOTION_P = {"others": 26, "anger": 57, "contempt": 12, "happiness": 26, "surprise": 15, "disgust": 9, "fear": 8, "sadness": 6}
_SAMM_ONLY = {"anger": {4: 0.8, 7: 0.6, 23: 0.2, 24: 0.2}, "contempt": {12: 0.7, 14: 0.5}}
_NOISE_AUS = (1, 2, 4, 7, 12, 14, 15, 17, 6, 9, 10, 20, 25)


@dataclass(frozen=True)
class SyntheticSpec:
    """How much to write. Presets: ``small`` (seconds; tests and the default run) and ``full``
    (the real releases' subject and clip counts, for performance work)."""

    casme2_subjects: int = 8
    casme2_clips: int = 96
    samm_subjects: int = 7
    samm_clips: int = 70
    frames: tuple[int, int] = (10, 16)  # onset..offset length range
    raw: bool = False  # also write CASME2_RAW and CASME2_RAW_selected (640×480)
    casme2_sheet: str = "20140508"  # or "20190701" (adds 'Objective Classes')

    @classmethod
    def preset(cls, scale: str, **kw) -> "SyntheticSpec":
        if scale == "small":
            return cls(**kw)
        if scale == "full":
            # the real releases: subjects, clips and clip lengths (tens of frames from onset to offset at 200 fps)
            return cls(casme2_subjects=26, casme2_clips=255, samm_subjects=29, samm_clips=159, frames=(30, 90), **kw)
        raise ValueError(f"unknown scale {scale!r}; choose 'small' or 'full'")

    def scale_name(self) -> str:
        """'small', 'full' or 'custom': the preset these counts are (raw frames and sheet aside)."""
        return next((s for s in ("small", "full") if self.preset(s, raw=self.raw, casme2_sheet=self.casme2_sheet) == self), "custom")


@dataclass
class Identity:
    """Per-subject face: geometry offsets and appearance."""

    landmarks: np.ndarray  # [68, 2] template units
    skin: tuple[int, int, int]
    lip: tuple[int, int, int]
    brow_px: float  # brow thickness relative to face width
    texture_seed: int


def _identity(rng: np.random.Generator) -> Identity:
    p = TEMPLATE.copy()
    # Structured identity variation, each several times a micro-AU displacement.
    brow_h, eye_h, eye_gap = rng.normal(0, 0.025), rng.normal(0, 0.015), rng.normal(0, 0.02)
    nose_len, mouth_h, mouth_w, jaw_w = rng.normal(0, 0.02), rng.normal(0, 0.02), rng.normal(0, 0.035), rng.normal(0, 0.04)
    brow_tilt, lip_thick = rng.normal(0, 0.02), rng.normal(0, 0.01)
    for idx in (BROW_L, BROW_R):
        p[list(idx), 1] += brow_h + eye_h
        sign = -1 if idx is BROW_L else 1
        p[list(idx), 1] += brow_tilt * (p[list(idx), 0] - 0.5) * sign * 2
    for idx, sign in ((EYE_L, -1), (EYE_R, 1)):
        p[list(idx), 1] += eye_h
        p[list(idx), 0] += sign * eye_gap
    p[list(NOSE_BRIDGE)[1:], 1] += np.linspace(0, nose_len, 3)
    p[list(NOSE_BASE), 1] += nose_len
    lips = list(LIP_OUT) + list(LIP_IN)
    p[lips, 1] += mouth_h
    p[lips, 0] = 0.5 + (p[lips, 0] - 0.5) * (1 + mouth_w * 3)
    p[[50, 51, 52], 1] -= lip_thick
    p[[56, 57, 58], 1] += lip_thick
    p[list(JAW), 0] = 0.5 + (p[list(JAW), 0] - 0.5) * (1 + jaw_w)
    p += rng.normal(0, 0.004, p.shape)
    base = rng.uniform(120, 215)
    skin = (int(base * rng.uniform(0.75, 0.9)), int(base * rng.uniform(0.85, 0.95)), int(base))
    lip = (int(base * 0.5), int(base * 0.45), int(min(255, base * 0.85)))
    return Identity(p, skin, lip, rng.uniform(0.012, 0.028), int(rng.integers(2**31)))


def au_profile(frame: int, onset: int, apex: int, offset: int) -> float:
    """Smooth 0 → 1 → 0 intensity over onset → apex → offset."""
    if frame <= onset or frame >= offset:
        return 0.0
    if frame <= apex:
        x = (frame - onset) / max(apex - onset, 1)
    else:
        x = (offset - frame) / max(offset - apex, 1)
    return float(x * x * (3 - 2 * x))


def animate(identity: Identity, aus: dict[int, float], intensity: float) -> np.ndarray:
    """Landmarks (template units) for one frame: identity + AU displacements × intensity."""
    p = identity.landmarks.copy()
    for au, amplitude in aus.items():
        if au in MOTION:
            p += MOTION[au] * amplitude * intensity
    return p


def render_face(
    landmarks: np.ndarray, identity: Identity, canvas: np.ndarray, box: tuple[float, float, float, float],
    shade: np.ndarray | None = None,
) -> np.ndarray:
    """Draw the face whose template square maps to ``box`` (x, y, w, h in pixels) onto ``canvas``.

    Landmarks are in template units; drawing uses 1/16-pixel precision so motion of a fraction
    of a pixel still changes the image. ``shade`` (from ``face_shading``) darkens eye sockets and
    lights the nose bridge, which makes the drawing face-like for detectors."""
    x0, y0, w, h = box
    px = np.stack([x0 + landmarks[:, 0] * w, y0 + landmarks[:, 1] * h], axis=1)
    sh = 4
    s = float(1 << sh)

    def P(idx):
        return np.round(px[list(idx)] * s).astype(np.int32)

    cv2.fillPoly(canvas, [np.round(face_outline(landmarks, box) * s).astype(np.int32)], identity.skin, cv2.LINE_AA, sh)
    if shade is not None:
        canvas[:] = (canvas * shade[..., None]).astype(np.uint8)
    dark = tuple(int(c * 0.3) for c in identity.skin)
    thick = max(1, int(identity.brow_px * w))
    for brow in (BROW_L, BROW_R):
        cv2.polylines(canvas, [P(brow)], False, dark, thick, cv2.LINE_AA, sh)
    for eye in (EYE_L, EYE_R):
        cv2.fillPoly(canvas, [P(eye)], (235, 235, 235), cv2.LINE_AA, sh)
        c = px[list(eye)].mean(0)
        cv2.circle(canvas, tuple(np.round(c * s).astype(int)), int(0.022 * w * s), (40, 30, 30), -1, cv2.LINE_AA, sh)
        cv2.polylines(canvas, [P(eye)], True, dark, max(1, thick // 2), cv2.LINE_AA, sh)
    cv2.polylines(canvas, [P(NOSE_BRIDGE)], False, tuple(int(c * 0.75) for c in identity.skin), max(1, thick // 2), cv2.LINE_AA, sh)
    cv2.polylines(canvas, [P(NOSE_BASE)], False, tuple(int(c * 0.5) for c in identity.skin), max(1, thick // 2), cv2.LINE_AA, sh)
    cv2.fillPoly(canvas, [P(LIP_OUT)], identity.lip, cv2.LINE_AA, sh)
    cv2.fillPoly(canvas, [P(LIP_IN)], (60, 40, 50), cv2.LINE_AA, sh)
    return canvas


def face_outline(landmarks: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Jaw line plus a forehead arc, in pixels."""
    x0, y0, w, h = box
    jaw = np.stack([x0 + landmarks[list(JAW), 0] * w, y0 + landmarks[list(JAW), 1] * h], 1)
    arc = np.linspace(0, np.pi, 12)
    forehead = np.stack([x0 + np.linspace(0.92, 0.08, 12) * w, y0 + (0.33 - 0.3 * np.sin(arc)) * h], 1)
    return np.concatenate([jaw, forehead])


def face_shading(landmarks: np.ndarray, shape: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    """Multiplicative shading (computed once per clip from the resting face)."""
    x0, y0, w, h = box
    shade = np.zeros(shape, np.float32)
    for eye in (EYE_L, EYE_R):
        c = landmarks[list(eye)].mean(0)
        cv2.ellipse(shade, (int(x0 + c[0] * w), int(y0 + (c[1] - 0.02) * h)), (int(0.1 * w), int(0.06 * h)), 0, 0, 360, 1.0, -1)
    cv2.ellipse(shade, (int(x0 + 0.5 * w), int(y0 + 0.52 * h)), (int(0.035 * w), int(0.12 * h)), 0, 0, 360, -0.6, -1)
    return 1 - 0.35 * cv2.GaussianBlur(shade, (0, 0), 0.03 * w)


def _texture(identity: Identity, shape: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(identity.texture_seed)
    tex = rng.normal(0, 1, (max(2, shape[0] // 6), max(2, shape[1] // 6))).astype(np.float32)
    return cv2.resize(tex, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC) * 6


# --------------------------------------------------------------------------------------------
# Clip sampling
# --------------------------------------------------------------------------------------------


@dataclass
class ClipTruth:
    dataset: str
    subject: str
    filename: str
    emotion: str
    aus: list[int]  # true AU set under the default parsing rules (what was animated)
    au_cell: str | int  # what the coding sheet says
    onset: int
    apex: int | str  # as written in the sheet
    offset: int
    render_apex: int  # where the motion actually peaks
    objective_class: int
    aus_unknown: list[int] = dataclass_field(default_factory=list)  # AUs the cell leaves unknown (default rules): masked, not negative
    frame_padding: int = 0
    face_box: tuple[float, float, float, float] | None = None  # SAMM: x, y, w, h in the frame


def coded_objective_class(aus: set[int]) -> int:
    """The objective class as the releases' coders assign it (our model of it): from every coded
    AU, the one class whose combinations match; a clip matching several classes (a conflicting
    combination) or none is VII (others). Deliberately not ``suite.emotions.objective_class``,
    whose most-specific-match rule then reproduces this column only in part — as on the real sheets."""
    matches = objective_matches(aus)
    return next(iter(matches)) if len(matches) == 1 else 7


def _sample_aus(rng: np.random.Generator, emotion: str) -> set[int]:
    table = _EMOTION_AUS.get(emotion) or _SAMM_ONLY.get(emotion) or _EMOTION_AUS["others"]
    aus = {au for au, p in table.items() if rng.random() < p}
    if rng.random() < 0.12:
        aus.add(int(rng.choice(_NOISE_AUS)))
    if not aus:
        aus.add(max(table, key=table.get))
    return aus


def _casme2_filenames(rng: np.random.Generator, n: int) -> list[str]:
    styles = ["EP{e:02d}_{k:02d}", "EP{e:02d}_{k:02d}f", "EP{e:02d}_{k}", "EP{e:02d}_{k:02d}_01", "EP{e:02d}f"]
    names: list[str] = []
    e = int(rng.integers(1, 8))
    while len(names) < n:
        style = styles[len(names) % len(styles)] if len(names) < len(styles) else styles[int(rng.integers(len(styles)))]
        name = style.format(e=e, k=int(rng.integers(1, 10)))
        if name not in names:
            names.append(name)
        else:
            e += 1
    return names


def _side_token(rng: np.random.Generator, au: int, p: float) -> str:
    return (str(rng.choice(["L", "R"])) if rng.random() < p else "") + str(au)


def _casme2_au_cell(rng: np.random.Generator, aus: set[int]) -> str | int:
    tokens = [_side_token(rng, au, 0.15) for au in aus]
    rng.shuffle(tokens)
    if len(tokens) == 1 and tokens[0].isdigit():
        return int(tokens[0])  # single AUs are numeric cells in the release
    return "+".join(tokens)


def _casme2_unknown_cell(aus: set[int], form: int) -> tuple[str, list[int]]:
    """A CASME II cell with a '?' (the three forms of ``docs/datasets.md``) and the AUs it leaves
    unknown: '?' (all), '12+?' (all but the coded ones), '14?' (that AU). Draws no random numbers,
    so the rest of the release is the same draw whichever form a row gets."""
    if form == 0 or not aus:
        return "?", sorted(ACTION_UNITS)
    tokens = [str(au) for au in sorted(aus)]
    if form == 1:
        return "+".join(tokens) + "+?", sorted(set(ACTION_UNITS) - aus)
    tokens[-1] += "?"
    return "+".join(tokens), [max(aus)]


def _samm_au_cell(rng: np.random.Generator, aus: set[int], quirk: str | None) -> tuple[str | int, set[int], list[int]]:
    """The SAMM-style cell for ``aus``, the AUs animated, and the AUs the cell leaves unknown."""
    def tok(au: int) -> str:
        pre = ""
        r = rng.random()
        if au in (18, 23, 24, 25) and r < 0.3:
            pre = str(rng.choice(["T", "B"]))
        elif r < 0.15:
            pre = str(rng.choice(["L", "R"]))
        elif r < 0.22:
            pre = "A"
        elif r < 0.25:
            pre = "A/L"
        suf = str(rng.choice(list("ABCDE"))) if rng.random() < 0.6 else ""
        if suf and rng.random() < 0.1:
            suf += "/" + chr(ord(suf) + 1) if suf != "E" else ""
        return pre + str(au) + suf

    truth, unknown = set(aus), []
    if quirk in ("or_evaluated", "or_group"):  # the real sheet pits an evaluated AU against another one
        truth |= {12, 15} if quirk == "or_group" else {12}
    parts = [tok(a) for a in sorted(truth - ({12, 14} if quirk == "or_evaluated" else {6, 12} if quirk == "or_group" else set()))]
    rng.shuffle(parts)
    # an 'or' beside other AUs is parenthesised: unparenthesised, the reader cannot tell a choice
    # within one operand from one between whole codings and masks what the two readings dispute
    def grouped(text: str, beside: list[str]) -> str:
        return f"({text})" if beside else text

    if quirk == "or_evaluated":  # 'L12 or L14': AU12 was animated, the coder could not tell 12 from 14
        parts.append(grouped("L12 or L14", parts))
        unknown = [12, 14]
    elif quirk == "or_group":  # '(R6 or R12)+R15'
        parts = [p for p in parts if int(re.search(r"\d+", p).group()) != 15] + ["(R6 or R12)+R15"]
        unknown = [6, 12]
    elif quirk == "ref":
        parts[-1] = f"ref({parts[-1]})"
    elif quirk == "or_same":  # same AU, two intensities: intersection keeps it
        au = sorted(aus)[0]
        parts = [p for p in parts if int(re.search(r"\d+", p).group()) != au]
        parts.append(grouped(f"{au}D or {au}E", parts))
    elif quirk == "or_diff":  # uncertain between two AUs: unknown unless animated (and so coded beside the choice)
        pair = [6, 10] if rng.random() < 0.5 else [38, 39]
        parts.append("(R6 or R10)" if pair == [6, 10] else grouped("L38 or L39", parts))
        unknown = [a for a in pair if a not in truth]  # one also animated is coded present beside the choice
    elif quirk == "free_text":
        parts.append("soft focus")
    elif quirk == "spaces":
        return " + ".join(parts) + " ", truth, unknown
    if len(parts) == 1 and parts[0].isdigit():
        return int(parts[0]), truth, unknown
    return "+".join(parts), truth, unknown


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


def _subjects_clip_counts(rng: np.random.Generator, n_subjects: int, n_clips: int) -> list[int]:
    counts = np.full(n_subjects, 2)
    extra = rng.multinomial(n_clips - 2 * n_subjects, rng.dirichlet(np.full(n_subjects, 2.0)))
    return list(counts + extra)


def _pick_emotion(rng: np.random.Generator, weights: dict[str, int]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], float)
    return str(rng.choice(names, p=p / p.sum()))


def _frame_range(rng: np.random.Generator, spec: SyntheticSpec, width: int) -> tuple[int, int, int]:
    length = int(rng.integers(spec.frames[0], spec.frames[1] + 1))
    onset = int(rng.integers(1, 10 ** (width - 1) * 5)) if width > 1 else int(rng.integers(1, 300))
    apex = onset + int(round(length * rng.uniform(0.35, 0.6)))
    return onset, apex, onset + length - 1


JPEG_QUALITY = 94  # every synthetic frame's


def _jpeg(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise OSError(f"could not write {path}")


def _clip_frames(rng, identity, aus_amp, onset, render_apex, offset, size_wh, box, gray, pose):
    """Yield (frame number, image, landmarks in pixels) for onset..offset.

    Only the region around the face changes between frames; everything else is computed once."""
    w, h = size_wh
    bx, by, bw, bh = box
    rx0, ry0 = max(0, int(bx - 0.08 * bw)), max(0, int(by - 0.08 * bh))
    rx1, ry1 = min(w, int(bx + 1.08 * bw)), min(h, int(by + 1.08 * bh))
    roi_box = (bx - rx0, by - ry0, bw, bh)
    roi_shape = (ry1 - ry0, rx1 - rx0)
    light = (np.linspace(-1, 1, w, dtype=np.float32)[None, :] * pose["light"] + pose["bright"])
    skin = np.zeros(roi_shape, np.float32)
    cv2.fillPoly(skin, [np.round(face_outline(identity.landmarks, roi_box)).astype(np.int32)], 1.0)
    # Texture and light on the face only: the background around it already carries the light.
    static = ((_texture(identity, (h, w)) + light)[ry0:ry1, rx0:rx1] * cv2.GaussianBlur(skin, (0, 0), 2))[..., None]
    full = np.clip(pose["bg"] + light[..., None] + rng.standard_normal((h, w, 1), np.float32) * 2, 0, 255).astype(np.uint8)
    full = np.repeat(full, 3, axis=2)
    bg = full[ry0:ry1, rx0:rx1].copy()
    shade = face_shading(identity.landmarks, roi_shape, roi_box)
    c, s = np.cos(pose["rot"]), np.sin(pose["rot"])
    rot = np.array([[c, s], [-s, c]])
    for frame in range(onset, offset + 1):
        lm = animate(identity, aus_amp, au_profile(frame, onset, render_apex, offset))
        lm = (lm - 0.5) @ rot + 0.5 + pose["shift"] + rng.normal(0, 0.0008, 2)
        roi = cv2.GaussianBlur(render_face(lm, identity, bg.copy(), roi_box, shade), (0, 0), 0.6)
        roi = roi.astype(np.float32) + static + rng.standard_normal(roi.shape, np.float32) * 2.0
        img = full.copy()
        img[ry0:ry1, rx0:rx1] = np.clip(roi, 0, 255).astype(np.uint8)
        if gray:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        pix = np.stack([bx + lm[:, 0] * bw, by + lm[:, 1] * bh], 1)
        yield frame, img, pix


def _pose(rng) -> dict:
    return {
        "rot": rng.normal(0, 0.02), "shift": rng.normal(0, 0.006, 2), "light": rng.normal(0, 12),
        "bright": rng.normal(0, 10), "bg": int(rng.integers(30, 90)),
    }


@dataclass(frozen=True)
class Formula:
    """A formula cell with the value Excel cached for it when the release was saved (readers that
    do not evaluate formulas — openpyxl ``data_only``, pandas — see the cached value)."""

    text: str  # "=F15-D15+1"
    value: int | float


def _write_xlsx(path: Path, sheets: dict[str, list[list]]) -> None:
    """Write ``sheets`` (rows of cells; None: an empty cell) with XlsxWriter, which, unlike
    openpyxl, stores a cached result with each formula as Excel does."""
    import xlsxwriter

    path.parent.mkdir(parents=True, exist_ok=True)
    with xlsxwriter.Workbook(str(path), {"strings_to_formulas": False}) as wb:
        for name, rows in sheets.items():
            ws = wb.add_worksheet(name)
            for r, row in enumerate(rows):
                for c, cell in enumerate(row):
                    if isinstance(cell, Formula):
                        ws.write_formula(r, c, cell.text, None, cell.value)
                    elif cell is not None:
                        ws.write(r, c, cell)


def write_casme2(root: Path, spec: SyntheticSpec, rng: np.random.Generator) -> list[ClipTruth]:
    counts = _subjects_clip_counts(rng, spec.casme2_subjects, spec.casme2_clips)
    truths: list[ClipTruth] = []
    landmarks: dict[str, np.ndarray] = {}
    n_unknown = 2 if spec.casme2_clips < 100 else 5
    quirk_rows = rng.permutation(sum(counts))
    slash_apex, unknown_rows = quirk_rows[0], set(quirk_rows[1:1 + n_unknown])
    apex_onset, apex_offset = quirk_rows[1 + n_unknown], quirk_rows[2 + n_unknown]
    row = 0
    progress = tqdm(total=sum(counts), desc="synthetic CASME II", unit="clip", disable=None)
    for s_idx, n in enumerate(counts):
        subject = f"{s_idx + 1:02d}"
        identity = _identity(rng)
        crop_w, crop_h = int(rng.integers(260, 300)), int(rng.integers(320, 360))
        for filename in _casme2_filenames(rng, n):
            emotion = _pick_emotion(rng, _CASME2_EMOTION_P)
            aus = _sample_aus(rng, emotion)
            onset, apex, offset = _frame_range(rng, spec, 1)
            render_apex = apex
            apex_cell: int | str = apex
            if row == slash_apex:
                render_apex = (onset + offset) // 2
                apex, apex_cell = render_apex, "/"
            elif row == apex_onset:
                apex_cell = onset
            elif row == apex_offset:
                apex_cell = offset
            aus_unknown: list[int] = []
            if row in unknown_rows and spec.casme2_sheet == "20140508":
                au_cell, aus_unknown = _casme2_unknown_cell(aus, sorted(unknown_rows).index(row) % 3)
            else:
                au_cell = _casme2_au_cell(rng, aus)
            amp = {au: rng.uniform(0.7, 1.1) for au in aus}
            pose = _pose(rng)
            box = (0.02 * crop_w, 0.01 * crop_h, 0.96 * crop_w, 0.98 * crop_h)
            frames_lm = []
            for frame, img, pix in _clip_frames(rng, identity, amp, onset, render_apex, offset, (crop_w, crop_h), box, False, pose):
                _jpeg(root / "Cropped" / f"sub{subject}" / filename / f"reg_img{frame}.jpg", img)
                frames_lm.append(pix)
                if spec.raw:
                    raw = np.full((480, 640, 3), pose["bg"], np.uint8)
                    raw[70:70 + crop_h, 180:180 + crop_w] = img
                    for folder in ("CASME2_RAW_selected", "CASME2_RAW/CASME2-RAW"):
                        _jpeg(root / folder / f"sub{subject}" / filename / f"img{frame}.jpg", raw)
            landmarks[f"sub{subject}/{filename}"] = np.stack(frames_lm).astype(np.float32)
            truths.append(ClipTruth("casme2", subject, filename, emotion, sorted(aus), au_cell, onset, apex_cell,
                                    offset, render_apex, coded_objective_class(aus), aus_unknown))
            row += 1
            progress.update()
    progress.close()
    # The release ships a Windows shortcut inside one clip folder.
    first = truths[0]
    (root / "Cropped" / f"sub{first.subject}" / first.filename / "Thumbs.lnk").write_bytes(b"L\x00\x00\x00")
    header = ["Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None, "Action Units", "Estimated Emotion"]
    if spec.casme2_sheet == "20190701":
        header.append("Objective Classes")
    rows = [header]
    for t in truths:
        r = [t.subject, t.filename, None, t.onset, t.apex, t.offset, None, t.au_cell, t.emotion]
        if spec.casme2_sheet == "20190701":
            r.append(t.objective_class)
        rows.append(r)
    _write_xlsx(root / f"CASME2-coding-{spec.casme2_sheet}.xlsx", {"Sheet1": rows, "Sheet2": [], "Sheet3": []})
    obj = [["Subject", "Filename", "Objective Class"]] + [[int(t.subject), t.filename, t.objective_class] for t in truths]
    _write_xlsx(root / "CASME2-ObjectiveClasses.xlsx", {"Sheet1": obj})
    (root.parent / "truth").mkdir(exist_ok=True)
    np.savez_compressed(root.parent / "truth" / "casme2_landmarks.npz", **landmarks)
    return truths


SAMM_PREAMBLE = [
    ["SAMM Micro-Movement FACS Codes"],
    ["Spontaneous Actions and Micro-Movements (SAMM) database"],
    ["Please cite: A. K. Davison, C. Lansley, N. Costen, K. Tan, M. H. Yap, SAMM: A Spontaneous Micro-Facial Movement Dataset, IEEE TAC 2016."],
    [None],
    ["Update 2018-05-17: objective classes added; estimated emotions revised."],
    [None],
    ["Key:"],
    ["/", "or"],
    ["?", "unclear offset"],
    ["AU help:"],
    ["L2 / R2", "unilateral (left / right)"],
    ["A2", "asymmetric"],
    [None],
]
SAMM_HEADER = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration",
               "Micro", "Action Units", "Estimated Emotion", "Objective Classes", "Notes"]


def write_samm(root: Path, spec: SyntheticSpec, rng: np.random.Generator) -> list[ClipTruth]:
    counts = _subjects_clip_counts(rng, spec.samm_subjects, spec.samm_clips)
    subject_ids = sorted(rng.choice(np.arange(6, 40), size=spec.samm_subjects, replace=False))
    truths: list[ClipTruth] = []
    landmarks: dict[str, np.ndarray] = {}
    n = sum(counts)
    order = rng.permutation(n)
    bad_apex = set(order[:2])
    quirks = {int(order[2 + i]): q for i, q in enumerate(["ref", "or_same", "or_diff", "or_evaluated", "or_group", "free_text", "spaces",
                                                            "ref", "or_diff", "or_evaluated", "spaces"]) if 2 + i < n}
    row = 0
    W, H = 960, 650
    progress = tqdm(total=sum(counts), desc="synthetic SAMM", unit="clip", disable=None)
    for sid, n_clips in zip(subject_ids, counts):
        subject = f"{sid:03d}"
        identity = _identity(rng)
        face_w = int(rng.integers(280, 340))
        for k in range(n_clips):
            code = int(rng.integers(1, 8))
            filename = f"{subject}_{code}_{k + 1}"
            emotion = _pick_emotion(rng, _SAMM_EMOTION_P)
            aus = _sample_aus(rng, emotion)
            onset, apex, offset = _frame_range(rng, spec, 5)
            render_apex = apex
            apex_cell: int = apex
            if row in bad_apex:  # coded apex outside the clip; the reader falls back to the midpoint
                render_apex = (onset + offset) // 2
                apex_cell = offset + int(rng.integers(3, 40)) if row == min(bad_apex) else onset - int(rng.integers(3, 40))
            au_cell, truth_aus, aus_unknown = _samm_au_cell(rng, aus, quirks.get(row))
            padding = int(rng.choice([0, 4, 5]))
            amp = {au: rng.uniform(0.7, 1.1) for au in truth_aus}
            pose = _pose(rng)
            fx, fy = rng.uniform(200, W - face_w - 200), rng.uniform(60, H - face_w * 1.15 - 40)
            box = (fx, fy, float(face_w), face_w * 1.15)
            frames_lm = []
            for frame, img, pix in _clip_frames(rng, identity, amp, onset, render_apex, offset, (W, H), box, True, pose):
                _jpeg(root / "SAMM" / subject / filename / f"{subject}_{frame:0{padding}d}.jpg", img)
                frames_lm.append(pix)
            landmarks[filename] = np.stack(frames_lm).astype(np.float32)
            samm_emotion = SAMM_EMOTIONS.get(emotion, emotion.capitalize())
            truths.append(ClipTruth("samm", subject, filename, samm_emotion, sorted(truth_aus), au_cell, onset, apex_cell,
                                    offset, render_apex, coded_objective_class(truth_aus), aus_unknown, padding, box))
            row += 1
            progress.update()
    progress.close()
    rows = [*SAMM_PREAMBLE, SAMM_HEADER]
    for i, t in enumerate(truths):
        excel_row = len(rows) + 1
        notes = "subject looked away briefly" if i % 11 == 3 else None
        rows.append([t.subject, t.filename, int(t.filename.split("_")[1]), t.onset, t.apex, t.offset,
                     Formula(f"=F{excel_row}-D{excel_row}+1", t.offset - t.onset + 1), "Micro", t.au_cell, t.emotion, t.objective_class, notes])
    _write_xlsx(root / "SAMM_Micro_FACS_Codes_v2.xlsx", {"MICRO_ONLY": rows})
    (root.parent / "truth").mkdir(exist_ok=True)
    np.savez_compressed(root.parent / "truth" / "samm_landmarks.npz", **landmarks)
    return truths


def generate(out: Path, seed: int = 0, spec: SyntheticSpec = SyntheticSpec(), releases=None) -> dict[str, Path]:
    """Write ``out/<folder>`` for each release (default: the default ones, ``out/CASME2`` and
    ``out/SAMM``) and ``out/truth`` (labels and landmarks used). Each release draws from its own
    random stream (``ReleaseSpec.seed_index``), so which releases are written changes none of them."""
    from .registry import default_releases, get_release

    out = Path(out)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    roots = {}
    for name in (default_releases() if releases is None else releases):
        release = get_release(name)
        if release.synthetic_writer is None:
            raise ValueError(f"release {name!r} declares no synthetic writer")
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(release.seed_index,)))
        truths = release.synthetic_writer(out / release.folder, spec, rng)
        tmp = out / "truth" / f".{name}.jsonl"
        with open(tmp, "w") as f:
            for t in truths:
                f.write(json.dumps(asdict(t), default=_json_default) + "\n")
        roots[name] = out / release.folder
        if not (out / "truth" / "spec.json").exists() or release.default:
            (out / "truth" / "spec.json").write_text(json.dumps({"seed": seed, "scale": spec.scale_name(), **asdict(spec)}))  # read by suite.provenance
        tmp.replace(out / "truth" / f"{name}.jsonl")  # last: the release is complete
    return roots


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(type(o))
