"""`suite.search` end to end (Ray Tune + Optuna on CPU): nested F1 recomputed from stored trial
outputs, resume after kill -9, failing trials, pre-flight errors, the cluster configs, and a
two-node local Ray cluster."""
import copy
import json
import os
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

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
pytestmark = pytest.mark.slow


def _space(tmp_path, text, name="tiny"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


TINY = "method: micro_au_clip\nparams:\n  lambda_gd: {float: [0.01, 1.0], log: true}\n  tau_gd: {float: [0.1, 3.0], log: true}\nfixed: {epochs: 3}\n"


def _search(args, timeout=600, **kw):
    return subprocess.run([sys.executable, "-m", "suite.search", *map(str, args)], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout, **kw)


def _study(results: Path, name: str, dataset: str = "casme2"):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(results / "searches" / name / "optuna.journal")))
    return optuna.load_study(study_name=f"{name}-{dataset}", storage=storage)


def test_tiny_search_end_to_end(synthetic, tmp_path):
    results = tmp_path / "results"
    proc = _search(["--space", _space(tmp_path, TINY), "--data-root", synthetic / "CASME2", "--trials", 3, "--final-seeds", 2,
                    "--results", results, "--name", "e2e", "--baselines", "constant"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nested F1" in proc.stdout
    study = _study(results, "e2e")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 3 and all(set(t.params) == {"lambda_gd", "tau_gd"} for t in complete)
    summary = json.loads((results / "searches" / "e2e" / "summary.json").read_text())
    [ds] = summary["datasets"]
    assert ds["trials_finished"] == 3 and not ds["trials_failed"] and len(ds["final_seeds_f1"]) == 2
    # Optuna was told each trial's inner-validation objective, never a test score.
    trial_docs = [json.loads(p.read_text()) for p in (results / "searches" / "e2e" / "casme2" / "trials").glob("*.json")]
    assert len(trial_docs) == 3
    objectives = sorted(round(np.mean([f["inner_f1"] for f in d["folds"]]), 6) for d in trial_docs)
    assert sorted(round(t.value, 6) for t in complete) == objectives
    # Recompute the nested F1 from the stored trial outputs: per fold the best inner score.
    by_fold = {}
    for d in sorted(trial_docs, key=lambda d: d["trial_id"]):
        for f in d["folds"]:
            if f["fold"] not in by_fold or f["inner_f1"] > by_fold[f["fold"]]["inner_f1"]:
                by_fold[f["fold"]] = f
    covered = {s for f in by_fold.values() for s in f["sample_ids"]}
    nested = json.loads(Path(ds["records"]["nested"]).read_text())
    frame = pd.read_parquet(Path(ds["records"]["nested"]).with_name(nested["predictions"])).set_index("sample_id")
    pred, true = [], []
    for f in by_fold.values():
        for sid, prob in zip(f["sample_ids"], f["prob"]):
            if frame.loc[sid, "au_known"]:
                pred.append(np.array(prob) >= np.array(f["threshold"]))
                true.append(frame.loc[sid, [c for c in frame.columns if c.startswith("true_")]].to_numpy(int))
    assert len(covered) == 24  # every clip predicted by exactly the fold that tests it
    assert nested["f1_avg"] == pytest.approx(float(f1_per_au(np.array(true), np.array(pred)).mean()))
    assert nested["selection"] == "nested" and nested["n_trials"] == 3
    assert nested["device"].startswith("cpu") and nested["duration_s"] > 0
    on_test = json.loads(Path(ds["records"]["selected_on_test_folds"]).read_text())
    true_cols = [c for c in frame.columns if c.startswith("true_")]

    def pooled_outer(doc):
        pairs = [(np.array(p) >= np.array(f["threshold"]), frame.loc[s, true_cols].to_numpy(int))
                 for f in doc["folds"] for s, p in zip(f["sample_ids"], f["prob"]) if frame.loc[s, "au_known"]]
        return float(f1_per_au(np.array([t for _, t in pairs]), np.array([p for p, _ in pairs])).mean())

    assert on_test["selection"] == "selected_on_test_folds"
    assert on_test["f1_avg"] == pytest.approx(max(pooled_outer(d) for d in trial_docs))
    assert Path(ds["records"]["constant"]).exists()


def test_frozen_search_then_fine_tuned_confirmation(synthetic, tmp_path):
    """--fidelity frozen:full: every search trial reads one shared token-cache entry; the best
    configurations by inner F1 are re-run fine-tuned, and selection uses those only."""
    results = tmp_path / "results"
    proc = _search(["--space", _space(tmp_path, TINY.replace("epochs: 3", "epochs: 2")), "--data-root", synthetic / "CASME2",
                    "--trials", 3, "--fidelity", "frozen:full", "--confirm-top", 2, "--final-seeds", 1, "--baselines", "",
                    "--results", results])
    assert proc.returncode == 0, proc.stderr[-3000:]
    name = "tiny-frozen-to-full"
    out = results / "searches" / name / "casme2"
    screened = [json.loads(p.read_text()) for p in (out / "trials").glob("*.json")]
    confirmed = [json.loads(p.read_text()) for p in (out / "confirmed" / "trials").glob("*.json")]
    assert len(screened) == 3 and {d["hparams"]["backbone_mode"] for d in screened} == {"frozen"}
    assert len(confirmed) == 2 and {d["hparams"]["backbone_mode"] for d in confirmed} == {"full"}
    assert len(list((results / "cache" / "tokens").glob("*.pt"))) == 1  # computed once, read by the other trials
    ranked = sorted(screened, key=lambda d: (-np.mean([f["inner_f1"] for f in d["folds"]]), d["trial_id"]))  # ties: trial order
    top2 = sorted(json.dumps(d["params"], sort_keys=True) for d in ranked[:2])
    assert sorted(json.dumps(d["params"], sort_keys=True) for d in confirmed) == top2
    assert len([t for t in _study(results, name).trials if t.state.name == "COMPLETE"]) == 3  # Optuna saw the search only
    [ds] = json.loads((results / "searches" / name / "summary.json").read_text())["datasets"]
    assert ds["screening"]["trials_finished"] == 3 and len(ds["screening"]["confirmed"]) == 2
    assert ds["trials_finished"] == 2 and ds["trials_dir"] == str(out / "confirmed" / "trials")
    nested = json.loads(Path(ds["records"]["nested"]).read_text())
    assert nested["n_trials"] == 2 and nested["fidelity"] == "frozen:full"
    assert set(nested["chosen_trials"].values()) <= {d["trial_id"] for d in confirmed}
    [final] = ds["records"]["final"]
    assert json.loads(Path(final).read_text())["hparams"]["backbone_mode"] == "full"
    assert "confirmed the best 2 with full" in proc.stdout


def test_fold_workers_run_folds_concurrently_with_identical_outputs(synthetic, tmp_path):
    """--fold-workers 2: each trial's folds are split between the trial process and an actor in
    its placement group; every fold output equals the sequential engine's."""
    import torch

    from suite.aus import DATASET_AUS
    from suite.data import load_cache, prepare
    from suite.engine import DatasetTensors, Engine
    from suite.protocol import loso_folds
    from suite.registry import get_method

    results = tmp_path / "results"
    proc = _search(["--space", _space(tmp_path, TINY.replace("epochs: 3", "epochs: 2")), "--data-root", synthetic / "CASME2",
                    "--trials", 2, "--fold-workers", 2, "--cpus-per-trial", 1, "--final-seeds", 0, "--baselines", "",
                    "--results", results, "--name", "workers"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    docs = [json.loads(p.read_text()) for p in (results / "searches" / "workers" / "casme2" / "trials").glob("*.json")]
    assert len(docs) == 2
    cache = prepare("casme2", synthetic / "CASME2", results)
    aus = DATASET_AUS["casme2"]
    data = DatasetTensors.from_cache(load_cache(cache.path)[0], aus, torch.device("cpu"))
    for doc in docs:
        assert [f["fold"] for f in doc["folds"]] == [0, 1, 2, 3]
        assert len({f["pid"] for f in doc["folds"]}) == 2  # two processes ran this trial's folds
        engine = Engine(get_method("micro_au_clip"), doc["hparams"], data, aus, seed=0)
        for fold, stored in zip(loso_folds(data.subject, doc["hparams"]["inner_val_fraction"], 0), doc["folds"]):
            out = engine.run_fold(fold, "inner")
            assert stored["inner_f1"] == out.inner_f1
            np.testing.assert_allclose(np.array(stored["prob"]), out.prob, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("how", ["ctrl-c", "kill-9"])
def test_resume_after_interrupt_gives_exact_trial_count(synthetic, tmp_path, how):
    results = tmp_path / "results"
    args = ["--space", _space(tmp_path, TINY), "--data-root", synthetic / "CASME2", "--trials", 4, "--concurrency", 1,
            "--final-seeds", 0, "--baselines", "", "--results", results, "--name", "resume"]
    proc = subprocess.Popen([sys.executable, "-m", "suite.search", *map(str, args)], cwd=ROOT, env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    trials_dir = results / "searches" / "resume" / "casme2" / "trials"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(trials_dir.glob("*.json"))) < 1:
        time.sleep(0.5)
    time.sleep(2)  # let the next trial start and checkpoint a fold
    if how == "ctrl-c":
        proc.send_signal(signal.SIGINT)  # the driver only, as a terminal's Ctrl-C would
        _, err = proc.communicate(timeout=180)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything of its own Ray cluster still alive
        except ProcessLookupError:
            pass
        assert proc.returncode == 130 and "rerun the same command to resume" in err
    else:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray cluster it started
        proc.wait()
    assert not (results / "searches" / "resume" / "summary.json").exists()  # nothing summarised from a partial search
    finished_before = len(list(trials_dir.glob("*.json")))
    assert 1 <= finished_before < 4
    again = _search(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming" in again.stdout
    assert len(list(trials_dir.glob("*.json"))) == 4
    complete = [t for t in _study(results, "resume").trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == 4  # none duplicated
    summary = json.loads((results / "searches" / "resume" / "summary.json").read_text())
    assert summary["datasets"][0]["trials_finished"] == 4


def test_failing_trial_is_retried_then_recorded(synthetic, tmp_path):
    results = tmp_path / "results"
    space = _space(tmp_path, "method: micro_au_clip\nparams:\n  lr: {categorical: [0.002, 1.0e+30]}\nfixed: {epochs: 2}\n", "boom")
    proc = _search(["--space", space, "--data-root", synthetic / "CASME2", "--trials", 3, "--concurrency", 1, "--sampler", "random",
                    "--seed", 6, "--final-seeds", 0, "--baselines", "", "--results", results, "--name", "boom"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    [ds] = json.loads((results / "searches" / "boom" / "summary.json").read_text())["datasets"]
    assert ds["trials_finished"] == 2 and len(ds["trials_failed"]) == 1
    failure = ds["trials_failed"][0]
    assert failure["config"]["lr"] == 1e30 and "non-finite loss" in failure["reason"]
    assert "failed trial" in proc.stdout
    states = [t.state.name for t in _study(results, "boom").trials]
    assert states.count("COMPLETE") == 2 and states.count("FAIL") == 1


@pytest.mark.parametrize("args, message", [
    (["--space", "nope"], "unknown search space 'nope'"),
    (["--space", "gsd", "--datasets", "casme3"], "unknown dataset"),
    (["--space", "gsd", "--data-root", "/nonexistent/CASME2"], "is not a folder"),
    (["--space", "gsd", "--fidelity", "frozen:frozen"], "two different backbone modes"),
    (["--space", "gsd", "--fidelity", "fast"], "expected LOW:HIGH"),
    (["--space", "gsd", "--fidelity", "frozen:full", "--trials", "2", "--confirm-top", "3"], "--confirm-top 3"),
    (["--space", "sssnet", "--fidelity", "frozen:full"], "has no backbone_mode"),
])
def test_errors_before_any_work(tmp_path, capsys, args, message):
    assert search_main([*args, "--results", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "ray").exists()


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
    assert any("RAY_AUTH_MODE=disabled" in c for c in cfg["head_start_ray_commands"])
    assert any("RAY_AUTH_MODE=disabled" in c for c in cfg["worker_start_ray_commands"])
    assert "~/micro-au-suite" in cfg["file_mounts"]
    broken = copy.deepcopy(cfg)
    broken["max_workerz"] = 1
    with pytest.raises(Exception, match="max_workerz"):
        validate_config(prepare_config(broken))


def test_search_on_two_node_cluster_uses_both_nodes(synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1, num_gpus=1)  # a fake-GPU worker node
        cluster.wait_for_nodes()
        results = tmp_path / "results"
        proc = _search(["--space", _space(tmp_path, TINY), "--data-root", synthetic / "CASME2", "--trials", 2, "--concurrency", 2,
                        "--gpus-per-trial", 0, "--final-seeds", 0, "--baselines", "", "--results", results, "--name", "multi",
                        "--address", cluster.address])
        assert proc.returncode == 0, proc.stderr[-3000:]
        docs = [json.loads(p.read_text()) for p in (results / "searches" / "multi" / "casme2" / "trials").glob("*.json")]
        assert len(docs) == 2 and len({d["node_id"] for d in docs}) == 2
    finally:
        cluster.shutdown()


def test_launcher_runs_suite_search_with_cluster_defaults(tmp_path):
    env = {**ENV, "MICRO_AU_PROJECT": str(ROOT), "MICRO_AU_RESULTS": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "ray_search.py"), "--space", "nope"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown search space 'nope'" in proc.stderr
