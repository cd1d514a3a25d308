"""OptunaSearch that survives a hard kill of the driver.

Tune's searcher snapshot can lag the Optuna journal: a trial told to Optuna just before a
``kill -9`` is still RUNNING in the restored snapshot, so on resume Tune re-delivers its last
results and Optuna refuses to update a finished trial (``UpdateFinishedTrialError``), failing the
whole search. The journal is the source of truth: results for trials it already holds as finished
are skipped. (``OptunaSearch.on_trial_complete`` already logs and ignores the repeated ``tell``.)
Uses OptunaSearch's private ``_ot_trials``/``_ot_study``; the resume tests cover it.
"""
from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch


class ResumableOptunaSearch(OptunaSearch):
    def _finished_in_journal(self, trial_id: str) -> bool:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return False
        return self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self._finished_in_journal(trial_id):
            return
        super().on_trial_result(trial_id, result)
