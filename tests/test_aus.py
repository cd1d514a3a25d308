"""The AU-string parser on every quirk in DATASETS.md, and property tests on arbitrary input."""
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suite.aus import ACTION_UNITS, DATASET_AUS, au_prompt
from suite.data.au_strings import AURules, parse_au_string


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
    ("4+(4 or 7)", {4}, {7}),                        # coded present outside the choice: present
    ("4+12/14", {4}, {12, 14}),                      # '/' chooses within one operand
    ("4+(L12 or L14)", {4}, {12, 14}),
    # 'or' beside '+' unparenthesised: within one operand, or between whole codings? What the two
    # readings dispute is unknown
    ("4+L12 or L14", set(), {4, 12, 14}),            # 4+(12 or 14) | (4+12) or 14
    ("4+7 or 4+12", {4}, {7, 12}),                   # 4+(7 or 4)+12 | (4+7) or (4+12)
    ("12+R14 or 17", set(), {12, 14, 17}),
    ("612", set(), set(AUS)),                        # no FACS code: the cell cannot say which AUs it meant
    ("4+612", {4}, set(AUS) - {4}),
    ("6,12", {6, 12}, set()), ("AU12+AU 4", {4, 12}, set()),  # hand-edited lists
])
def test_per_au_label_masks(cell, present, unknown):
    """Each form makes unknown exactly what it covers; every other AU is known (absent unless coded)."""
    parsed = parse_au_string(cell)
    assert {a for a in AUS if not parsed.known(a)} == unknown
    assert {a for a in AUS if parsed.known(a) and a in parsed.aus} == present


def test_ambiguous_grouping_is_reported_with_what_it_disputes():
    masked = parse_au_string("4+7 or 4+9")
    assert masked.ambiguous == (9,)
    problem, action = next(pa for pa in masked.problems if "without parentheses" in pa[0])
    assert "AU9" in problem and action.startswith("AU9 unknown") and "parentheses" in action
    assert parse_au_string("4+(7 or 9)").ambiguous is None and parse_au_string("L12 or L14").ambiguous is None
    first = parse_au_string("4+7 or 4+9", AURules(alternatives="first"))  # other rules: the tight reading, reported
    assert set(first.aus) == {4, 7, 9} and first.ambiguous == (9,)
    assert any("add parentheses" in a for p, a in first.problems if "without parentheses" in p)


def test_unreadable_au_numbers_are_reported():
    parsed = parse_au_string("612")
    assert parsed.unreadable == ("612",) and not parsed.aus
    assert any("'612'" in p and "fix the cell" in a for p, a in parsed.problems)


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
    assert set(parse_au_string("6 12").aus) == {6, 12}
    assert 612 not in parse_au_string("612").aus  # no FACS code (reported, the clip's labels unknown)
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
    assert {d: DATASET_AUS[d] for d in ("casme2", "samm")} == {"casme2": (1, 2, 4, 7, 12, 14, 15, 17), "samm": (2, 4, 7, 12)}
