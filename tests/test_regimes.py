"""Every --selection/--sampler/--fidelity combination's record label is earned: a ranked label
(``regimes.RANKED``) says no test subject's labels chose anything, and that holds
in the selection graph; the confirmation stage of a two-fidelity search ranks each fold's set by
that fold's own inner F1 only."""
import itertools
import json
from pathlib import Path

import pytest

from suite.search.driver import DatasetSearch
from suite.search.options import DATA_INDEPENDENT_SAMPLERS, SAMPLERS, SELECTIONS, SearchOptions
from suite.regimes import RANKED, REGIMES, regime


def _test_labels_choose(selection: str, sampler: str) -> bool:
    """The selection graph (suite/selection.py's docstring): under strict nesting fold k's study is
    told V_k only; a shared study is told the mean over folds, whose V_j hold subject k — which
    moves its proposals unless the sampler ignores what it is told."""
    return selection == "shared" and sampler not in DATA_INDEPENDENT_SAMPLERS


@pytest.mark.parametrize("selection,sampler,fidelity", list(itertools.product(SELECTIONS, SAMPLERS, (None, "frozen:full"))))
def test_every_combination_is_labelled_by_whose_labels_chose(selection, sampler, fidelity):
    label = SearchOptions(space="gsd", selection=selection, sampler=sampler, fidelity=fidelity).selection_label
    chosen_by = regime(label).chosen_by
    chose = _test_labels_choose(selection, sampler)
    assert (label in RANKED) == (not chose)
    assert (chosen_by["test_labels"] == "never used") == (not chose)
    assert chosen_by["optimistic"] == chose


def _docs(inner: dict[tuple[int, int], float]) -> list[dict]:
    """Slice outputs with the given inner F1 per (fold, proposal); one configuration per proposal."""
    by_number: dict[int, list[dict]] = {}
    for (fold, number), f1 in sorted(inner.items()):
        by_number.setdefault(number, []).append({"fold": fold, "number": number, "params": {"lr": 0.001 * (number + 1)},
                                                 "role": "search", "status": "ok", "inner_f1": f1, "epochs": 1,
                                                 "threshold": [0.5], "test_ids": [], "test_prob": []})
    return [{"tasks": tasks} for tasks in by_number.values()]


@pytest.mark.parametrize("selection", SELECTIONS)
def test_a_folds_confirmation_set_is_chosen_by_its_own_inner_f1(selection):
    """Fold 0's own inner F1 ranks proposal 2 first and 0 second; the mean over folds (where
    subject 0 is an inner-validation subject of folds 1 and 2) ranks 0 and 1 first. Fold 0's
    confirmed set follows its own ranking, and changing only the other folds' values changes
    nothing of it."""
    def confirmed(inner):
        search = object.__new__(DatasetSearch)
        search.opts = SearchOptions(space="gsd", selection=selection, sampler="random", fidelity="frozen:full", confirm_top=2)
        search.folds, search.index_of, search.fidelity, search.prefix = [0, 1, 2], {}, ("frozen", "full"), "t"
        search.out = Path("/nonexistent")
        search.context = lambda out, backbone: None
        seen = {}

        def execute(slices, ctx, name):
            for s in slices:
                seen[s.proposal] = [(t.fold, t.number, t.role) for t in s.tasks]
            return {s.proposal: {"tasks": []} for s in slices}
        search.execute = execute
        search.confirm(_docs(inner))
        return sorted((n, r) for tasks in seen.values() for f, n, r in tasks if f == 0 and r == "confirm")

    inner = {(0, 0): 0.30, (0, 1): 0.10, (0, 2): 0.50, (1, 0): 0.90, (1, 1): 0.80, (1, 2): 0.10,
             (2, 0): 0.90, (2, 1): 0.80, (2, 2): 0.10}
    assert confirmed(inner) == [(0, "confirm"), (2, "confirm")]
    others_moved = {**inner, (1, 2): 0.99, (2, 2): 0.99, (1, 0): 0.0, (2, 0): 0.0}
    assert confirmed(others_moved) == confirmed(inner)
    assert json.dumps(regime("shared_nested_data_independent").chosen_by).count("never used") == 1


def test_every_regime_is_ranked_exactly_when_no_test_labels_chose():
    """The table's own consistency: a ranked regime's statement says test labels were never used,
    an unranked one says what they did; every unranked regime has the note its page table shows."""
    for r in REGIMES:
        assert r.ranked == (r.test_labels == "never used") == (not r.chosen_by["optimistic"])
        assert r.ranked or r.note
    with pytest.raises(KeyError, match="unknown selection label"):
        regime("nested")
