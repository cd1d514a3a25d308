"""The AU-string parser on every quirk in DATASETS.md, and property tests on arbitrary input."""
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suite.aus import ACTION_UNITS, DATASET_AUS, AURules, au_prompt, parse_au_string


@pytest.mark.parametrize("cell, expected", [
    # CASME II
    (12, {12}), (12.0, {12}), ("4+L10", {4, 10}), ("L10", {10}), ("R1+R2", {1, 2}), ("4+R10", {4, 10}),
    ("4+7+6", {4, 6, 7}),
    # SAMM intensity, side, asymmetry, lip prefixes
    ("12A", {12}), ("4D", {4}), ("10A/B", {10}), ("A12", {12}), ("A1B+A2C", {1, 2}), ("A/L12", {12}),
    ("T23", {23}), ("B18", {18}), ("R14A+17B", {14, 17}),
    # ref(...) counted as present by default
    ("ref(7B)", {7}), ("12+ref(43)", {12, 43}),
    # alternatives: default keeps only AUs present in every alternative
    ("L12 or L14", set()), ("(R6 or R12)+R15", {15}), ("R14A or 17A or 24A", set()), ("4D or 4E", {4}),
    ("12/14", set()), ("6 OR 6B", {6}),
    # stray spaces, free text, empty
    ("12+15 ", {12, 15}), ("L12 + 61", {12, 61}), ("R14+17+soft focus", {14, 17}), ("", set()), (None, set()),
    (float("nan"), set()),
])
def test_quirks(cell, expected):
    assert set(parse_au_string(cell).aus) == expected


def test_unknown_and_free_text_are_reported():
    q = parse_au_string("?")
    assert q.others_unknown and not q.aus
    assert any("unknown" in a for _, a in q.problems)
    t = parse_au_string("R14+17+soft focus")
    assert t.ignored == ("soft focus",)
    assert any("soft focus" in p for p, _ in t.problems)


AUS = DATASET_AUS["casme2"] + (6, 23)


@pytest.mark.parametrize("cell, present, unknown", [
    ("?", set(), set(AUS)),                         # '?' alone: nothing is known
    ("12+?", {12}, set(AUS) - {12}),                 # a '?' operand: the coded AU is known, every other one is not
    ("14?", set(), {14}),                            # '?' glued to an AU: only that AU is unknown
    ("4+14?", {4}, {14}),
    ("L12 or L14", set(), {12, 14}),                 # alternatives: what they disagree on is unknown, not absent
    ("(R6 or R12)+R15", {15}, {6, 12}),
    ("4D or 4E", {4}, set()),                        # they agree: known present
    ("4/7", set(), {4, 7}),
    ("R14A or 17A or 24A", set(), {14, 17}),         # 24 is not in AUS
    ("12+15", {12, 15}, set()),
])
def test_per_au_label_masks(cell, present, unknown):
    """Each form makes unknown exactly what it covers; every other AU is known (absent unless coded)."""
    parsed = parse_au_string(cell)
    assert {a for a in AUS if not parsed.known(a)} == unknown
    assert {a for a in AUS if parsed.known(a) and a in parsed.aus} == present


def test_other_alternative_rules_keep_their_labels_known():
    assert all(parse_au_string("L12 or L14", AURules(alternatives=rule)).known(12) for rule in ("intersection", "union", "first"))
    assert 12 not in parse_au_string("L12 or L14", AURules(alternatives="intersection")).aus


def test_rules_are_selectable():
    assert set(parse_au_string("12+ref(43)", AURules(ref="drop")).aus) == {12}
    assert set(parse_au_string("(R6 or R12)+R15", AURules(alternatives="union")).aus) == {6, 12, 15}
    assert set(parse_au_string("L12 or L14", AURules(alternatives="first")).aus) == {12}
    assert parse_au_string("L12 or L14").alternatives == ("L12 or L14",)
    with pytest.raises(ValueError, match="intersection"):
        AURules(alternatives="maybe")


def test_digits_are_never_joined():
    assert set(parse_au_string("6+12").aus) == {6, 12}
    assert 612 not in parse_au_string("6 12").aus
    assert parse_au_string("x612").aus == frozenset()  # glued to text: reported, not read as AU 612


def _digit_runs(s: str) -> set[int]:
    return {int(m) for m in re.findall(r"\d+", s)}


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet="0123456789LRABTCDE+/() ?orfef\t.,x"), st.integers(0, 10**6),
                 st.floats(allow_nan=True)))
def test_never_crashes_and_never_invents_numbers(cell):
    parsed = parse_au_string(cell)
    text = parsed.raw
    # Every AU comes from one maximal run of digits in the cell: digits are never concatenated.
    assert set(parsed.aus) <= _digit_runs(text)


_token = st.builds(
    lambda pre, au, inten: f"{pre}{au}{inten}",
    st.sampled_from(["", "L", "R", "A", "A/L", "T", "B"]),
    st.sampled_from(sorted(ACTION_UNITS)),
    st.sampled_from(["", "A", "B", "C", "D", "E", "A/B"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_token, min_size=1, max_size=6), st.sampled_from(["+", " + ", "+ "]), st.booleans())
def test_well_formed_cells_parse_exactly(tokens, sep, trailing_space):
    cell = sep.join(tokens) + (" " if trailing_space else "")
    expected = {int(re.search(r"\d+", t).group()) for t in tokens}
    assert set(parse_au_string(cell).aus) == expected


def test_vocabulary_covers_evaluated_aus_with_regions_and_prompts():
    for aus in DATASET_AUS.values():
        for au in aus:
            unit = ACTION_UNITS[au]
            assert unit.regions and all(0 <= v <= 1 for box in unit.regions for v in box)
            assert au_prompt(au, True) != au_prompt(au, False)
    assert DATASET_AUS == {"casme2": (1, 2, 4, 7, 12, 14, 15, 17), "samm": (2, 4, 7, 12)}
