"""Emotion vocabularies and the AU → class rule tables for emotion-label-free ME recognition.

Rules (documented in ``docs/datasets.md``):

* CASME II emotions (Yan et al., PLoS ONE 2014, Table 2): happiness ↔ AU6 or AU12; surprise ↔
  AU1+2, AU25 or AU2; disgust ↔ AU9, AU10 or AU4+7; repression ↔ AU15 and/or AU17; otherwise
  others. When several rules match, the first in that order wins (our choice; the paper does not
  order them).
* Objective classes I–VII (Davison et al., FG 2018): checked in the order IV (AU9, AU10, incl.
  AU4+9 / AU4+10), I (AU12 ±6/7), II (AU1+2, AU5, AU25 ±26), III (AU4, AU4+7, AU23), V (AU1,
  AU15 ±17), VI (AU20), else VII. The order is ours where a set matches several classes.
"""
from __future__ import annotations

from collections.abc import Iterable

CASME2_EMOTIONS = ("happiness", "disgust", "repression", "surprise", "others", "sadness", "fear")
CASME2_CLASSES = ("happiness", "disgust", "repression", "surprise", "others")  # 5-class protocol
SAMM_EMOTION_NAMES = ("Anger", "Contempt", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other")
SAMM_CLASSES = ("Anger", "Contempt", "Happiness", "Surprise", "Other")  # 5-class protocol
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


def objective_class(aus: Iterable[int]) -> int:
    """Davison et al. objective class (1–7) of an AU set."""
    a = set(aus)
    if 9 in a or 10 in a:
        return 4
    if 12 in a:
        return 1
    if {1, 2} <= a or 5 in a or 25 in a:
        return 2
    if 4 in a or 23 in a:
        return 3
    if 1 in a or 15 in a:
        return 5
    if 20 in a:
        return 6
    return 7
