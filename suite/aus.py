"""FACS action-unit vocabulary: numbers, names, prompt phrases and face-template regions.

How a coding sheet's AU cell becomes labels (the AU-string grammar) is ``suite.data.au_strings``;
which AUs each release evaluates is declared by the release (``suite.data.registry``).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in [0, 1] on the aligned face


@dataclass(frozen=True)
class ActionUnit:
    number: int
    name: str
    description: str  # short phrase used in CLIP text prompts
    regions: tuple[Box, ...]  # where the AU moves the face, on the aligned-face template


def _pair(x0: float, y0: float, x1: float, y1: float) -> tuple[Box, Box]:
    """A left/right symmetric pair of boxes (x given for the image-left side)."""
    return (x0, y0, x1, y1), (1.0 - x1, y0, 1.0 - x0, y1)


# Regions are boxes on the aligned-face template (``suite.data.synthetic.TEMPLATE``): brows near y≈0.27,
# eyes y≈0.38, nose tip y≈0.60, mouth y≈0.76, chin y≈0.95. Boxes are generous because real
# alignment is imperfect; the synthetic generator's landmark motion is checked to fall inside.
ACTION_UNITS: dict[int, ActionUnit] = {
    au.number: au
    for au in [
        ActionUnit(1, "inner brow raiser", "raised inner eyebrows", ((0.26, 0.12, 0.74, 0.38),)),
        ActionUnit(2, "outer brow raiser", "raised outer eyebrows", _pair(0.08, 0.10, 0.42, 0.38)),
        ActionUnit(4, "brow lowerer", "lowered and drawn together eyebrows", ((0.12, 0.14, 0.88, 0.42),)),
        ActionUnit(5, "upper lid raiser", "widened eyes with raised upper lids", _pair(0.15, 0.28, 0.45, 0.48)),
        ActionUnit(6, "cheek raiser", "raised cheeks", _pair(0.08, 0.36, 0.42, 0.80)),
        ActionUnit(7, "lid tightener", "tightened eyelids", _pair(0.15, 0.30, 0.45, 0.50)),
        ActionUnit(9, "nose wrinkler", "wrinkled nose", ((0.32, 0.36, 0.68, 0.66),)),
        ActionUnit(10, "upper lip raiser", "raised upper lip", ((0.28, 0.60, 0.72, 0.80),)),
        ActionUnit(12, "lip corner puller", "lip corners pulled up", _pair(0.18, 0.64, 0.44, 0.88)),
        ActionUnit(14, "dimpler", "dimpled lip corners", _pair(0.16, 0.66, 0.42, 0.88)),
        ActionUnit(15, "lip corner depressor", "lip corners pulled down", _pair(0.18, 0.70, 0.44, 0.94)),
        ActionUnit(17, "chin raiser", "raised chin", ((0.32, 0.74, 0.68, 1.00),)),
        ActionUnit(18, "lip pucker", "puckered lips", ((0.30, 0.66, 0.70, 0.88),)),
        ActionUnit(20, "lip stretcher", "horizontally stretched lips", _pair(0.15, 0.66, 0.42, 0.90)),
        ActionUnit(23, "lip tightener", "tightened lips", ((0.30, 0.66, 0.70, 0.88),)),
        ActionUnit(24, "lip pressor", "pressed lips", ((0.30, 0.66, 0.70, 0.88),)),
        ActionUnit(25, "lips part", "parted lips", ((0.30, 0.66, 0.70, 0.90),)),
        ActionUnit(26, "jaw drop", "dropped jaw", ((0.25, 0.70, 0.75, 1.00),)),
        ActionUnit(38, "nostril dilator", "dilated nostrils", ((0.35, 0.50, 0.65, 0.68),)),
        ActionUnit(39, "nostril compressor", "compressed nostrils", ((0.35, 0.50, 0.65, 0.68),)),
        ActionUnit(43, "eyes closed", "closed eyes", _pair(0.15, 0.28, 0.45, 0.50)),
        ActionUnit(45, "blink", "blinking eyes", _pair(0.15, 0.28, 0.45, 0.50)),
        ActionUnit(61, "eyes turn left", "eyes turned left", _pair(0.15, 0.30, 0.45, 0.48)),
        ActionUnit(62, "eyes turn right", "eyes turned right", _pair(0.15, 0.30, 0.45, 0.48)),
        ActionUnit(63, "eyes up", "eyes turned up", _pair(0.15, 0.28, 0.45, 0.48)),
        ActionUnit(64, "eyes down", "eyes turned down", _pair(0.15, 0.30, 0.45, 0.50)),
    ]
}


class _EvaluatedAUs(Mapping):
    """Release name → its evaluated AU numbers (left/right merged), read from the release registry
    (``suite.data.registry``: each release declares its list, ``docs/datasets.md`` says why). A
    read-only view, so a release registered later (a test's toy release) is listed too. Iterates
    over the releases; an evaluation key (``casme2-to-samm``, ``casme2+samm``) is looked up too."""

    def _table(self) -> dict[str, tuple[int, ...]]:
        from .data.registry import releases  # the data layer declares releases; imported on use, no cycle

        return {name: spec.aus for name, spec in releases().items()}

    def __getitem__(self, name: str) -> tuple[int, ...]:
        """A release's AUs; a cross-dataset evaluation's key (``suite.evaluation``) gives its shared AUs."""
        table = self._table()
        if name in table:
            return table[name]
        from .evaluation import EvaluationError, evaluation_of

        try:
            return evaluation_of(name).aus
        except EvaluationError:
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())

    def __repr__(self) -> str:
        return repr(self._table())


DATASET_AUS: Mapping[str, tuple[int, ...]] = _EvaluatedAUs()


def au_name(number: int) -> str:
    return f"AU{number}"


def au_prompt(number: int, present: bool) -> str:
    """CLIP text prompt for an AU's present / absent state."""
    au = ACTION_UNITS[number]
    if present:
        return f"a face with AU{number} {au.name}: {au.description}"
    return f"a face without AU{number} {au.name}: no {au.description}"
