"""The AU-string grammar: how a release's coding-sheet 'Action Units' cell becomes AU labels.

The parser implements the rules in ``docs/datasets.md`` (from the CASME II, SAMM and CAS(ME)³ coding
sheets): an AU token reduces to its number (side ``L``/``R``, asymmetry ``A``, lip ``T``/``B`` prefixes
and intensity ``A``-``E`` suffixes are dropped), ``ref(x)`` is selectable, alternatives (``a or b``,
``a/b``) are resolved by a selectable rule, ``?`` makes labels unknown (per AU, by its form) and
free text is reported. Digits of two AUs are never joined: every AU number comes from one run of digits.
Used by the release readers only; the FACS vocabulary itself is ``suite.aus``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

RefRule = Literal["present", "drop"]
AlternativeRule = Literal["mask", "intersection", "union", "first"]
REF_RULES: tuple[str, ...] = ("present", "drop")
ALTERNATIVE_RULES: tuple[str, ...] = ("mask", "intersection", "union", "first")


@dataclass(frozen=True)
class AURules:
    """How ambiguous AU cells are resolved; both are user options (``docs/datasets.md``).

    ``alternatives``: ``mask`` (default) counts the AUs present in every alternative and makes
    the ones they disagree on unknown for the clip (``4D or 4E`` → {4}; ``L12 or L14`` → {},
    AU12 and AU14 unknown); ``intersection`` counts only the agreed AUs and takes the others as
    absent; ``union`` counts every alternative's AUs; ``first`` takes the first alternative as
    written.
    """

    ref: RefRule = "present"
    alternatives: AlternativeRule = "mask"

    def __post_init__(self):
        if self.ref not in REF_RULES:
            raise ValueError(f"unknown ref rule {self.ref!r}; choose one of {REF_RULES}")
        if self.alternatives not in ALTERNATIVE_RULES:
            raise ValueError(
                f"unknown alternatives rule {self.alternatives!r}; choose one of {ALTERNATIVE_RULES}"
            )


@dataclass(frozen=True)
class ParsedAUs:
    aus: frozenset[int]  # AUs coded present
    raw: str
    others_unknown: bool = False  # a '?' operand ('?', '12+?'): every AU not coded present is unknown
    uncertain: frozenset[int] = frozenset()  # AUs whose label is unknown ('14?', alternatives under 'mask')
    alternatives: tuple[str, ...] = ()  # alternative groups resolved by the rule, as written
    refs: tuple[int, ...] = ()  # AUs written as ref(x)
    ignored: tuple[str, ...] = ()  # free text and tokens that are not AUs
    notes: tuple[str, ...] = field(default=())
    unreadable: tuple[str, ...] = ()  # AU numbers no FACS code has ('612': two AUs written without '+'?)
    ambiguous: tuple[int, ...] | None = None  # 'or' beside '+' unparenthesised: the AUs its two groupings disagree on

    def known(self, au: int) -> bool:
        """Whether the cell says if ``au`` is present (masked from loss and metrics otherwise)."""
        return au not in self.uncertain and (au in self.aus or not (self.others_unknown or self.unreadable))

    @property
    def problems(self) -> list[tuple[str, str]]:
        """(problem, action) pairs worth reporting for this cell."""
        out = []
        coded = "+".join(f"AU{a}" for a in sorted(self.aus))
        rest = f"{coded} known present, every other AU unknown for this clip" if coded else "every AU unknown for this clip"
        if self.others_unknown:
            out.append(("AU cell has a '?' operand", f"{rest} (masked from AU detection; kept for emotion recognition)"))
        for token in self.unreadable:
            out.append((f"{token!r} in AU cell is no FACS action unit (FACS numbers have at most two digits: "
                        "two AUs written without '+'?)", f"{rest} (masked from AU detection); fix the cell"))
        if self.ambiguous is not None:
            disputed = ", ".join(f"AU{a}" for a in self.ambiguous)
            grouping = ("'or' beside '+' without parentheses: a choice within one operand or between whole codings? "
                        f"The two readings disagree on {disputed}")
            masked = set(self.ambiguous) <= self.uncertain
            out.append((grouping, f"{disputed} unknown for this clip; add parentheses to the cell to choose" if masked
                        else "read as a choice within one operand; add parentheses to the cell for the other reading"))
        if self.uncertain:
            out.append((f"AU(s) {', '.join(f'AU{a}' for a in sorted(self.uncertain))} uncertain ('?' or disagreeing alternatives)",
                        "unknown for this clip (masked from AU detection loss and metrics)"))
        if not self.aus and not self.others_unknown and not self.raw.strip():
            out.append(("AU cell is empty", "treated as no AU present"))
        for ref in self.refs:
            out.append((f"ref({ref}) in AU cell", "counted as present" if ref in self.aus else "dropped (ref rule 'drop')"))
        for alt in self.alternatives:
            out.append((f"alternative AUs {alt!r}", "resolved by the alternatives rule"))
        for ig in self.ignored:
            out.append((f"text {ig!r} in AU cell is not an AU", "ignored"))
        for note in self.notes:
            out.append((note, "ignored"))
        return out


# One AU token: an optional 'AU' label, optional prefix letters (L, R, A, T, B; 'A/L' style
# alternatives), the AU number, optional intensity letters ('A'..'E', 'A/B' style). The look-ahead
# forbids a digit right after, so digits are never split or joined across tokens.
_AU_TOKEN = re.compile(
    r"(?:AU\s*)?(?P<prefix>(?:[LRATB]/)*[LRATB])?(?P<num>\d+)(?P<intensity>[A-E](?:/[A-E])*)?(?![0-9])",
    re.IGNORECASE,
)
_OR_WORD = re.compile(r"or(?![A-Za-z0-9])", re.IGNORECASE)
_REF_OPEN = re.compile(r"ref\s*\(", re.IGNORECASE)
_JOINERS = "+,;"  # '+' as the sheets write it; ',' and ';' as a hand-edited list would
_MAX_FACS = 99  # FACS codes have at most two digits


def cell_to_text(cell) -> str:
    """A spreadsheet cell as text: numbers as integers where whole (12.0 → '12'), NaN → ''."""
    if cell is None:
        return ""
    if isinstance(cell, bool):
        return str(cell)
    if isinstance(cell, float):
        if math.isnan(cell):
            return ""
        if cell.is_integer():
            return str(int(cell))
    return str(cell)


class _Parser:
    """Recursive-descent parser of one cell, under one of two groupings of the word 'or':

    * tight (``loose_or=False``): expr := alt (('+'|','|';') alt)*; alt := atom (('or'|'/') atom)*
      — ``4+L12 or L14`` is 4 + (L12 or L14);
    * loose (``loose_or=True``): expr := conj ('or' conj)*; conj := alt (('+'|','|';') alt)*;
      alt := atom ('/' atom)* — ``4+7 or 4+9`` is (4+7) or (4+9).

    atom := AU | 'ref(' expr ')' | '(' expr ')' | '?' | free text. Operands without AU information
    (free text) are None and drop out of choices. The sheets never say which grouping they mean;
    ``parse_au_string`` parses both and treats a disagreement like disagreeing alternatives."""

    def __init__(self, text: str, rules: AURules, loose_or: bool):
        self.s = text
        self.i = 0
        self.rules = rules
        self.loose_or = loose_or
        self.others_unknown = False
        self.uncertain: set[int] = set()
        self.alternatives: list[str] = []
        self.refs: list[int] = []
        self.ignored: list[str] = []
        self.notes: list[str] = []
        self.unreadable: list[str] = []

    def _skip_ws(self):
        while self.i < len(self.s) and self.s[self.i].isspace():
            self.i += 1

    def _peek(self) -> str:
        self._skip_ws()
        return self.s[self.i] if self.i < len(self.s) else ""

    def parse(self) -> frozenset[int]:
        result: set[int] = set()
        while self.i < len(self.s):
            result |= self._expr(in_ref=False) or set()
            if self._peek() == ")":  # unbalanced closing parenthesis at top level
                self.notes.append("unbalanced ')' in AU cell")
                self.i += 1
        return frozenset(result)

    def _expr(self, in_ref: bool) -> set[int] | None:
        if not self.loose_or:
            return self._conj(in_ref)
        start = self.i
        options = [self._conj(in_ref)]
        while self._peek() and _OR_WORD.match(self.s, self.i):
            self.i += 2
            options.append(self._conj(in_ref))
        return self._choose(options, start)

    def _conj(self, in_ref: bool) -> set[int] | None:
        parts = [self._alt(in_ref)]
        while self._peek() and self._peek() in _JOINERS:
            self.i += 1
            parts.append(self._alt(in_ref))
        parts = [p for p in parts if p is not None]
        return set().union(*parts) if parts else None

    def _at_alternative(self) -> bool:
        """'/' always offers alternatives for one operand; the word 'or' only under the tight grouping."""
        c = self._peek()
        return c == "/" or (not self.loose_or and bool(c) and bool(_OR_WORD.match(self.s, self.i)))

    def _alt(self, in_ref: bool) -> set[int] | None:
        start = self.i
        options = [self._atom(in_ref)]
        while self._at_alternative():
            self.i += 1 if self.s[self.i] == "/" else 2
            options.append(self._atom(in_ref))
        return self._choose(options, start)

    def _choose(self, options: list[set[int] | None], start: int) -> set[int] | None:
        """Resolve alternatives by the rule; operands without AU information drop out."""
        options = [o for o in options if o is not None]
        if len(options) <= 1:
            return options[0] if options else None
        self.alternatives.append(self.s[start:self.i].strip())
        if self.rules.alternatives == "union":
            return set().union(*options)
        if self.rules.alternatives == "first":
            return options[0]
        agreed = set.intersection(*options)
        if self.rules.alternatives == "mask":
            self.uncertain |= set().union(*options) - agreed
        return agreed

    def _atom(self, in_ref: bool) -> set[int] | None:
        """One operand; None when it carries no AU information (free text, nothing)."""
        c = self._peek()
        if not c or c in "/)" or c in _JOINERS:
            return None
        if c == "?":
            self.i += 1
            self.others_unknown = True
            return None
        ref = _REF_OPEN.match(self.s, self.i)
        if ref:
            self.i = ref.end()
            inner = self._expr(in_ref=True) or set()
            self._close()
            self.refs.extend(sorted(inner))
            return inner if self.rules.ref == "present" else set()
        if c == "(":
            self.i += 1
            inner = self._expr(in_ref)
            self._close()
            return inner
        tok = _AU_TOKEN.match(self.s, self.i)
        if tok and not _glued_to_letters(self.s, tok):
            self.i = tok.end()
            number = int(tok.group("num"))
            if number > _MAX_FACS:  # no such AU: the cell cannot say what it meant
                self.unreadable.append(tok.group(0))
                return None
            if self.s.startswith("?", self.i):  # '14?': this AU's label is unknown
                self.i += 1
                self.uncertain.add(number)
                return set()
            return {number}
        return self._free_text()

    def _close(self):
        if self._peek() == ")":
            self.i += 1
        else:
            self.notes.append("missing ')' in AU cell")

    def _free_text(self) -> None:
        """Consume a run of words up to the next operator; report it as ignored text.

        Digits inside free text are swallowed with it so that e.g. 'x612' is never read as AU 612
        and two digit runs are never joined."""
        start = self.i
        while self.i < len(self.s):
            ch = self.s[self.i]
            if ch in "/()?" or ch in _JOINERS:
                break
            if ch.isspace():
                j = self.i
                while j < len(self.s) and self.s[j].isspace():
                    j += 1
                if j >= len(self.s) or _OR_WORD.match(self.s, j) or _AU_TOKEN.match(self.s, j):
                    break
            self.i += 1
        if self.i == start:  # cannot happen for valid input; guarantees progress
            self.i += 1
        text = self.s[start:self.i].strip()
        if text:
            self.ignored.append(text)
        return None


def _glued_to_letters(s: str, tok: re.Match) -> bool:
    """True when an AU-looking match is really part of a word (e.g. 'focus2x', 'ab12')."""
    end = tok.end()
    return end < len(s) and (s[end].isalpha() or s[end] == "_")


def parse_au_string(cell, rules: AURules = AURules()) -> ParsedAUs:
    """Parse one 'Action Units' cell. Never raises; anything odd is reported on the result.

    The cell is parsed under both groupings of 'or' (``_Parser``). Where they give different
    labels (only possible with 'or' beside '+' and no parentheses), the ``mask`` rule treats the
    two readings like two alternatives — present what both call present, unknown what they
    disagree on — and the other rules take the tight reading; either way it is reported. An AU
    coded present outside an alternative or '?' stays present (``4+(4 or 7)`` → AU4)."""
    text = cell_to_text(cell)
    tight, loose = _Parser(text, rules, loose_or=False), _Parser(text, rules, loose_or=True)
    try:
        aus, aus_loose = tight.parse(), loose.parse()
    except RecursionError:  # pathological nesting; report instead of crashing
        return ParsedAUs(frozenset(), text, notes=("AU cell nested too deeply to parse",))
    uncertain, ambiguous = set(tight.uncertain), None
    disputed = (aus ^ aus_loose) | ((tight.uncertain ^ loose.uncertain) - (aus & aus_loose))
    if disputed:
        ambiguous = tuple(sorted(disputed))
        if rules.alternatives == "mask":
            aus = aus & aus_loose
            uncertain |= loose.uncertain | disputed
    return ParsedAUs(
        aus=aus,
        raw=text,
        others_unknown=tight.others_unknown,
        uncertain=frozenset(uncertain - aus),
        alternatives=tuple(tight.alternatives),
        refs=tuple(tight.refs),
        ignored=tuple(tight.ignored),
        notes=tuple(tight.notes),
        unreadable=tuple(tight.unreadable),
        ambiguous=ambiguous,
    )
