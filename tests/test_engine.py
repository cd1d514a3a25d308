"""The engine and `suite.train`: records, recomputation from predictions, determinism, errors."""
import json

import numpy as np
import pandas as pd
import pytest

from suite.results import RECORD_KEYS, load_record, metrics_from_predictions
from suite.train import main as train_cli
from suite.runs import run

FAST = {"epochs": "3", "batch_size": "8"}


@pytest.fixture
def train(synthetic, tmp_path):
    def go(method="micro_au_clip", dataset="casme2", seed_count=1, **overrides):
        root = synthetic / {"casme2": "CASME2", "samm": "SAMM"}[dataset]
        return run(method, dataset, root, {**FAST, **overrides}, seed_count, results=tmp_path, log=lambda *_: None)
    return go


def test_record_is_complete_and_recomputable_from_predictions(train):
    [path] = train()
    record = load_record(path)
    assert set(RECORD_KEYS) <= set(record)
    assert record["source"] == "measured" and record["protocol"]["name"] == "loso" and record["protocol"]["aus"][0] == "AU1" and record["selection"] == "fixed_epochs"
    assert record["schema"] == 2 and record["chosen_by"]["epochs_thresholds"] == "fixed (threshold 0.5)"
    assert record["aus"] == ["AU1", "AU2", "AU4", "AU7", "AU12", "AU14", "AU15", "AU17"]
    frame = pd.read_parquet(path.with_name(record["predictions"]))
    assert frame["sample_id"].is_unique and len(frame) == 24  # every clip predicted once, as a test sample
    assert frame.groupby("fold")["subject"].nunique().eq(1).all()
    again = metrics_from_predictions(frame, "casme2", (1, 2, 4, 7, 12, 14, 15, 17))
    assert again["f1_avg"] == pytest.approx(record["f1_avg"])
    assert again["per_au_f1"] == pytest.approx(record["per_au_f1"])
    assert again["f1_fold_mean"] == pytest.approx(record["f1_fold_mean"])
    assert again["mer"]["emotion5"]["uf1"] == pytest.approx(record["mer"]["emotion5"]["uf1"])
    known = frame.filter(like="known_").to_numpy(bool)
    assert record["n_samples"] == int(known.any(1).sum()) == 23  # the '?' clip is not scored; '12+?' keeps its coded AU
    assert record["n_masked"] == {f"AU{a}": int((~known[:, k]).sum()) for k, a in enumerate((1, 2, 4, 7, 12, 14, 15, 17))}
    assert record["metric"] == "binary" and set(record["f1"]) == {"binary", "macro"}
    for variant in ("binary", "macro"):
        lo, hi = record["f1"][variant]["ci95"]
        assert lo <= record["f1"][variant]["pooled"] <= hi and again["f1"][variant]["ci95"] == pytest.approx([lo, hi])
    assert record["f1"]["macro"]["pooled"] > record["f1"]["binary"]["pooled"]  # rare AUs: the negative class is easy
    assert record["f1_avg"] == pytest.approx(np.mean(list(record["per_au_f1"].values())))


def test_same_seed_same_result_on_cpu(train):
    a, b = train(), train()
    ra, rb = load_record(a[0]), load_record(b[0])
    assert ra["f1_avg"] == rb["f1_avg"] and ra["per_au_auc"] == rb["per_au_auc"]
    pa = pd.read_parquet(a[0].with_name(ra["predictions"]))
    pb = pd.read_parquet(b[0].with_name(rb["predictions"]))
    assert np.array_equal(pa.filter(like="prob_").to_numpy(), pb.filter(like="prob_").to_numpy())


def test_inner_selection_and_samm(train):
    [path] = train(dataset="samm", selection="inner")
    record = load_record(path)
    assert record["selection"] == "inner_validation" and 0 <= record["inner_f1"] <= 1
    assert record["aus"] == ["AU2", "AU4", "AU7", "AU12"] and "objective" in record["mer"]


def test_constant_floor_equals_prevalence_formula(train):
    [path] = train(method="constant")
    record = load_record(path)
    frame = pd.read_parquet(path.with_name(record["predictions"]))
    for au, f1 in record["per_au_f1"].items():
        p = frame.loc[frame[f"known_{au}"], f"true_{au}"].mean()
        assert f1 == pytest.approx(2 * p / (1 + p))


def test_cli_prints_table_and_record_path_last(synthetic, tmp_path, capsys):
    code = train_cli(["--method", "micro_au_clip", "--dataset", "casme2", "--data-root", str(synthetic / "CASME2"),
                      "--set", "epochs=1", "--seeds", "2", "--results", str(tmp_path)])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert any(line.strip().startswith("pooled") for line in out)
    assert out[-1].endswith("seed1.json") and json.loads(open(out[-1]).read())["seed"] == 1


def test_cli_errors(synthetic, tmp_path, capsys):
    assert train_cli(["--method", "nope", "--results", str(tmp_path)]) == 2
    assert "registered methods" in capsys.readouterr().err
    assert train_cli(["--set", "bogus=1", "--data-root", str(synthetic / "CASME2"), "--results", str(tmp_path)]) == 2
    assert "valid:" in capsys.readouterr().err
    assert train_cli(["--boxes", "boxes.csv", "--data-root", str(synthetic / "CASME2"), "--results", str(tmp_path)]) == 2
    assert "--boxes applies to SAMM" in capsys.readouterr().err
    assert train_cli(["--list-methods"]) == 0
    listed = capsys.readouterr().out
    assert "micro_au_clip_no_pta" in listed and "constant" in listed


@pytest.mark.slow
def test_micro_au_clip_beats_floor_and_single_frame_on_default_casme2(tmp_path):
    """The issue's acceptance check, on the embedded default (synthetic CASME II, tiny CLIP)."""
    results = {m: load_record(run(m, "casme2", None, None, 1, results=tmp_path, log=lambda *_: None)[0])["f1_avg"]
               for m in ("constant", "micro_au_clip", "micro_au_clip_single_frame")}
    assert results["micro_au_clip"] > results["constant"] + 0.15
    assert results["micro_au_clip"] > results["micro_au_clip_single_frame"] + 0.15


def test_compiled_model_is_reused_across_folds_and_matches_eager(synthetic, tmp_path):
    """torch.compile once per engine: the graphs stop growing once every batch shape has been
    seen (the first new shape turns on dynamic shapes: one recompile), same predictions.
    (aot_eager keeps the test fast; inductor is the CLI default.)"""
    import torch
    from torch._dynamo.utils import counters

    from suite.aus import DATASET_AUS
    from suite.data import load_cache, prepare
    from suite.engine import DatasetTensors, SequentialEngine
    from suite.folds import FoldTask, run_tasks
    from suite.protocol import loso_folds
    from suite.registry import get_method, resolve_hparams

    cache = prepare("casme2", synthetic / "CASME2", tmp_path)
    aus = DATASET_AUS["casme2"]
    data = DatasetTensors.from_cache(load_cache(cache.path)[0], aus, torch.device("cpu"))
    spec = get_method("micro_au_clip")
    hp = resolve_hparams(spec, {"epochs": 2, "batch_size": 8, "selection": "fixed"})
    folds = loso_folds(data.subject, 0.25, 0)
    eager = SequentialEngine(spec, hp, data, aus, seed=0)
    compiled = SequentialEngine(spec, hp, data, aus, seed=0, compile="aot_eager")
    graphs = []
    for fold in folds:
        expected = run_tasks(eager.run_jobs, data, [FoldTask(fold, hp, 0)])[0].prob
        np.testing.assert_allclose(run_tasks(compiled.run_jobs, data, [FoldTask(fold, hp, 0)])[0].prob, expected, rtol=1e-4, atol=1e-5)
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] > 0 and graphs[1] <= graphs[0] + 1 and graphs[2:] == [graphs[1]] * (len(folds) - 2)


def test_cli_reads_the_release_as_told_and_says_what_it_found(synthetic, tmp_path, capsys):
    """The reader options of `suite.data build` reach training: the cache (and so the record's
    data fingerprint) is the one read with them, not a default-read one."""
    from suite.data.au_strings import AURules
    from suite.data import build_cache, read_release

    root = synthetic / "SAMM"
    args = ["--method", "constant", "--dataset", "samm", "--data-root", str(root), "--results", str(tmp_path)]
    fingerprints = {}
    for rule in ("mask", "union"):
        assert train_cli([*args, "--alternatives", rule]) == 0
        out = capsys.readouterr().out
        release = read_release("samm", root, AURules(alternatives=rule))
        assert f"samm: {len(release.problems)} non-fatal finding(s) in the release at {root}" in out
        fingerprints[rule] = load_record(out.strip().splitlines()[-1])["data_fingerprint"]
        assert fingerprints[rule] == build_cache(release, tmp_path / "cache").fingerprint
    assert fingerprints["mask"] != fingerprints["union"]


def test_cli_compile_flag_is_recorded(synthetic, tmp_path, capsys):
    args = ["--method", "micro_au_clip", "--data-root", str(synthetic / "CASME2"), "--results", str(tmp_path),
            "--set", "epochs=1", "--compile", "aot_eager"]
    assert train_cli(args) == 0
    record = load_record(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["compile"] == "aot_eager"


def test_from_search_trains_the_deployment_configuration_labelled_as_a_copy(synthetic, tmp_path, capsys, train):
    """`suite.train --from-search NAME` takes the method and every hyper-parameter from the
    search's deployment record and writes records labelled ``deployment_copy`` with the search's
    name (chosen on all subjects: never an independent fixed configuration); a missing search, a
    dataset it did not search, or another --method is an error naming what to do."""
    from suite.results import write_json

    [deployed] = train("micro_au_clip", lr="0.003")  # stands in for the search's deployment re-run
    hparams = load_record(deployed)["hparams"]
    search = tmp_path / "searches" / "gsd"
    write_json(search / "summary.json", {"method": "micro_au_clip", "datasets": [
        {"dataset": "casme2", "records": {"deployment": [str(deployed)]}}]})
    args = ["--from-search", "gsd", "--dataset", "casme2", "--data-root", str(synthetic / "CASME2"), "--results", str(tmp_path)]
    assert train_cli(args) == 0
    record = load_record(capsys.readouterr().out.strip().splitlines()[-1])
    assert (record["selection"], record["from_search"], record["method"]) == ("deployment_copy", "gsd", "micro_au_clip")
    assert record["hparams"] == hparams and record["chosen_by"]["optimistic"] is True
    assert train_cli(["--from-search", "nope", "--results", str(tmp_path)]) == 2
    assert "no finished search" in capsys.readouterr().err
    assert train_cli([*args[:3], "samm", *args[4:]]) == 2
    assert "not samm" in capsys.readouterr().err
    assert train_cli([*args, "--method", "constant"]) == 2
    assert "searched micro_au_clip, not --method constant" in capsys.readouterr().err
