"""The Optuna side of a search: one study per outer fold (strict nesting) or one shared study,
asked and told a round at a time so that what is proposed depends only on round and proposal
numbers — never on how many trials run at once or the order they finish in.

* Each ask uses a sampler seeded from (search seed, proposal number) alone. Fold studies therefore
  share their start-up (random) proposals — the common candidates every fold runs — and after
  start-up each study adapts to its own fold's inner-validation scores only.
* A round's proposals are all asked before any of them runs and told, in proposal order, once
  the whole round has finished.
* The journal is the source of truth on resume: proposals already asked for a round are reused
  (their numbers fix their seeds, so an interrupted search proposes what an uninterrupted one
  would), proposals already told are not told again.
* A sampler learns only from what the journal holds: each ask builds a fresh sampler, so nothing
  it keeps in memory outlives the ask (on resume as without), and what it writes on the drawn
  trial — its system attributes, e.g. CMA-ES's ``cma:generation`` and pickled ``cma:optimizer:<i>``
  — is journalled in the proposal's one record, where the next ask finds it. State a sampler keeps
  on the study itself would need a second record, which a kill could separate from the proposal:
  such samplers are refused (``REFUSED_SAMPLERS``, and at ask time should one write it anyway).
* Every Optuna trial carries its round, proposal, dataset and fold as user attributes; the slice
  outputs ``r<round>-p<proposal>`` name the Tune trial that ran them, so optuna-dashboard, the
  Tune folders and the leaderboard can be matched.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .options import SearchError, SearchOptions


@dataclass(frozen=True)
class Task:
    """One configuration on one outer fold."""

    fold: int
    number: int  # proposal (Optuna trial) number in the fold's study
    params: dict
    role: str = "search"  # search | confirm | deployment

    @property
    def params_key(self) -> str:
        return json.dumps(self.params, sort_keys=True)

    def to_json(self) -> dict:
        return {"fold": self.fold, "number": self.number, "params": self.params, "role": self.role}


@dataclass(frozen=True)
class Slice:
    """The tasks one Tune trial runs: proposal ``proposal`` of round ``round`` on every fold."""

    round: int
    proposal: int
    tasks: tuple[Task, ...] = field(default_factory=tuple)


def derived_seed(seed: int, number: int) -> int:
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


# Optuna samplers that cannot be asked this way, and why (``--sampler`` offers only ``SAMPLERS``;
# these are named so that a search built with one fails before any work with the reason).
REFUSED_SAMPLERS = {
    "qmc": "QMCSampler counts its draws in a study-level system attribute, which cannot be journalled in the "
           "proposal's own record: a search killed between the two records would propose differently on resume",
    "nsgaii": "NSGAIISampler caches its parent population in study-level system attributes (not journalled with the "
              "proposal, so not resume-safe) and is meant for multi-objective studies",
    "nsgaiii": "NSGAIIISampler caches its parent population in study-level system attributes (not journalled with the "
               "proposal, so not resume-safe) and is meant for multi-objective studies",
}


def check_sampler(name: str) -> None:
    """Refuse, before any work, a sampler whose state would not survive this way of asking."""
    from .options import SAMPLERS

    if name in REFUSED_SAMPLERS:
        raise SearchError(f"--sampler {name}: refused: {REFUSED_SAMPLERS[name]}; choose one of {SAMPLERS}")
    if name not in SAMPLERS:
        raise SearchError(f"unknown sampler {name!r}; choose one of {SAMPLERS}")


def make_sampler(name: str, seed: int, startup_trials: int | None = None):
    import optuna

    startup = {} if startup_trials is None else {"n_startup_trials": startup_trials}
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, **startup)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **startup)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, **startup)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise SearchError(f"unknown sampler {name!r}")


def journal_storage(journal: Path):
    """A search's Optuna journal, as everything in the suite opens it: an append-only file whose
    writers take Optuna's symlink lock beside it (``JournalFileSymlinkLock``: a symlink is created
    atomically on NFS too), so processes on several machines may append to one journal on the
    shared folder. In a search only the driver writes it; the dashboard and the page read it."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    return JournalStorage(JournalFileBackend(str(journal), lock_obj=JournalFileSymlinkLock(str(journal))))


class Studies:
    """The studies of one search on one dataset, in one journal file."""

    def __init__(self, journal: Path, prefix: str, dataset: str, folds: list[int], space, opts: SearchOptions):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        journal.parent.mkdir(parents=True, exist_ok=True)
        self.space, self.opts, self.dataset, self.folds = space, opts, dataset, list(folds)
        storage = journal_storage(journal)
        keys = ["shared"] if opts.selection == "shared" else [f"fold{k}" for k in self.folds]
        self.names = {key: f"{prefix}-{key}" for key in keys}
        self.studies = {key: optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
                        for key, name in self.names.items()}

    def _key(self, fold: int) -> str:
        return "shared" if "shared" in self.studies else f"fold{fold}"

    def _round_trials(self, study, r: int) -> list:
        return sorted((t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("round") == r), key=lambda t: t.number)

    def _ask(self, study, key: str, r: int, proposal: int) -> None:
        """Draw the proposal in a scratch in-memory copy of the study, then write it to the journal
        as one record (parameters, round/proposal attributes and the sampler's system attributes
        together): a kill can never leave a half-asked trial whose number would shift every later
        proposal's seed, nor a proposal without the sampler state it was drawn with."""
        import optuna
        from optuna.trial import TrialState, create_trial

        trials = study.get_trials(deepcopy=False)  # their system attributes come along (add_trials copies them)
        sampler = make_sampler(self.opts.sampler, derived_seed(self.opts.seed, len(trials)), self.opts.startup_trials)
        scratch = optuna.create_study(direction="maximize", sampler=sampler)
        scratch.add_trials(trials)
        study_state = dict(scratch._storage.get_study_system_attrs(scratch._study_id))
        drawn = scratch.ask()
        self.space.suggest(drawn)
        if scratch._storage.get_study_system_attrs(scratch._study_id) != study_state:
            raise SearchError(f"--sampler {self.opts.sampler}: it keeps state in study-level system attributes, which "
                              "cannot be journalled with the proposal; a resumed search would not propose the same")
        system_attrs = scratch._storage.get_trial_system_attrs(drawn._trial_id)  # e.g. cma:generation, cma:optimizer:<i>
        attrs = {"round": r, "proposal": proposal, "dataset": self.dataset, "fold": key}
        study.add_trial(create_trial(state=TrialState.RUNNING, params=drawn.params, distributions=drawn.distributions,
                                     user_attrs=attrs, system_attrs=dict(system_attrs)))

    def plan_round(self, r: int, size: int) -> list[Slice]:
        """The round's slices: proposal j of every study. Proposals already in the journal for
        this round are reused; the missing ones are asked now."""
        for key, study in self.studies.items():
            for proposal in range(len(self._round_trials(study, r)), size):
                self._ask(study, key, r, proposal)
        slices = []
        for j in range(size):
            tasks = []
            for fold in self.folds:
                trial = self._round_trials(self.studies[self._key(fold)], r)[j]
                tasks.append(Task(fold, trial.number, dict(trial.params)))
            slices.append(Slice(r, j, tuple(tasks)))
        return slices

    def tell_round(self, r: int, outcomes: dict[tuple[int, int], float | None], tune_trials: dict[int, str | None]) -> None:
        """Tell every unfinished trial of round ``r`` its value, in proposal order: the fold's
        inner F1 (shared: the mean over folds); FAIL when a task failed. ``outcomes``:
        (fold, number) → inner F1 or None (failed); ``tune_trials``: proposal → the Tune trial that
        ran it, kept as a user attribute so optuna-dashboard, Tune's folders and the page match."""
        from optuna.trial import TrialState

        for key, study in self.studies.items():
            for t in self._round_trials(study, r):
                if t.state.is_finished():
                    continue
                if tune_trials.get(t.user_attrs["proposal"]):  # Optuna's storage API: the trial is not held by an ask()
                    study._storage.set_trial_user_attr(t._trial_id, "tune_trial", tune_trials[t.user_attrs["proposal"]])
                folds = self.folds if key == "shared" else [int(key[len("fold"):])]
                values = [outcomes.get((f, t.number)) for f in folds]
                if any(v is None for v in values):
                    study.tell(t.number, state=TrialState.FAIL)
                else:
                    study.tell(t.number, float(np.mean(values)))
