"""`suite.search` end to end (Ray Tune + Optuna on CPU): per-fold studies, the strictly nested F1
and every inner score recomputed from stored files, identical figures at another concurrency and
after kill -9, failing tasks, pre-flight errors, the cluster configs, and a two-node local Ray
cluster. Ray runs with its default token authentication."""
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from suite.metrics import f1_per_au
from suite.search import main as search_main
from suite.selection import crossfit_inner_f1, pick

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
pytestmark = pytest.mark.slow


def _space(tmp_path, text, name="tiny"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


TINY = "method: micro_au_clip\nparams:\n  lambda_gd: {float: [0.01, 1.0], log: true}\n  tau_gd: {float: [0.1, 3.0], log: true}\n" \
       "  lr: {float: [0.0005, 0.01], log: true}\nfixed: {epochs: 3, batch_size: 8, inner_val_fraction: 0.67}\n"


def _argv(args) -> list[str]:
    """``python -m suite.search ARGS``, on CASME II only unless the test names datasets."""
    args = [str(a) for a in args]
    return [sys.executable, "-m", "suite.search", *([] if "--datasets" in args else ["--datasets", "casme2"]), *args]


def _search(args, timeout=600, **kw):
    return subprocess.run(_argv(args), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout, **kw)


def _studies(results: Path, name: str, dataset: str = "casme2"):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(results / "searches" / name / "optuna.journal")))
    return {n: optuna.load_study(study_name=n, storage=storage) for n in optuna.get_all_study_names(storage)
            if n.startswith(f"{name}-{dataset}-")}


def _tasks(results: Path, name: str, stage="rounds", dataset="casme2"):
    return [t for p in sorted((results / "searches" / name / dataset / stage).glob("*.json"))
            for t in json.loads(p.read_text())["tasks"]]


def _truth(synthetic, results):
    """Labels, per-AU known masks and subjects by sample id, read from the dataset cache."""
    from suite.data import load_cache, prepare

    arrays = load_cache(prepare("casme2", synthetic / "CASME2", results).path)[0]
    aus = (1, 2, 4, 7, 12, 14, 15, 17)
    labels = {str(s): np.array([a in set(row) for a in aus], int) for s, row in zip(arrays["sample_id"], arrays["aus"])}
    known = {str(s): np.array([a not in set(row) for a in aus]) for s, row in zip(arrays["sample_id"], arrays["aus_unknown"])}
    subject = dict(zip(map(str, arrays["sample_id"]), arrays["subject"]))
    return labels, known, subject


def _figures(results: Path, name: str) -> dict:
    summary = json.loads((results / "searches" / name / "summary.json").read_text())
    [ds] = summary["datasets"]
    return {"chosen": ds["chosen"], "headline": ds["headline_f1"], "test": ds["selected_on_test_folds_f1"],
            "deployment": ds["deployment"]["params"], "tasks": sorted((t["fold"], t["number"], json.dumps(t["params"], sort_keys=True),
                                                                     t.get("inner_f1")) for t in _tasks(results, name))}


def test_strict_search_end_to_end_recomputes_from_files(synthetic, tmp_path):
    results = tmp_path / "results"
    proc = _search(["--space", _space(tmp_path, TINY), "--data-root", synthetic / "CASME2", "--trials", 3, "--round-size", 2,
                    "--startup-trials", 2, "--sampler", "gp", "--final-seeds", 2, "--results", results, "--name", "e2e",
                    "--baselines", "constant"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "strictly nested F1 (headline)" in proc.stdout
    studies = _studies(results, "e2e")
    assert sorted(studies) == [f"e2e-casme2-fold{k}" for k in range(4)]
    tasks = _tasks(results, "e2e")
    assert len(tasks) == 12 and all(t["status"] == "ok" for t in tasks)
    labels, known, subject = _truth(synthetic, results)
    out = results / "searches" / "e2e" / "casme2" / "rounds"
    probs = pd.concat([pd.read_parquet(p) for p in sorted(out.glob("*.inner.parquet"))])
    prob_cols = [c for c in probs.columns if c.startswith("prob_")]
    for k, study in enumerate(sorted(studies)):
        trials = studies[study].trials
        assert [t.state.name for t in trials] == ["COMPLETE"] * 3
        assert {t.user_attrs["fold"] for t in trials} == {f"fold{k}"} and [t.user_attrs["round"] for t in trials] == [0, 0, 1]
        # each fold's study was told only that fold's (cross-fitted) inner-validation F1 ...
        mine = {t["number"]: t for t in tasks if t["fold"] == k}
        assert [round(t.value, 9) for t in trials] == [round(mine[t.number]["inner_f1"], 9) for t in trials]
        for number, task in mine.items():
            # ... which recomputes, with the epoch and thresholds, from the stored probabilities alone
            rows = probs[(probs["fold"] == k) & (probs["number"] == number)]
            epochs = sorted(rows["epoch"].unique())
            ids = task["inner_val_ids"]
            stack = np.stack([rows[rows["epoch"] == e].set_index("sample_id").loc[ids, prob_cols].to_numpy() for e in epochs])
            y, m = np.stack([labels[s] for s in ids]), np.stack([known[s] for s in ids])
            assert len({subject[s] for s in ids}) == 2
            assert crossfit_inner_f1(y, stack, np.array([subject[s] for s in ids]), "binary", m) == pytest.approx(task["inner_f1"], abs=1e-9)
            e, thr = pick(y, stack, "binary", m)
            assert epochs[e] == task["epochs"] and np.allclose(thr, task["threshold"])
    # start-up proposals are shared by every fold (the common candidates)
    for n in (0, 1):
        assert len({json.dumps(t["params"], sort_keys=True) for t in tasks if t["number"] == n}) == 1
    # the strictly nested F1: per fold the best inner F1 of its own study (ties: lowest proposal), pooled
    chosen = {k: max((t for t in tasks if t["fold"] == k), key=lambda t: (t["inner_f1"], -t["number"])) for k in range(4)}
    rows = [(np.array(p) >= np.array(c["threshold"]), labels[s], known[s]) for c in chosen.values()
            for s, p in zip(c["test_ids"], c["test_prob"])]
    expected = float(f1_per_au(*(np.array(x) for x in [[r[1] for r in rows], [r[0] for r in rows]]), "binary",
                               np.array([r[2] for r in rows])).mean())
    [ds] = json.loads((results / "searches" / "e2e" / "summary.json").read_text())["datasets"]
    record = json.loads(Path(ds["records"]["strict_nested"]).read_text())
    assert record["f1_avg"] == pytest.approx(expected) and ds["headline_f1"] == pytest.approx(expected)
    assert record["selection"] == "strict_nested" and record["schema"] == 2 and record["chosen_by"]["test_labels"] == "never used"
    assert json.loads((results / "searches" / "e2e" / "data.json").read_text()) == {"casme2": record["data_fingerprint"]}
    assert {int(f): c["number"] for f, c in record["chosen"].items()} == {k: c["number"] for k, c in chosen.items()}
    # final seeds differ from the search seed; baselines use the same seeds and inner selection
    finals = [json.loads(Path(p).read_text()) for p in ds["records"]["final"]]
    assert [r["seed"] for r in finals] == [1, 2] and {r["selection"] for r in finals} == {"strict_nested"}
    deploys = [json.loads(Path(p).read_text()) for p in ds["records"]["deployment"]]
    assert [r["seed"] for r in deploys] == [1, 2] and {r["selection"] for r in deploys} == {"deployment"}
    assert deploys[0]["chosen_by"]["optimistic"] is True
    base = [json.loads(Path(p).read_text()) for p in ds["records"]["baselines"]["constant"]]
    assert sorted(r["seed"] for r in base) == [1, 2] and {r["selection"] for r in base} == {"inner_validation"}
    # selected on test folds: the common candidate with the best pooled test F1
    def pooled(number):
        rows = [(np.array(p) >= np.array(t["threshold"]), labels[s], known[s]) for t in tasks if t["number"] == number
                for s, p in zip(t["test_ids"], t["test_prob"])]
        return float(f1_per_au(np.array([r[1] for r in rows]), np.array([r[0] for r in rows]), "binary",
                               np.array([r[2] for r in rows])).mean())

    test_sel = json.loads(Path(ds["records"]["selected_on_test_folds"]).read_text())
    assert test_sel["selection"] == "selected_on_test_folds" and test_sel["f1_avg"] == pytest.approx(max(pooled(0), pooled(1)))
    # rerunning the finished search prints its stored summary and keeps it (wall time included); --rerun
    # goes through the search again over the stored outputs, retrains nothing and reports the same figures
    args = ["--space", _space(tmp_path, TINY), "--data-root", synthetic / "CASME2", "--trials", 3, "--round-size", 2,
            "--startup-trials", 2, "--sampler", "gp", "--final-seeds", 2, "--results", results, "--name", "e2e", "--baselines", "constant"]
    stored = (results / "searches" / "e2e" / "summary.json").read_text()
    mtimes = {p: Path(p).stat().st_mtime for p in ds["records"]["final"]}
    again = _search(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing was rerun" in again.stdout and (results / "searches" / "e2e" / "summary.txt").read_text().strip() in again.stdout
    assert (results / "searches" / "e2e" / "summary.json").read_text() == stored
    again = _search([*args, "--rerun"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: Path(p).stat().st_mtime for p in ds["records"]["final"]} == mtimes
    assert json.loads((results / "searches" / "e2e" / "summary.json").read_text())["datasets"][0]["headline_f1"] == ds["headline_f1"]


def test_same_figures_at_another_concurrency_and_after_kill_9(synthetic, tmp_path):
    """Past the sampler's start-up: concurrency 1, and concurrency 2 killed mid-search and
    resumed, give identical proposals, choices and F1 figures."""
    space = _space(tmp_path, TINY.replace("epochs: 3", "epochs: 2"))
    common = ["--space", space, "--data-root", synthetic / "CASME2", "--trials", 4, "--round-size", 2, "--startup-trials", 2,
              "--sampler", "tpe", "--final-seeds", 0, "--baselines", "", "--name", "repro"]
    one = tmp_path / "one"
    proc = _search([*common, "--concurrency", 1, "--results", one])
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = tmp_path / "two"
    args = [*common, "--concurrency", 2, "--results", two]
    killed = subprocess.Popen(_argv(args), cwd=ROOT, env=ENV, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rounds = two / "searches" / "repro" / "casme2" / "rounds"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(rounds.glob("r000-*.json"))) < 2:
        time.sleep(0.3)
    os.killpg(killed.pid, signal.SIGKILL)  # the driver and the local Ray cluster it started
    killed.wait()
    assert not (two / "searches" / "repro" / "summary.json").exists()
    assert len(list(rounds.glob("*.json"))) < 4
    again = _search(args)
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = _figures(one, "repro"), _figures(two, "repro")
    assert a == b
    assert {t["engine"] for t in _tasks(two, "repro")} == {"batched"}  # the default engine on frozen tokens
    assert len(a["tasks"]) == 16 and len({(f, n) for f, n, _, _ in a["tasks"] if n >= 2}) == 8
    for study in _studies(two, "repro").values():
        assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4


def test_kill_9_between_two_task_writes_of_a_slice_resumes_to_the_same_figures(synthetic, tmp_path):
    """A slice past start-up (each fold its own proposal: several architectures and features in one
    batch, dropout on) loses its process after 3 of its tasks were written; the search is then
    killed and resumed, and the slice's other tasks train as a smaller batch. Every figure and
    every task's test probabilities equal an uninterrupted run's at another concurrency."""
    text = "method: micro_au_clip\nparams:\n  lambda_gd: {float: [0.01, 1.0], log: true}\n  gda_layers: {int: [1, 2]}\n" \
           "  token_layer: {categorical: [-1, -2]}\nfixed: {epochs: 2, batch_size: 8, dropout: 0.2, inner_val_fraction: 0.67}\n"
    common = ["--space", _space(tmp_path, text), "--data-root", synthetic / "CASME2", "--trials", 4, "--round-size", 2,
              "--startup-trials", 2, "--sampler", "tpe", "--final-seeds", 0, "--baselines", "", "--name", "cut"]
    one = tmp_path / "one"
    proc = _search([*common, "--concurrency", 1, "--results", one])
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = tmp_path / "two"
    args = [*common, "--concurrency", 2, "--results", two]
    killed = subprocess.Popen(_argv(args), cwd=ROOT, env={**ENV, "SUITE_KILL_AFTER": "r001-*:3"}, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = two / "searches" / "cut" / "casme2" / "rounds" / "partial"
    deadline = time.time() + 300
    while time.time() < deadline and not list(partial.glob("*.killed")):
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    [marker] = list(partial.glob("*.killed"))[:1]
    cut = marker.with_suffix(".json")
    assert len(json.loads(cut.read_text())) == 3 and not (cut.parent.parent / cut.name).exists()  # 3 tasks of the slice, no slice file
    again = _search(args)
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = _figures(one, "cut"), _figures(two, "cut")
    assert a == b
    outputs = lambda results: sorted((t["fold"], t["number"], t["epochs"], t["threshold"], t["test_prob"])  # noqa: E731
                                     for t in _tasks(results, "cut"))
    assert outputs(one) == outputs(two)
    assert {t["engine"] for t in _tasks(two, "cut")} == {"batched"}
    assert len({t["params"]["gda_layers"] for t in _tasks(two, "cut") if t["number"] >= 2}) == 2  # mixed architectures past start-up


def test_ctrl_c_exits_130_and_resumes(synthetic, tmp_path):
    results = tmp_path / "results"
    args = ["--space", _space(tmp_path, TINY), "--data-root", synthetic / "CASME2", "--trials", 4, "--round-size", 2,
            "--concurrency", 1, "--final-seeds", 0, "--baselines", "", "--results", results, "--name", "resume"]
    proc = subprocess.Popen(_argv(args), cwd=ROOT, env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rounds = results / "searches" / "resume" / "casme2" / "rounds"
    deadline = time.time() + 300
    while time.time() < deadline and not list(rounds.glob("*.json")):
        time.sleep(0.3)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)  # the driver only, as a terminal's Ctrl-C would
    _, err = proc.communicate(timeout=180)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything of its own Ray cluster still alive
    except ProcessLookupError:
        pass
    assert proc.returncode == 130 and "rerun the same command to resume" in err
    again = _search(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(_tasks(results, "resume")) == 16


def test_frozen_search_then_fine_tuned_confirmation(synthetic, tmp_path):
    """--fidelity frozen:full: every search task reads one shared token-cache entry; per fold its
    own best configurations are re-run fine-tuned, and selection uses those only."""
    results = tmp_path / "results"
    proc = _search(["--space", _space(tmp_path, TINY.replace("epochs: 3", "epochs: 2")), "--data-root", synthetic / "CASME2",
                    "--trials", 3, "--round-size", 3, "--fidelity", "frozen:full", "--confirm-top", 2, "--final-seeds", 1,
                    "--baselines", "", "--results", results])
    assert proc.returncode == 0, proc.stderr[-3000:]
    name = "tiny-frozen-to-full"
    screened, confirmed = _tasks(results, name), _tasks(results, name, "confirm")
    assert len(screened) == 12 and {t["hparams"]["backbone_mode"] for t in screened} == {"frozen"}
    assert {t["hparams"]["backbone_mode"] for t in confirmed} == {"full"}
    assert len(list((results / "cache" / "tokens").glob("*.pt"))) == 1  # computed once, read by the other tasks
    for k in range(4):
        own = sorted((t for t in screened if t["fold"] == k), key=lambda t: (-t["inner_f1"], t["number"]))[:2]
        assert sorted(t["number"] for t in confirmed if t["fold"] == k and t["role"] == "confirm") == sorted(t["number"] for t in own)
    assert {t["fold"] for t in confirmed if t["role"] == "deployment"} == {0, 1, 2, 3}
    [ds] = json.loads((results / "searches" / name / "summary.json").read_text())["datasets"]
    for fold, c in ds["chosen"].items():
        assert c["number"] in {t["number"] for t in confirmed if t["fold"] == int(fold) and t["role"] == "confirm"}
    [final] = ds["records"]["final"]
    record = json.loads(Path(final).read_text())
    assert record["seed"] == 1 and "full" in json.dumps(record["hparams"])
    assert all(len(s.trials) == 3 for s in _studies(results, name).values())  # Optuna saw the search stage only


def test_baselines_searched_under_the_same_strict_nesting(synthetic, tmp_path):
    """--search-baselines: a baseline with a space gets its own per-fold studies with the same
    budget and seeds, and its records carry the same selection fields as the headline method's;
    a baseline without hyper-parameters keeps its inner-validation runs."""
    results = tmp_path / "results"
    proc = _search(["--space", _space(tmp_path, TINY.replace("epochs: 3", "epochs: 2")), "--data-root", synthetic / "CASME2",
                    "--trials", 2, "--round-size", 2, "--startup-trials", 2, "--final-seeds", 1, "--baselines", "constant,clip_global",
                    "--search-baselines", "--results", results, "--name", "both"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "baselines searched like tiny" in proc.stdout and "run with inner-validation selection: constant" in proc.stdout
    main = json.loads((results / "searches" / "both" / "summary.json").read_text())["datasets"][0]
    base = json.loads((results / "searches" / "both-clip_global" / "summary.json").read_text())
    assert base["method"] == "clip_global" and base["trials"] == 2 and base["datasets"][0]["final_seeds"] == [1]
    assert sorted(_studies(results, "both-clip_global")) == [f"both-clip_global-casme2-fold{k}" for k in range(4)]
    ours = json.loads(Path(main["records"]["strict_nested"]).read_text())
    theirs = json.loads(Path(base["datasets"][0]["records"]["strict_nested"]).read_text())
    for key in ("selection", "chosen_by", "metric", "n_trials", "protocol"):
        assert ours.get(key) == theirs.get(key), key
    assert [json.loads(Path(p).read_text())["seed"] for p in base["datasets"][0]["records"]["final"]] == [1]
    assert list(main["records"]["baselines"]) == ["constant"]  # clip_global is not also run unsearched
    page = (results / "leaderboard.html").read_text()
    assert "clip_global" in page


def test_fold_workers_give_identical_outputs(synthetic, tmp_path):
    """--fold-workers 2: a slice's tasks are split between the trial process and an actor in its
    placement group; the outputs equal those of one process."""
    space = _space(tmp_path, TINY.replace("epochs: 3", "epochs: 2"))
    common = ["--space", space, "--data-root", synthetic / "CASME2", "--trials", 2, "--round-size", 2, "--final-seeds", 0,
              "--baselines", "", "--name", "workers", "--cpus-per-trial", 1, "--engine", "sequential"]
    assert _search([*common, "--fold-workers", 2, "--results", tmp_path / "w"]).returncode == 0
    assert _search([*common, "--results", tmp_path / "s"]).returncode == 0
    workers = _tasks(tmp_path / "w", "workers")
    assert all(len({t["pid"] for t in workers if t["number"] == n}) == 2 for n in (0, 1))  # two processes per slice
    strip = lambda ts: sorted((t["fold"], t["number"], t["inner_f1"], json.dumps(t["test_prob"])) for t in ts)  # noqa: E731
    assert strip(workers) == strip(_tasks(tmp_path / "s", "workers"))


def test_failing_task_is_recorded_and_the_others_go_on(synthetic, tmp_path):
    results = tmp_path / "results"
    space = _space(tmp_path, "method: micro_au_clip\nparams:\n  lr: {categorical: [0.002, 1.0e+30]}\nfixed: {epochs: 2}\n", "boom")
    proc = _search(["--space", space, "--data-root", synthetic / "CASME2", "--trials", 3, "--round-size", 3, "--sampler", "random",
                    "--seed", 6, "--final-seeds", 0, "--baselines", "", "--results", results, "--name", "boom"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    [ds] = json.loads((results / "searches" / "boom" / "summary.json").read_text())["datasets"]
    failed = ds["tasks_failed"]
    assert failed and all(f["params"]["lr"] == 1e30 and "non-finite loss" in f["reason"] for f in failed)
    assert ds["tasks_finished"] == 12 - len(failed)
    assert "failed task" in proc.stdout
    for study in _studies(results, "boom").values():
        states = sorted(t.state.name for t in study.trials)
        assert states.count("FAIL") == sum(1 for t in study.trials if t.params["lr"] == 1e30) and len(states) == 3


@pytest.mark.parametrize("args, message", [
    (["--space", "nope"], "unknown search space 'nope'"),
    (["--space", "gsd", "--datasets", "nope"], "unknown dataset"),
    (["--space", "gsd", "--datasets", "casme2", "--data-root", "/nonexistent/CASME2"], "is not a folder"),
    (["--space", "gsd", "--fidelity", "frozen:frozen"], "two different backbone modes"),
    (["--space", "gsd", "--fidelity", "fast"], "expected LOW:HIGH"),
    (["--space", "gsd", "--fidelity", "frozen:full", "--trials", "2", "--confirm-top", "3"], "--confirm-top 3"),
    (["--space", "gsd", "--round-size", "0"], "--round-size must be at least 1"),
    (["--space", "gsd", "--engine", "batched", "--fold-workers", "2"], "--engine batched trains a slice as one model"),
    (["--space", "sssnet", "--fidelity", "frozen:full"], "has no backbone_mode"),
    (["--space", "gsd", "--datasets", "casme2", "--boxes", "boxes.csv"], "--boxes applies to SAMM"),
])
def test_errors_before_any_work(tmp_path, capsys, args, message):
    assert search_main([*args, "--results", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "ray").exists()


def test_dry_run_says_what_the_release_reader_found(synthetic, tmp_path, capsys):
    """Non-fatal findings (masked labels, replaced apexes, ignored text) never pass silently."""
    from suite.data import read_release

    root = synthetic / "SAMM"
    assert search_main(["--space", "gsd", "--datasets", "samm", "--data-root", str(root), "--results", str(tmp_path), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert f"samm: {len(read_release('samm', root).problems)} non-fatal finding(s) in the release at {root}" in err
    assert f"python -m suite.data validate --dataset samm --root {root}" in err
    # the reader options reach the caches the search trains on
    assert search_main(["--space", "gsd", "--datasets", "samm", "--data-root", str(root), "--results", str(tmp_path), "--dry-run",
                        "--alternatives", "union"]) == 0
    metas = [json.loads(m.read_text()) for m in (tmp_path / "cache").glob("samm-*/meta.json")]
    assert sorted(m["options"]["rules"]["alternatives"] for m in metas) == ["mask", "union"]


def test_a_finished_search_is_finished_only_on_the_same_data(tmp_path):
    """A corrected release (a new content fingerprint at the same path) is searched again, never
    answered with the stored summary of the data before."""
    from suite.data import CacheResult
    from suite.search.options import SearchOptions
    from suite.search.run import Plan, _finished, _identity
    from suite.spaces import load_space

    opts = SearchOptions(space="gsd", datasets=("casme2",), results=tmp_path, name="gsd")
    roots = {"casme2": tmp_path / "CASME2"}

    def plan(fingerprint):
        return Plan(load_space("gsd"), None, opts, {"casme2": CacheResult(tmp_path / "cache", fingerprint, hit=True)})

    folder = tmp_path / "searches" / "gsd"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"identity": _identity(plan("a" * 64), roots)}))
    (folder / "summary.txt").write_text("the stored summary")
    assert _finished([plan("a" * 64)], roots) == ["the stored summary"]
    assert _finished([plan("b" * 64)], roots) is None


def test_a_search_folder_is_never_resumed_on_other_data(synthetic, tmp_path, capsys):
    """Its stored slices, studies and records were computed on the data it ran on: resuming it on a
    corrected release (another fingerprint) would mix two data's outputs, so it is refused."""
    root = synthetic / "SAMM"
    args = ["--space", "gsd", "--datasets", "samm", "--data-root", str(root), "--results", str(tmp_path), "--dry-run"]
    folder = tmp_path / "searches" / "gsd"
    folder.mkdir(parents=True)
    (folder / "data.json").write_text(json.dumps({"samm": "0" * 64}))
    assert search_main(args) == 2
    assert "was run on other samm data (fingerprint 000000000000, now " in capsys.readouterr().err
    (folder / "data.json").unlink()  # a folder from before data.json: its headline record tells
    (folder / "samm").mkdir()
    (folder / "samm" / "strict_nested.json").write_text(json.dumps({"data_fingerprint": "1" * 64}))
    assert search_main(args) == 2 and "fingerprint 111111111111" in capsys.readouterr().err
    assert search_main([*args, "--name", "another"]) == 0


def test_a_search_is_never_resumed_with_another_engine(synthetic, tmp_path, capsys):
    """The engines agree only within tolerance: a search that ran with --engine auto (batched on
    frozen tokens) resumed with --fold-workers 2 (sequential) would mix both engines' numbers."""
    args = ["--space", "gsd", "--datasets", "casme2", "--data-root", str(synthetic / "CASME2"), "--results", str(tmp_path), "--dry-run"]
    folder = tmp_path / "searches" / "gsd"
    folder.mkdir(parents=True)
    (folder / "engine.json").write_text(json.dumps({"engine": "auto", "protocol": 2}))
    assert search_main([*args, "--fold-workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "ran with --engine auto; these options ask for sequential" in err and "--engine auto without --fold-workers" in err
    assert search_main([*args, "--engine", "sequential"]) == 2
    assert search_main([*args, "--compile", "aot_eager"]) == 2 and "ask for sequential+compile:aot_eager" in capsys.readouterr().err
    assert search_main(args) == 0
    assert search_main([*args, "--fold-workers", "2", "--name", "another"]) == 0
    # a folder from before per-task streams (outputs, no engine.json) is never resumed
    (folder / "engine.json").unlink()
    (folder / "casme2" / "rounds").mkdir(parents=True)
    (folder / "casme2" / "rounds" / "r000-p000.json").write_text("{}")
    assert search_main(args) == 2 and "earlier version of the fold protocol" in capsys.readouterr().err


def test_a_search_is_never_resumed_with_other_choices(synthetic, tmp_path, capsys):
    """A shared TPE search's folder resumed as --sampler random would reuse proposals adapted on
    every fold (test subjects included) under the ranked shared_nested_data_independent label; as
    --selection strict, under strict_nested. Options that decide proposals and selection must match."""
    import hashlib

    from suite.folds import PROTOCOL_VERSION
    from suite.spaces import load_space

    args = ["--space", "gsd", "--datasets", "casme2", "--data-root", str(synthetic / "CASME2"), "--results", str(tmp_path), "--dry-run",
            "--name", "mine"]
    folder = tmp_path / "searches" / "mine"
    folder.mkdir(parents=True)
    choices = {"selection": "shared", "sampler": "tpe", "metric": "binary", "fidelity": None, "confirm_top": 3, "startup_trials": 4,
               "round_size": 4, "seed": 0, "preset": None, "space": hashlib.sha256(load_space("gsd").path.read_bytes()).hexdigest()[:16]}
    (folder / "engine.json").write_text(json.dumps({"engine": "auto", "protocol": PROTOCOL_VERSION, "choices": choices}))
    assert search_main([*args, "--selection", "shared"]) == 0  # the same choices: resumed
    assert search_main([*args, "--selection", "shared", "--sampler", "random"]) == 2
    assert "--sampler was 'tpe', now 'random'" in capsys.readouterr().err
    assert search_main(args) == 2 and "--selection was 'shared', now 'strict'" in capsys.readouterr().err
    assert search_main([*args, "--selection", "shared", "--metric", "macro"]) == 2 and "--metric" in capsys.readouterr().err
    assert search_main([*args, "--selection", "shared", "--trials", "12", "--final-seeds", "1"]) == 0  # more proposals, other seeds: fine


def test_bad_yaml_and_resources_that_do_not_fit(synthetic, tmp_path):
    bad = _space(tmp_path, "method: micro_au_clip\nparams: [\n", "bad")
    proc = _search(["--space", bad, "--results", tmp_path])
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr
    proc = _search(["--space", _space(tmp_path, TINY), "--data-root", synthetic / "CASME2", "--cpus-per-trial", 64,
                    "--results", tmp_path])
    assert proc.returncode == 2 and "does not fit" in proc.stderr
    proc = _search(["--space", _space(tmp_path, TINY), "--data-root", synthetic / "CASME2", "--cpus-per-trial", 1,
                    "--fold-workers", 64, "--results", tmp_path])
    assert proc.returncode == 2 and "× --fold-workers 64 does not fit" in proc.stderr


@pytest.mark.parametrize("path", ["cluster.yaml", "docs/cluster/cluster-onprem.yaml"])
def test_cluster_configs_validate_against_rays_schema(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / path).read_text())
    validate_config(prepare_config(copy.deepcopy(cfg)))
    starts = [c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"] if " start " in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts)  # every ray process: token auth
    assert "--dashboard-host=127.0.0.1" in starts[0] and "0.0.0.0" not in (ROOT / path).read_text()
    assert cfg["file_mounts"] == {"~/micro-au-suite": ".", "~/.ray/auth_token": "~/.ray/auth_token"}
    assert not any("bashrc" in c for c in cfg["setup_commands"])  # nothing appended on a second `ray up`
    broken = copy.deepcopy(cfg)
    broken["max_workerz"] = 1
    with pytest.raises(Exception, match="max_workerz"):
        validate_config(prepare_config(broken))


TWO_NODES = """
import os, subprocess, sys
if not os.path.exists(os.path.expanduser("~/.ray/auth_token")):  # as a user does once before `ray up`
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "ray"), "get-auth-token", "--generate"], check=True, capture_output=True)
os.environ["RAY_AUTH_MODE"] = "token"  # as the shipped cluster configs start every Ray process (before Ray is imported)
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=1, num_gpus=1)  # a fake-GPU worker node
cluster.wait_for_nodes()
print(cluster.address, flush=True)
sys.stdin.read()  # until the test closes it
cluster.shutdown()
"""


def test_search_on_two_node_cluster_uses_both_nodes(synthetic, tmp_path):
    cluster = subprocess.Popen([sys.executable, "-c", TWO_NODES], cwd=ROOT, env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        address = cluster.stdout.readline().strip()
        results = tmp_path / "results"
        proc = _search(["--space", _space(tmp_path, TINY), "--data-root", synthetic / "CASME2", "--trials", 2, "--round-size", 2,
                        "--concurrency", 2, "--gpus-per-trial", 0, "--final-seeds", 0, "--baselines", "", "--results", results,
                        "--name", "multi", "--address", address])
        assert proc.returncode == 0, proc.stderr[-3000:]
        docs = [json.loads(p.read_text()) for p in (results / "searches" / "multi" / "casme2" / "rounds").glob("*.json")]
        assert len(docs) == 2 and len({d["node_id"] for d in docs}) == 2
    finally:
        cluster.stdin.close()
        try:
            cluster.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)


def test_launcher_hands_over_to_the_projects_interpreter(tmp_path):
    """`ray submit` starts the launcher with whatever `python` the login shell finds: here the
    system's, without the project's packages. It runs suite.search with the project's interpreter."""
    decoy = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    home = tmp_path / "home"
    env = {**ENV, "HOME": str(home), "MICRO_AU_PROJECT": str(ROOT), "MICRO_AU_RESULTS": str(tmp_path), "MICRO_AU_PYTHON": sys.executable}
    launcher = [decoy, str(ROOT / "scripts" / "ray_search.py"), "--space", "nope"]
    proc = subprocess.run(launcher, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "no Ray token at ~/.ray/auth_token" in proc.stderr
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("x" * 32)
    proc = subprocess.run(launcher, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown search space 'nope'" in proc.stderr, proc.stderr
    proc = subprocess.run(launcher, env={**env, "MICRO_AU_PYTHON": str(tmp_path / "none")}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "does not exist" in proc.stderr


def test_search_refuses_to_run_ray_without_token_auth(tmp_path):
    proc = subprocess.run(_argv(["--space", "gsd", "--results", tmp_path, "--trials", 1]), cwd=ROOT, env={**ENV, "RAY_AUTH_MODE": "disabled"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "refusing to run Ray without token authentication" in proc.stderr
