"""Cross-dataset protocols (``suite.evaluation``): a transfer's choices never see the target's labels
(flipped target labels change no choice, only the test figures), a composite keeps an id that two
releases share as two subjects, and the page and the exports give each protocol its own section,
never one rank."""
import json
import re
import subprocess
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from suite.data import prepare
from suite.evaluation import Evaluation, EvaluationError, evaluation_of, load_tensors, parse_protocol
from suite.protocol import Protocol, loso_folds
from suite.results import write_run
from test_registry import toy  # noqa: F401  (a fixture: a release registered by the test alone)

ROOT = Path(__file__).resolve().parent.parent


# --- the protocols ------------------------------------------------------------------------------

def test_protocols_parse_to_their_evaluations_and_bad_ones_say_why():
    [t] = parse_protocol("transfer:casme2->samm")
    assert (t.kind, t.key, t.aus, t.train_releases, t.test_releases) == ("transfer", "casme2-to-samm", (2, 4, 7, 12), ("casme2",), ("samm",))
    [c] = parse_protocol("composite:casme2+samm+casme3")
    assert c.key == "casme2+samm+casme3" and c.aus == (2, 4) and c.title == "CASME II + SAMM + CAS(ME)³"
    assert [e.key for e in parse_protocol("loso", ["casme2", "casme3"])] == ["casme2", "casme3"]
    for e in (t, c, *parse_protocol("loso", ["samm"])):
        assert evaluation_of(e.key) == e
    assert t.describe()["test"] == ["samm"] and t.describe()["aus"] == ["AU2", "AU4", "AU7", "AU12"]
    for bad, says in (("transfer:casme2->casme2", "named twice"), ("transfer:casme2", "SRC->DST"), ("composite:samm", "two or more"),
                      ("composite:casme2+nope", "unknown dataset 'nope'"), ("lopo", "choose loso")):
        with pytest.raises(EvaluationError, match=re.escape(says)):
            parse_protocol(bad)


def test_a_transfer_has_one_fold_trained_on_the_source_and_choosing_on_source_subjects_only():
    subjects = np.array([f"casme2/{i:02d}" for i in range(6) for _ in range(3)] + [f"samm/{i:03d}" for i in range(4) for _ in range(2)])
    [fold] = Evaluation("transfer", ("casme2", "samm")).folds(subjects, Protocol(inner_val_fraction=0.34), seed=5)
    assert {s.split("/")[0] for s in subjects[fold.train]} == {"casme2"} and len(fold.train) == 18
    assert {s.split("/")[0] for s in subjects[fold.test]} == {"samm"} and len(fold.test) == 8
    assert set(fold.inner_val) <= set(fold.train) and len(set(subjects[fold.inner_val])) == 2
    assert not set(subjects[fold.inner_train]) & set(subjects[fold.inner_val])


def test_a_subject_id_in_two_releases_is_two_subjects_in_a_composite():
    subjects = np.array(["casme2/01", "casme2/01", "casme2/02", "toyme/01", "toyme/02", "toyme/02"])
    folds = Evaluation("composite", ("casme2", "samm")).folds(subjects, Protocol(), 0)
    assert [f.test_subject for f in folds] == ["casme2/01", "casme2/02", "toyme/01", "toyme/02"]
    assert [list(f.test) for f in folds] == [[0, 1], [2], [3], [4, 5]]
    assert [f.index for f in folds] == [f.index for f in loso_folds(subjects)]


# --- a transfer never lets the target's labels choose -------------------------------------------

SPACE = ("method: micro_au_clip\nparams:\n  lambda_gd: {float: [0.01, 1.0], log: true}\n  gda_layers: {int: [1, 2]}\n"
         "  token_layer: {categorical: [-1, -2]}\nfixed: {epochs: 2, batch_size: 8, dropout: 0.2}\n")


def _transfer_search(synthetic, tmp_path, flip: bool):
    """The strictly nested search of CASME II → SAMM in this process (every kind of parameter
    searched: per-model, architecture, encoder; TPE past its start-up), SAMM's labels flipped or not."""
    from suite.search.driver import DatasetSearch
    from suite.search.options import SearchOptions
    from suite.search.trial import in_process_executor
    from suite.spaces import load_space

    space_path = tmp_path / "tiny.yaml"
    space_path.write_text(SPACE)
    space = load_space(str(space_path))
    results = tmp_path / f"results-{flip}"
    evaluation = Evaluation("transfer", ("casme2", "samm"))
    opts = SearchOptions(space=str(space_path), protocol=evaluation.spec, trials=4, round_size=2, startup_trials=2, final_seeds=0,
                         baselines=(), name="tr", results=results)
    roots = {"casme2": synthetic / "CASME2", "samm": synthetic / "SAMM"}
    caches = {r: prepare(r, roots[r], results) for r in roots}
    data = load_tensors(evaluation, {r: (c.path, c.fingerprint) for r, c in caches.items()}, torch.device("cpu"))
    if flip:
        target = np.array([s.startswith("samm/") for s in data.subject])
        data.labels[target] = 1 - data.labels[target]
    search = DatasetSearch(space, evaluation, roots, caches, None, opts, results, results / "searches" / "tr", in_process_executor(data))
    search.data = data  # selection reads the same (altered) labels
    summary = search.run(lambda jobs: lambda: [])()
    tasks = [t for p in sorted((results / "searches" / "tr" / "casme2-to-samm" / "rounds").glob("*.json"))
             for t in json.loads(p.read_text())["tasks"]]
    return summary, tasks, data


@pytest.mark.slow
def test_flipped_target_labels_change_no_choice_only_the_test_figures(synthetic, tmp_path):
    summary, tasks, data = _transfer_search(synthetic, tmp_path, flip=False)
    flipped_summary, flipped_tasks, flipped = _transfer_search(synthetic, tmp_path, flip=True)
    assert summary["n_folds"] == 1 and len(tasks) == 4 and all(t["status"] == "ok" for t in tasks)
    assert len({json.dumps(t["params"], sort_keys=True) for t in tasks}) == 4  # TPE proposed past its start-up
    assert not set(tasks[0]["inner_val_ids"]) & {str(s) for s, subj in zip(data.sample_id, data.subject) if subj.startswith("samm/")}
    for a, b in zip(tasks, flipped_tasks):  # every proposal, inner score, epoch count, threshold — and the test probabilities
        assert (a["params"], a["inner_f1"], a["epochs"], a["threshold"]) == (b["params"], b["inner_f1"], b["epochs"], b["threshold"])
        assert a["test_prob"] == b["test_prob"] and a["test_ids"] == b["test_ids"]
    assert summary["chosen"] == flipped_summary["chosen"]
    assert summary["protocol"]["test"] == ["samm"] and summary["protocol"]["aus"] == ["AU2", "AU4", "AU7", "AU12"]
    assert summary["headline_f1"] != flipped_summary["headline_f1"]  # only the test figures moved
    assert summary["selected_on_test_folds_f1"] != flipped_summary["selected_on_test_folds_f1"]

    # the final seeds' and baselines' protocol (suite.runs.evaluate_folds): the same choices on both
    from suite.registry import get_method, resolve_hparams
    from suite.runs import evaluate_folds

    evaluation = Evaluation("transfer", ("casme2", "samm"))
    hp = resolve_hparams(get_method("clip_global"), {"epochs": 3}, Protocol(selection="inner"))
    runs = [evaluate_folds("clip_global", evaluation, lambda _: hp, d, [1], None)[0][1][0] for d in (data, flipped)]
    assert runs[0].epochs == runs[1].epochs and np.array_equal(runs[0].threshold, runs[1].threshold)
    assert np.array_equal(runs[0].prob, runs[1].prob)


# --- a composite over a release and its copy: two subjects per id --------------------------------

def test_a_composite_run_keeps_shared_ids_apart_and_reports_each_release(synthetic, toy, tmp_path, capsys):
    """The toy release (``test_registry``) holds CASME II's rows: the same subject ids in another release."""
    from suite.train import main as train_cli

    assert train_cli(["--method", "constant", "--protocol", "composite:casme2+toyme", "--data-root",
                      f"casme2={synthetic / 'CASME2'},toyme={toy}", "--results", str(tmp_path / "results")]) == 0
    path = Path(capsys.readouterr().out.strip().splitlines()[-1])
    record = json.loads(path.read_text())
    frame = pd.read_parquet(path.with_name(record["predictions"]))
    ids = {s.split("/", 1)[1] for s in frame["subject"]}
    assert {f"casme2/{i}" for i in ids} | {f"toyme/{i}" for i in ids} == set(frame["subject"])
    assert record["n_folds"] == 2 * len(ids) == frame["fold"].nunique()
    assert all(frame[frame["fold"] == f]["subject"].nunique() == 1 for f in frame["fold"].unique())
    assert record["protocol"]["name"] == "composite" and record["protocol"]["aus"] == ["AU4", "AU12"]
    assert set(record["by_release"]) == {"casme2", "toyme"}
    part = frame[frame["subject"].str.startswith("toyme/")]
    from suite.results import metrics_from_predictions

    assert record["by_release"]["toyme"]["f1_avg"] == pytest.approx(metrics_from_predictions(part, "toyme", (4, 12))["f1_avg"])


# --- the page and the exports: one section per protocol, never one rank --------------------------

def _records(results: Path) -> None:
    """Records of three protocols (fabricated predictions, the real record writer): LOSO on CASME II
    and SAMM (the main job), CASME II → SAMM, and the composite CASME II + SAMM, where the transfer's
    figures are far above every LOSO figure — a shared rank would put them first."""
    from test_exports import _cache, write_main_job

    write_main_job(results)
    caches = {d: _cache(results.parent, d) for d in ("casme2", "samm")}
    for key, skill in (("casme2-to-samm", {"micro_au_clip": 0.99, "constant": 0.85}), ("casme2+samm", {"micro_au_clip": 0.5, "prior": 0.9})):
        evaluation = evaluation_of(key)
        for method, s in skill.items():
            rng = np.random.default_rng(int(100 * s))
            rows = []
            for i, release in enumerate(evaluation.test_releases):
                for subj in range(5):
                    for c in range(8):
                        row = {"sample_id": f"{release}/{subj}/{c}", "subject": f"{release}/{subj:02d}",
                               "fold": 0 if evaluation.kind == "transfer" else 5 * i + subj, "emotion": "x", "objective_class": 1}
                        for a in evaluation.aus:
                            true = int(rng.random() < 0.4)
                            pred = true if rng.random() < s else 1 - true
                            row.update({f"prob_AU{a}": float(pred), f"pred_AU{a}": pred, f"true_AU{a}": true, f"known_AU{a}": True})
                        rows.append(row)
            stem = results / "runs" / key / method / "cfg" / "seed1"
            write_run(stem, pd.DataFrame(rows), method=method, dataset=key, aus=evaluation.aus, hparams={"lr": 1e-3, "metric": "binary"},
                      seed=1, selection="inner_validation", cache_path=[caches[r] for r in evaluation.releases], device="cpu", duration_s=1.0)


def test_page_and_exports_give_each_protocol_its_own_section_and_rank(tmp_path):
    from suite.leaderboard import render
    from suite.leaderboard.export import export

    results = tmp_path / "results"
    _records(results)
    html = render(results).read_text()
    sections = dict(re.findall(r'<section class="protocol" id="protocol-([^"]+)"(.*?)</section>\s*(?=<section class="protocol"|\s*(?:{%|<h2>|<section|$))',
                               html, re.S))
    assert set(sections) >= {"loso", "casme2-to-samm", "casme2+samm"}

    def ranked_table(section: str) -> list[tuple[str, str]]:
        table = re.search(r'<table id="detection[^"]*" class="sortable">(.*?)</table>', section, re.S).group(1)
        rows = re.findall(r'<tr class="measured">\s*<td class="name">([^<]+)</td>.*?<td data-sort="([0-9.]+)">[0-9.]+</td>\s*'
                          r'<td data-sort="[0-9.]+">[0-9]+%</td>', table, re.S)
        return rows, re.findall(r"<th[^>]*>([^<]*) binary F1</th>", table)

    loso_rows, loso_columns = ranked_table(sections["loso"])
    transfer_rows, transfer_columns = ranked_table(sections["casme2-to-samm"])
    composite_rows, composite_columns = ranked_table(sections["casme2+samm"])
    assert loso_columns == ["CASME II", "SAMM"]  # no cross-dataset column in the LOSO table
    assert transfer_columns == ["CASME II → SAMM"]
    assert composite_columns == ["CASME II + SAMM, pooled", "CASME II part", "SAMM part"]
    # each section ranks its own rows from 1: the transfer's constant, above every LOSO figure, is second there and in no other table
    assert [(m, float(r)) for m, r in transfer_rows] == [("micro_au_clip", 1.0), ("constant", 2.0)]
    assert [(m, float(r)) for m, r in composite_rows] == [("prior", 1.0), ("micro_au_clip", 2.0)]
    assert dict((m, float(r)) for m, r in loso_rows)["micro_au_clip"] == 1.0
    assert "CASME II → SAMM" not in sections["loso"] and "casme2-to-samm" not in sections["loso"]
    assert "SAMM&#39;s labels chose nothing" in sections["casme2-to-samm"] and "AU2, AU4, AU7, AU12" in sections["casme2-to-samm"]
    assert "namespaced by release" in sections["casme2+samm"]

    out = tmp_path / "tables" / "table.csv"
    written = export(results, "csv", out)
    assert sorted(p.name for p in written) == ["table-casme2+samm-per-au.csv", "table-casme2+samm.csv", "table-casme2-to-samm-per-au.csv",
                                               "table-casme2-to-samm.csv", "table-per-au.csv", "table.csv"]
    loso = pd.read_csv(out)
    assert not [c for c in loso.columns if "→" in c or "+" in c] and set(loso["method"]) == {"micro_au_clip", "clip_global", "prior", "constant"}
    transfer = pd.read_csv(out.with_name("table-casme2-to-samm.csv"))
    assert list(transfer["method"]) == ["micro_au_clip", "constant"] and list(transfer["rank"]) == [1.0, 2.0]
    assert "CASME II → SAMM F1" in transfer.columns
    tex = export(results, "latex", tmp_path / "tables" / "table.tex")
    caption = next(p for p in tex if p.name == "table-casme2-to-samm.tex").read_text()
    assert "tested on every SAMM clip" in caption and "leave-one-subject-out" not in caption
    if shutil.which("pdflatex"):
        doc = tmp_path / "tables" / "doc.tex"
        doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}"
                       + "".join(f"\\input{{{p.name}}}" for p in tex if "casme2" in p.name) + "\\end{document}")
        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=doc.parent,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-2000:]


def _one(results: Path, key: str, method: str, selection: str, hp: dict, seed: int = 1, extra: dict | None = None) -> None:
    """One record of ``key`` (fabricated predictions, the real record writer)."""
    from test_exports import _cache

    evaluation = evaluation_of(key)
    rng = np.random.default_rng(seed)
    rows = [{"sample_id": f"{r}/{s}/{c}", "subject": f"{r}/{s:02d}", "fold": 0 if evaluation.kind == "transfer" else s, "emotion": "x",
             "objective_class": 1, **{f"{k}_AU{a}": v for a in evaluation.aus
                                      for k, v in zip(("prob", "pred", "true", "known"), (0.7, 1, int(rng.random() < 0.5), True))}}
            for r in evaluation.test_releases for s in range(4) for c in range(6)]
    stem = results / "runs" / key / method / f"{selection}-{seed}" / "seed1"
    write_run(stem, pd.DataFrame(rows), method=method, dataset=key, aus=evaluation.aus, hparams=hp, seed=seed, selection=selection,
              cache_path=[_cache(results.parent, r) for r in evaluation.releases], device="cpu", duration_s=1.0, extra=extra)


def test_a_configuration_chosen_with_a_releases_labels_is_a_copy_under_every_protocol_that_tests_there(tmp_path):
    """A SAMM search's deployment configuration re-run as a transfer to SAMM or in a composite with
    SAMM, and a CASME II → SAMM search's choice (made on CASME II) re-run under LOSO on CASME II, are
    copies (not ranked); the same configuration tested on a release whose labels did not choose it is not."""
    from suite.leaderboard.records import load_records

    results = tmp_path / "results"
    chosen = {"lr": 0.003, "lambda_gd": 0.5}
    other = {"lr": 0.004, "lambda_gd": 0.2}
    _one(results, "samm", "micro_au_clip", "deployment", chosen, extra={"search": "s"})
    _one(results, "casme2-to-samm", "micro_au_clip", "strict_nested", other, extra={"search": "t"})
    for i, (key, hp) in enumerate((("casme2-to-samm", chosen), ("casme2+samm", chosen), ("casme2", chosen), ("casme2", other), ("samm", other))):
        _one(results, key, "micro_au_clip", "inner_validation", hp, seed=10 + i)
    labels = {(r["dataset"], json.dumps(r["hparams"], sort_keys=True)): r["selection"] for r in load_records(results)
              if r.get("search") is None}
    assert labels == {("casme2-to-samm", json.dumps(chosen, sort_keys=True)): "deployment_copy",  # tested on SAMM, chosen by SAMM
                      ("casme2+samm", json.dumps(chosen, sort_keys=True)): "deployment_copy",
                      ("casme2", json.dumps(chosen, sort_keys=True)): "inner_validation",  # CASME II's labels did not choose it
                      ("casme2", json.dumps(other, sort_keys=True)): "deployment_copy",  # the transfer chose it on CASME II
                      ("samm", json.dumps(other, sort_keys=True)): "inner_validation"}


def test_composite_parts_keep_their_own_subjects_and_unknown_releases_do_not_break_the_page(tmp_path):
    from suite.leaderboard import render
    from suite.leaderboard.table import cross_sections
    from suite.leaderboard.records import load_records

    results = tmp_path / "results"
    _one(results, "casme2+samm", "constant", "inner_validation", {"lr": 0.001})
    gone = json.loads(next(results.rglob("seed1.json")).read_text()) | {"dataset": "retired_release"}
    (results / "runs" / "retired.json").write_text(json.dumps(gone))
    records = load_records(results)
    assert [r["dataset"] for r in records] == ["casme2+samm"]  # the retired release's record is not shown
    first, second = (cross_sections(records)[0]["views"][0]["rows"][0].cells for _ in range(2))
    for cells in (first, second):
        assert cells["casme2+samm"].counts.shape[1] == 8 and cells["casme2+samm@casme2"].counts.shape[1] == 4
    assert (first["casme2+samm@samm"].lo, first["casme2+samm@samm"].hi) == (second["casme2+samm@samm"].lo, second["casme2+samm@samm"].hi)
    assert render(results).exists()
