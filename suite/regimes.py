"""The selection regimes: what a record's ``selection`` label means, in one table.

Every label a record can carry is declared here once — its names on the page, in a paper table
and in the terminal, the machine-readable statement stored in the record (``chosen_by``), and
whether the leaderboard may rank it (no test subject's labels chose anything). The selection graph
behind each statement is drawn in ``suite.selection``; ``tests/test_regimes.py`` checks every
``--selection``/``--sampler``/``--fidelity`` route against it.
"""
from __future__ import annotations

from dataclasses import dataclass

INNER_EPOCHS = "each fold's inner-validation subjects"
NEVER = "never used"


@dataclass(frozen=True)
class Regime:
    label: str  # stored in records as ``selection``
    title: str  # the page's name for it
    short: str  # a word or two, for a paper table's narrow column (captions spell ``title`` out)
    configuration: str  # who chose the configuration
    epochs_thresholds: str  # who chose epochs and thresholds
    test_labels: str  # what the test subjects' labels did
    ranked: bool  # in the main table: no test subject's labels chose anything
    note: str = ""  # unranked regimes: what makes the figure optimistic (the page's table note)
    terminal: str = ""  # the search summary's name for it, where it is a search's own figure

    @property
    def chosen_by(self) -> dict:
        return {"configuration": self.configuration, "epochs_thresholds": self.epochs_thresholds,
                "test_labels": self.test_labels, "optimistic": not self.ranked}


REGIMES: tuple[Regime, ...] = (
    # ranked, in the order a method's headline row is picked (its strictly nested search first)
    Regime("strict_nested", "strictly nested search", "nested",
           "each fold's own study, told only that fold's inner-validation F1", INNER_EPOCHS, NEVER, True,
           terminal="strictly nested F1"),
    Regime("shared_nested_data_independent", "nested over a shared search (data-independent sampler)", "shared-rand.",
           "one study with a data-independent sampler; per fold the best inner-validation F1 (with --fidelity: among "
           "that fold's own top candidates)", INNER_EPOCHS, NEVER, True, terminal="nested over a shared random search"),
    Regime("inner_validation", "fixed configuration; epochs and thresholds on inner-validation subjects", "inner-val.",
           "fixed (the method's defaults and any --set)", INNER_EPOCHS, NEVER, True),
    Regime("fixed_epochs", "fixed configuration, fixed epochs, threshold 0.5", "fixed",
           "fixed (the method's defaults and any --set)", "fixed (threshold 0.5)", NEVER, True),
    # not ranked, in page order
    Regime("shared_nested", "nested over a shared search (adaptive sampler saw every subject)", "shared",
           "one study told the mean inner-validation F1 over all folds; per fold the best inner-validation F1", INNER_EPOCHS,
           "an adaptive sampler saw every subject as an inner-validation subject of other folds", False,
           note="One Optuna study was told the mean inner-validation F1 over all folds, and every subject is an "
                "inner-validation subject of other folds: its labels shaped the candidates offered to its own fold.",
           terminal="nested over a shared search (optimistic)"),
    Regime("selected_on_test_folds", "selected on test folds among the common candidates (as most papers)", "test-sel.",
           "best pooled test F1 among the common candidates (configurations every fold ran)", INNER_EPOCHS,
           "chose the configuration", False,
           note="One configuration for every fold: the one with the best pooled test F1 among the configurations every "
                "fold ran (the common candidates, e.g. the sampler's start-up proposals) — what a paper that picks its "
                "configuration on the test folds reports."),
    Regime("selected_per_test_fold", "selected on test folds among each fold's candidates", "test-sel.-all",
           "per fold, among every configuration its study ran, the one that maximises the pooled test F1 "
           "(coordinate ascent over folds from the strictly nested choice)", INNER_EPOCHS, "chose each fold's configuration",
           False,
           note="Per fold, among every configuration its study ran (not only the common ones; with two fidelities, every "
                "configuration confirmed at the higher one), the one that maximises the pooled test F1: how far choosing "
                "on the test folds over the whole search lifts the figure."),
    Regime("deployment", "deployment configuration (chosen on all subjects)", "deploy.",
           "best mean inner-validation F1 over all folds among the common candidates", INNER_EPOCHS,
           "every test subject is an inner-validation subject of other folds", False,
           note="The configuration a paper would list (best mean inner-validation F1 over all subjects), re-run with the "
                "final seeds; every test subject helped choose it."),
    Regime("deployment_copy", "a configuration a search chose with every subject's labels, re-run", "deploy.-copy",
           "copied from a search's deployment configuration (chosen on all subjects) or its configuration selected on "
           "the test folds", INNER_EPOCHS,
           "every test subject helped choose the copied configuration", False,
           note="A single run (suite.train --from-search, or a fixed configuration equal, at the printed precision, to a "
                "search's deployment or test-selected configuration on the same data) of a configuration every test "
                "subject's labels helped choose: not an independent fixed configuration."),
)
BY_LABEL = {r.label: r for r in REGIMES}
RANKED = tuple(r.label for r in REGIMES if r.ranked)  # in headline priority order
UNRANKED = tuple(r.label for r in REGIMES if not r.ranked)  # in page order


def regime(label: str) -> Regime:
    if label not in BY_LABEL:
        raise KeyError(f"unknown selection label {label!r}; known: {', '.join(BY_LABEL)}")
    return BY_LABEL[label]


def title(label: str) -> str:
    """The page's name for ``label`` (the label itself for one this version does not know)."""
    return BY_LABEL[label].title if label in BY_LABEL else label


def short(label: str) -> str:
    return BY_LABEL[label].short if label in BY_LABEL else label
