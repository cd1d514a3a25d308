"""Emotion vocabularies and the AU → class rule tables for emotion-label-free ME recognition.

Rules (documented in ``docs/datasets.md``), fixed a priori — never tuned on any data:

* CASME II emotions (Yan et al., PLoS ONE 2014, Table 2): happiness ↔ AU6 or AU12; surprise ↔
  AU1+2, AU25 or AU2; disgust ↔ AU9, AU10 or AU4+7; repression ↔ AU15 and/or AU17; otherwise
  others. When several rules match, the first in that order wins (our choice; the paper does not
  order them).
* Objective classes I–VII: Davison, Merghani & Yap, "Objective Classes for Micro-Facial
  Expression Recognition", J. Imaging 4(10):119, 2018 (arXiv 1708.07549), the table of AU
  combinations per class. The paper's body could not be read here: ``OBJECTIVE_TABLE`` is our
  reading of that table and may differ from it in detail. A clip's class: among the table's
  combinations contained in its AU set, the largest; ties between classes by the order I, II,
  III, IV, V, VI (ours); none → VII (others).
"""
from __future__ import annotations

from collections.abc import Iterable

from .aus import ACTION_UNITS

CASME2_EMOTIONS = ("happiness", "disgust", "repression", "surprise", "others", "sadness", "fear")
CASME2_CLASSES = ("happiness", "disgust", "repression", "surprise", "others")  # 5-class protocol
SAMM_EMOTION_NAMES = ("Anger", "Contempt", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other")
OBJECTIVE_CLASSES = (1, 2, 3, 4, 5, 6, 7)

# Lower-case emotion → SAMM spelling (SAMM uses the singular "Other").
SAMM_EMOTIONS = {name.lower(): name for name in SAMM_EMOTION_NAMES} | {"others": "Other"}


def casme2_emotion(aus: Iterable[int]) -> str:
    """CASME II 5-class emotion predicted from an AU set by the dataset's own rules."""
    a = set(aus)
    if 6 in a or 12 in a:
        return "happiness"
    if {1, 2} <= a or 25 in a or 2 in a:
        return "surprise"
    if 9 in a or 10 in a or {4, 7} <= a:
        return "disgust"
    if 15 in a or 17 in a:
        return "repression"
    return "others"


# Class → AU combinations (our reading of Davison, Merghani & Yap 2018, see above).
OBJECTIVE_TABLE: dict[int, tuple[frozenset[int], ...]] = {
    cls: tuple(frozenset(c) for c in combos) for cls, combos in {
        1: [{6}, {12}, {6, 12}, {6, 7, 12}, {7, 12}],
        2: [{1, 2}, {5}, {25}, {1, 2, 25}, {25, 26}, {5, 24}],
        3: [{23}, {4}, {4, 7}, {4, 5}, {4, 5, 7}, {17, 24}, {4, 6, 7}, {4, 38}],
        4: [{10}, {9}, {4, 9}, {4, 40}, {4, 5, 40}, {4, 7, 9}, {4, 9, 17}, {4, 7, 10}, {4, 5, 7, 9}, {7, 10}],
        5: [{1}, {15}, {1, 4}, {6, 15}, {15, 17}],
        6: [{1, 2, 4}, {20}],
    }.items()
}


def objective_matches(aus: Iterable[int]) -> dict[int, int]:
    """Class → size of its largest table combination contained in ``aus`` (matching classes only)."""
    a = set(aus)
    sizes = {cls: max((len(c) for c in combos if c <= a), default=0) for cls, combos in OBJECTIVE_TABLE.items()}
    return {cls: n for cls, n in sizes.items() if n}


def objective_class(aus: Iterable[int]) -> int:
    """Objective class (1–7) of an AU set: the most specific matching combination wins."""
    matches = objective_matches(aus)
    if not matches:
        return 7
    return max(matches, key=lambda cls: (matches[cls], -cls))


# --- prompt-based recognition (our reading of "zero-shot recognition through text prompts") ----
# The AUs each class prompt describes: the defining AUs of the class's rules above; an empty tuple
# is a face without visible movement ("others" / class VII).
CLASS_PROMPT_AUS: dict = {
    1: (6, 12), 2: (1, 2, 5, 25), 3: (4, 7, 23), 4: (9, 10), 5: (1, 15), 6: (1, 2, 4, 20), 7: (),
    "happiness": (6, 12), "surprise": (1, 2, 25), "disgust": (4, 7, 9, 10), "repression": (15, 17), "others": (),
}
# (task, classes) in the order of a model's class prompts
RECOGNITION_CLASSES = (("objective", OBJECTIVE_CLASSES), ("emotion5", CASME2_CLASSES))


def class_prompt(cls) -> str:
    """The text prompt of a recognition class, from its AUs' descriptions (no emotion word)."""
    aus = CLASS_PROMPT_AUS[cls]
    if not aus:
        return "a face without visible facial movement"
    return "a face with " + ", ".join(ACTION_UNITS[a].description for a in aus)
