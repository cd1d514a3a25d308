"""Strict nesting in-process (the search driver with slices run here instead of in Ray Tune) on
the default (fold-batched) engine, with a space that varies every kind of parameter — a per-model
one (``lambda_gd``: a buffer), an architecture one (``gda_layers``: another batch group) and an
encode one (``token_layer``: other features) — dropout on, and a TPE sampler past start-up: fold
k's proposals, the values its study was told, its choice and its test predictions never see
subject k's labels, although the other folds' proposals (fold k's batch company) do; the values a
shared study is told do."""
import json
from pathlib import Path

import pytest
import torch

from suite.data import load_cache, prepare
from suite.engine import DatasetTensors
from suite.evaluation import Evaluation
from suite.search.driver import DatasetSearch
from suite.search.options import SearchOptions
from suite.search.trial import in_process_executor
from suite.spaces import load_space

SPACE = "method: micro_au_clip\nparams:\n  lambda_gd: {float: [0.01, 1.0], log: true}\n  gda_layers: {int: [1, 2]}\n" \
        "  token_layer: {categorical: [-1, -2]}\nfixed: {epochs: 2, batch_size: 8, dropout: 0.2}\n"


def _search(synthetic, tmp_path, selection, flip_subject=None, sampler="tpe"):
    space_path = tmp_path / "tiny.yaml"
    space_path.write_text(SPACE)
    space = load_space(str(space_path))
    results = tmp_path / f"results-{selection}-{flip_subject}"
    opts = SearchOptions(space=str(space_path), trials=6, round_size=1, startup_trials=2, selection=selection, sampler=sampler,
                         final_seeds=0, baselines=(), name="inv", results=results)
    cache = prepare("casme2", synthetic / "CASME2", results)
    data = DatasetTensors.from_cache(load_cache(cache.path)[0], (1, 2, 4, 7, 12, 14, 15, 17), torch.device("cpu"), cache.fingerprint)
    if flip_subject is not None:
        rows = data.subject == flip_subject
        data.labels[rows] = 1 - data.labels[rows]
    search = DatasetSearch(space, Evaluation("loso", ("casme2",)), {"casme2": synthetic / "CASME2"}, {"casme2": cache}, None, opts, results,
                           results / "searches" / "inv", in_process_executor(data))
    search.data = data  # selection reads the same (altered) labels
    summary = search.run(lambda jobs: lambda: [])()
    tasks = [t for p in sorted((results / "searches" / "inv" / "casme2" / "rounds").glob("*.json"))
             for t in json.loads(p.read_text())["tasks"]]
    return summary, tasks, search


@pytest.mark.slow
def test_fold_k_never_sees_subject_k_but_a_shared_study_does(synthetic, tmp_path):
    summary, tasks, search = _search(synthetic, tmp_path, "strict")
    from suite.protocol import loso_folds

    folds = loso_folds(search.data.subject, 0.25, 0)
    # a subject that is an inner-validation subject of another fold: its labels reach that fold's study
    k, other = next((f.index, g.index) for f in folds for g in folds
                    if g.index != f.index and f.test_subject in set(search.data.subject[g.inner_val]))
    flipped_summary, flipped_tasks, _ = _search(synthetic, tmp_path, "strict", folds[k].test_subject)

    def proposals(ts, fold):
        return [(t["number"], t["params"]) for t in ts if t["fold"] == fold]

    assert {t["engine"] for t in tasks} == {"batched"}
    # past start-up the folds propose apart, and the flip moves some other fold's proposals: fold k's
    # batch company (architectures, features) differs between the two searches
    assert len({json.dumps(p) for t in tasks for num, p in [(t["number"], t["params"])] if num >= 2}) > 1
    assert any(proposals(tasks, f) != proposals(flipped_tasks, f) for f in range(len(folds)) if f != k)
    assert proposals(tasks, k) == proposals(flipped_tasks, k)
    assert summary["chosen"][str(k)] == flipped_summary["chosen"][str(k)]
    mine = [t for t in tasks if t["fold"] == k]
    theirs = [t for t in flipped_tasks if t["fold"] == k]
    for a, b in zip(mine, theirs, strict=True):  # each task's numbers: its own, whatever shares its batch
        assert (a["inner_f1"], a["epochs"], a["threshold"]) == (b["inner_f1"], b["epochs"], b["threshold"])
        assert a["test_prob"] == b["test_prob"]
    assert [t["inner_f1"] for t in tasks if t["fold"] == other] != [t["inner_f1"] for t in flipped_tasks if t["fold"] == other]
    # start-up proposals (numbers 0, 1) coincide across folds; afterwards each fold adapts on its own
    for n in (0, 1):
        assert len({json.dumps(p) for t in tasks for num, p in [(t["number"], t["params"])] if num == n}) == 1

    # what a sampler learns from is what it was told: fold k's own study was told the same values
    # whatever subject k's labels say; the shared study, which proposes fold k's candidates, was not
    assert _told(tmp_path, "strict", None, f"fold{k}") == _told(tmp_path, "strict", folds[k].test_subject, f"fold{k}")
    shared, shared_tasks, _ = _search(synthetic, tmp_path, "shared")
    shared_flipped, shared_flipped_tasks, _ = _search(synthetic, tmp_path, "shared", folds[k].test_subject)
    assert _told(tmp_path, "shared", None, "shared") != _told(tmp_path, "shared", folds[k].test_subject, "shared")
    assert shared["selection"] == "shared_nested" and summary["selection"] == "strict_nested"


def _told(tmp_path: Path, selection: str, flip_subject, key: str) -> list[float]:
    """The values one study of a finished in-process search was told, in trial order."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / f"results-{selection}-{flip_subject}" / "searches" / "inv" / "optuna.journal"
    study = optuna.load_study(study_name=f"inv-casme2-{key}", storage=JournalStorage(JournalFileBackend(str(journal))))
    return [t.value for t in study.trials]


def _plan(journal: Path, space, opts, interrupt: bool = False):
    from suite.search.studies import Studies

    studies = Studies(journal, "repro-casme2", "casme2", [0, 1, 2], space, opts)
    first = studies.plan_round(0, 2)
    studies.tell_round(0, {(t.fold, t.number): float(t.number % 2 == t.fold % 2) for s in first for t in s.tasks}, {0: "t0", 1: None})
    if interrupt:  # killed while asking round 1: fold 0 has its proposals, the other folds none
        studies._ask(studies.studies["fold0"], "fold0", 1, 0)
        studies._ask(studies.studies["fold0"], "fold0", 1, 1)
        studies = Studies(journal, "repro-casme2", "casme2", [0, 1, 2], space, opts)  # the resumed driver
    return first + studies.plan_round(1, 2), studies


def test_a_search_killed_while_asking_proposes_what_an_uninterrupted_one_would(tmp_path):
    """Proposals are drawn from (seed, proposal number) and written in one journal record each, so
    a resumed ask reuses what the journal holds and draws the rest exactly as before."""
    space_path = tmp_path / "tiny.yaml"
    space_path.write_text(SPACE)
    space = load_space(str(space_path))
    opts = SearchOptions(space=str(space_path), trials=4, round_size=2, startup_trials=2, sampler="tpe", name="repro")
    plain, _ = _plan(tmp_path / "plain.log", space, opts)
    resumed, studies = _plan(tmp_path / "resumed.log", space, opts, interrupt=True)
    assert plain == resumed
    assert len({t.params_key for s in plain[2:] for t in s.tasks}) > 2  # past start-up the folds' studies diverge
    assert all([t.number for t in study.trials] == [0, 1, 2, 3] for study in studies.studies.values())
    assert all([t.user_attrs.get("tune_trial") for t in study.trials[:2]] == ["t0", None] for study in studies.studies.values())
