"""The leaderboard page: every number recomputed from the records, escaping, fingerprint flags,
the empty page, and a headless Chromium render (no console errors, a non-blank table)."""
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from suite.leaderboard import render
from suite.results import write_json

EVIL = "<script>alert(1)</script>"


SYNTHETIC = {"kind": "synthetic", "seed": 0, "scale": "small", "fingerprint": "fp-a", "root": "/r", "label_file": "x.xlsx"}
RELEASE = {"kind": "release", "root": "/data/CASME2", "label_file": "CASME2-coding-20190701.xlsx", "label_sha256": "ab" * 32,
           "fingerprint": "fp-a"}
WEIGHTS = {"kind": "weights", "clip_model": "ViT-B-16", "weights": "/w/vitb16.pt", "weights_sha256": "cd" * 32,
           "label": "ViT-B-16, weights vitb16.pt"}


def _record(method, dataset, seed, f1, fold_mean, fingerprint="fp-a", config="cfg1", selection="fixed_epochs", data=SYNTHETIC,
            backbone=WEIGHTS, **extra):
    aus = ["AU1", "AU2", "AU4", "AU7", "AU12", "AU14", "AU15", "AU17"] if dataset == "casme2" else ["AU2", "AU4", "AU7", "AU12"]
    return {"method": method, "dataset": dataset, "aus": aus, "hparams": extra.pop("hparams", {"lr": 0.001, "note": EVIL}), "seed": seed,
            "protocol": "loso", "selection": selection, "f1_avg": f1, "f1_fold_mean": fold_mean,
            "per_au_f1": {a: f1 for a in aus}, "per_au_auc": {a: 0.5 for a in aus},
            "mer": {"objective": {"uf1": f1 / 2, "uar": 0.3, "wf1": 0.4, "accuracy": 0.5, "n": 10}},
            "n_samples": 10, "duration_s": 1.0, "device": "cpu (2 threads)", "versions": {"torch": "x"}, "git_commit": "abc",
            "data_fingerprint": fingerprint, "source": "measured", "predictions": "none", "command": f"python -m suite.train --method {method}",
            "schema": 2, "data": {**data, "fingerprint": fingerprint}, "backbone": backbone, "created": "2026-11-30T12:00:00+00:00", **extra}


@pytest.fixture
def results(tmp_path):
    recs = [
        ("micro_au_clip", "casme2", 0, 0.50, 0.40), ("micro_au_clip", "casme2", 1, 0.60, 0.44), ("micro_au_clip", "samm", 0, 0.55, 0.50),
        ("constant", "casme2", 0, 0.29, 0.27), ("constant", "samm", 0, 0.42, 0.41),
        (EVIL, "casme2", 0, 0.10, 0.10),
        ("micro_au_clip_no_pta", "casme2", 0, 0.33, 0.30),
    ]
    for method, dataset, seed, f1, fm in recs:
        write_json(tmp_path / "runs" / dataset / method.replace("/", "_") / "cfg1" / f"seed{seed}.json",
                   _record(method, dataset, seed, f1, fm))
    # Same dataset, other data: must be flagged, not averaged.
    write_json(tmp_path / "runs" / "casme2" / "micro_au_clip" / "cfg9" / "seed0.json",
               _record("micro_au_clip", "casme2", 0, 0.99, 0.99, fingerprint="fp-other", config="cfg9"))
    return tmp_path


class Tables(HTMLParser):
    """Collects table rows as lists of (text, attrs) per cell, by table id."""

    def __init__(self):
        super().__init__()
        self.tables, self.current, self.row, self.cell, self.scripts, self._in_script = {}, None, None, None, [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.current = attrs.get("id", f"t{len(self.tables)}")
            self.tables[self.current] = []
        elif tag == "tr" and self.current:
            self.row = {"class": attrs.get("class", ""), "cells": []}
            self.tables[self.current].append(self.row)
        elif tag in ("td", "th") and self.row is not None:
            self.cell = [attrs, ""]
            self.row["cells"].append(self.cell)
        elif tag == "script":
            self._in_script = True
            self.scripts.append([attrs, ""])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.cell = None
        elif tag == "table":
            self.current = None
        elif tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1][1] += data
        elif self.cell is not None:
            self.cell[1] += data


def _parse(path):
    p = Tables()
    p.feed(Path(path).read_text())
    return p


def test_numbers_equal_recomputation_from_records(results):
    page = _parse(render(results))
    rows = [r for r in page.tables["detection"] if r["class"] == "measured"]
    by_method = {r["cells"][0][1].strip(): r for r in rows}
    for method in ("micro_au_clip", "constant", EVIL):
        recs = [json.loads(p.read_text()) for p in (results / "runs").glob(f"*/{method.replace('/', '_')}/cfg1/seed*.json")]
        assert recs
        cells = by_method[method]["cells"]
        for col, dataset in ((3, "casme2"), (6, "samm")):
            vals = np.array([r["f1_avg"] for r in recs if r["dataset"] == dataset]) * 100
            if len(vals) > 1:  # sd over seeds; with one seed none is shown (undefined, not zero)
                assert cells[col][1].strip() == f"{vals.mean():.1f} ± {vals.std(ddof=1):.1f}"
            if len(vals) == 1:
                assert cells[col][1].strip() == f"{vals.mean():.1f}"
            if len(vals):
                assert cells[col + 1][1].strip() == str(len(vals))
                fold = np.mean([r["f1_fold_mean"] for r in recs if r["dataset"] == dataset]) * 100
                assert cells[col + 2][1].strip() == f"{fold:.1f}"
            else:
                assert cells[col][1].strip() == "–"
    # micro_au_clip: average of the two dataset means; best in both columns, bold.
    mac = by_method["micro_au_clip"]["cells"]
    assert mac[9][1].strip() == f"{np.mean([55.0, 55.0]):.1f}"
    assert mac[3][0]["class"] == "best" and by_method["constant"]["cells"][6][0]["class"] == "second"
    assert mac[10][1].strip() == "1.0" and by_method["micro_au_clip"] is rows[0]  # pre-sorted by rank
    # the flagged record (0.99) is not averaged in
    assert "99.0" not in mac[3][1]


def test_one_ranked_row_per_method_optimistic_and_legacy_rows_apart(results):
    """A strictly nested search is the method's headline row; its untuned single run, the
    test-selected and deployment rows and legacy records appear only in their own unranked tables."""
    search = results / "searches" / "gsd" / "casme2"
    write_json(search / "final" / "strict_nested" / "seed1.json",
               _record("micro_au_clip", "casme2", 1, 0.40, 0.3, selection="strict_nested", search="gsd", seed_role="final"))
    write_json(search / "strict_nested.json",
               _record("micro_au_clip", "casme2", 0, 0.45, 0.3, selection="strict_nested", search="gsd", seed_role="search"))
    write_json(search / "selected_on_test_folds.json",
               _record("micro_au_clip", "casme2", 0, 0.70, 0.3, selection="selected_on_test_folds", search="gsd",
                       hparams={"lr": 0.005, "selection": "inner"}))
    write_json(search / "selected_per_test_fold.json",
               _record("micro_au_clip", "casme2", 0, 0.75, 0.3, selection="selected_per_test_fold", search="gsd"))
    deployed = {"lr": 0.0123456, "gda_layers": 2}
    write_json(search / "final" / "deployment" / "seed1.json",
               _record("micro_au_clip", "casme2", 1, 0.65, 0.3, selection="deployment", search="gsd", seed_role="final",
                       hparams={**deployed, "selection": "inner"}))
    # the deployment configuration typed by hand into suite.train from the summary's printed values (3 significant
    # digits) with fixed epochs: a copy, not an independent configuration
    write_json(results / "runs" / "casme2" / "micro_au_clip" / "cfgC" / "seed0.json",
               _record("micro_au_clip", "casme2", 0, 0.66, 0.3, selection="fixed_epochs", hparams={**deployed, "lr": 0.0123, "selection": "fixed"}))
    old = _record("micro_au_clip", "casme2", 0, 0.80, 0.3, selection="nested", search="old")
    del old["schema"]
    write_json(results / "searches" / "old" / "casme2" / "nested.json", old)
    page = _parse(render(results))
    ranked = [r for r in page.tables["detection"] if r["class"] == "measured"]
    [mac] = [r for r in ranked if r["cells"][0][1].strip() == "micro_au_clip"]
    assert mac["cells"][1][1].strip() == "strictly nested search" and mac["cells"][2][1].strip() == "gsd"
    assert mac["cells"][3][1].strip() == "40.0"  # the final seed only; the search-seed record is not averaged in
    others = page.tables["detection-other"]
    assert any(r["cells"][0][1].strip() == "micro_au_clip" and "fixed configuration" in r["cells"][1][1] for r in others[1:])
    assert page.tables["detection-selected_on_test_folds"][1]["cells"][3][1].strip() == "70.0"
    assert page.tables["detection-deployment"][1]["cells"][3][1].strip() == "65.0"
    assert page.tables["detection-selected_per_test_fold"][1]["cells"][3][1].strip() == "75.0"
    [copy] = page.tables["detection-deployment_copy"][1:]
    assert copy["cells"][3][1].strip() == "66.0" and "chose with every subject's labels, re-run" in copy["cells"][1][1]
    assert not any("66.0" == c[1].strip() for r in others for c in r["cells"])
    [legacy] = page.tables["detection-legacy"][1:]
    assert "shared search" in legacy["cells"][1][1] and legacy["cells"][3][1].strip() == "80.0"
    assert not any(c[1].strip() in ("70.0", "75.0", "65.0", "66.0", "80.0") for r in ranked for c in r["cells"])


def test_text_from_records_is_escaped_and_json_embedded(results):
    html = render(results).read_text()
    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    page = _parse(results / "leaderboard.html")
    [data] = [text for attrs, text in page.scripts if attrs.get("id") == "leaderboard-data"]
    payload = json.loads(data)
    assert {row["method"] for row in payload["detection"]["binary"]} >= {"micro_au_clip", "constant", EVIL}
    assert any(r["method"] == "Micro-AU CLIP" and r["value"] == 78.2 for r in payload["reported"])


def test_reported_rows_flags_and_sections(results):
    html = render(results).read_text()
    page = _parse(results / "leaderboard.html")
    reported = [r for r in page.tables["reported"] if r["class"] == "reported"]
    assert not [r for r in page.tables["detection"] if r["class"] == "reported"]  # apart from the measured rows
    assert any("78.2" in c[1] for r in reported for c in r["cells"]) and any("Wei et al." in c[1] for r in reported for c in r["cells"])
    assert "Flagged records" in html and "fp-other"[:16] in html and "cfg9" in html
    assert "Micro-AU CLIP ablations" in html and "micro_au_clip_no_pta" in html
    assert "Emotion-label-free recognition" in html and "python -m suite.train --method micro_au_clip" in html
    provenance = html.split("<h2>Protocol and provenance</h2>")[1]  # names the kept records' data, not the flagged one's
    assert "CASME II: synthetic release (generator seed 0, small scale), fingerprint fp-a" in provenance
    assert "fp-other" not in provenance


def test_empty_results_explain_how_to_produce_records(tmp_path):
    html = render(tmp_path).read_text()
    assert "No records yet" in html and "python -m suite.search --space gsd" in html


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0"]


def _chromium(page: Path, tmp_path: Path, shot: Path):
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1300,1600",
                           f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)


def _dump_dom(page: Path, tmp_path: Path, fragment: str = "") -> str:
    """The page's DOM after its scripts ran, as headless Chromium has it."""
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri() + fragment],
                          capture_output=True, text=True, timeout=120).stdout


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (.ci/run installs it)")
def test_chromium_renders_table_without_console_errors(results, tmp_path):
    import cv2

    # The detector must see a real console error, or its silence means nothing.
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    assert _console_errors(_chromium(broken, tmp_path, tmp_path / "broken.png").stderr)
    page = render(results)
    shot = tmp_path / "page.png"
    proc = _chromium(page, tmp_path, shot)
    assert shot.exists(), proc.stderr[-2000:]
    assert not _console_errors(proc.stderr)
    img = cv2.imread(str(shot))
    table_area = img[150:600, 30:1200]  # the detection table sits below the title
    assert (table_area < 200).any(axis=2).mean() > 0.02  # text and borders, not a blank page
    # the banner, as the browser shows it: on for synthetic data, off for a real release with real weights
    assert 'class="banner"' in _dump_dom(page, tmp_path)
    real = tmp_path / "real"
    write_json(real / "runs" / "casme2" / "m" / "cfg1" / "seed0.json", _record("m", "casme2", 0, 0.5, 0.4, data=RELEASE))
    dom = _dump_dom(render(real), tmp_path)
    assert 'class="banner"' not in dom and "CASME2-coding-20190701.xlsx, sha256 abababababab" in dom and "ViT-B-16, weights vitb16.pt" in dom
    # the F1 variant switch, as the browser runs it: the page opens on binary; #macro shows macro only
    for view, shown in (("", "binary"), ("#macro", "macro")):
        dom = _dump_dom(page, tmp_path, view)
        sections = dict(re.findall(r'<section class="variant" data-variant="(\w+)"( hidden(?:="")?)?>', dom))
        assert sections == {v: ("" if v == shown else sections[v]) for v in ("binary", "macro")} and sections[shown] == ""
        assert all(sections[v] for v in sections if v != shown)


def test_intervals_variants_and_paired_tests_recompute_from_predictions(synthetic, tmp_path):
    """Real runs: every cell's bracket is the subject bootstrap of its predictions, both F1
    variants have their own labelled table, and the paired test compares micro_au_clip with the
    constant floor on the same seeds."""
    import pandas as pd

    from suite.leaderboard.export import export
    from suite.runs import run
    from suite.stats import bootstrap_interval, holm, interval_reliable, paired_test, subject_counts

    fast = {"epochs": "2", "batch_size": "8", "selection": "inner"}
    paths = {m: run(m, "casme2", synthetic / "CASME2", fast, 2, results=tmp_path, log=None) for m in ("micro_au_clip", "constant")}
    page = _parse(render(tmp_path))
    html = (tmp_path / "leaderboard.html").read_text()
    assert 'data-variant="macro" hidden' in html and ">binary F1 (positive class) — headline<" in html
    from suite.stats import TOO_FEW_SUBJECTS

    # the F1 columns' tooltips say what the intervals are, as the legend does (4 subjects: too few)
    titles = re.findall(r'<th data-type="num" title="([^"]*pooled over folds[^"]*)">CASME II', html)
    assert len(titles) == 2 and all(TOO_FEW_SUBJECTS in t for t in titles), [t[:60] for t in titles]  # one table per variant
    counts = {}
    for variant, table in (("binary", "detection"), ("macro", "detection-macro")):
        header = [c[1] for c in page.tables[table][0]["cells"]]
        assert f"CASME II {variant} F1" in header
        rows = {r["cells"][0][1].strip(): r for r in page.tables[table] if r["class"] == "measured"}
        for method, recs in paths.items():
            frames = [pd.read_parquet(p.with_name(json.loads(p.read_text())["predictions"])) for p in recs]
            counts[method] = np.stack([subject_counts(f, (1, 2, 4, 7, 12, 14, 15, 17))[1] for f in frames])
            f1 = np.array([json.loads(p.read_text())["f1"][variant]["pooled"] for p in recs]) * 100
            lo, hi = (100 * x for x in bootstrap_interval(counts[method], variant))
            few = "" if interval_reliable(counts[method].shape[1]) else "*"  # 4 subjects here: marked too few for a reliable interval
            assert few == "*" and rows[method]["cells"][3][1].strip() == f"{f1.mean():.1f} ± {f1.std(ddof=1):.1f} [{lo:.1f}, {hi:.1f}]{few}"
        # the paper exports carry the page's numbers: LaTeX as printed, CSV as numbers
        tex = export(tmp_path, "latex", tmp_path / "t.tex", variant)[0].read_text()
        assert variant + " F1" in tex and r"\toprule" in tex and "not comparable with published results" in tex
        csv = pd.read_csv(tmp_path / "t.csv") if export(tmp_path, "csv", tmp_path / "t.csv", variant) else None
        for method in paths:
            text = rows[method]["cells"][3][1].strip()
            main, ci = text.split(" [")  # LaTeX: the interval on a second line of the cell (tests/test_exports.py)
            assert main.replace(" ± ", r" $\pm$ ") in tex and f"[{ci}" in tex
            mean, sd = (float(x) for x in text.split(" [")[0].split(" ± "))
            got = csv[csv["method"] == method].iloc[0]
            assert (got["CASME II F1"], got["CASME II sd"]) == (mean, sd)
        [paired] = page.tables["paired" + ("" if variant == "binary" else "-macro")][1:]
        expected = paired_test(counts["micro_au_clip"], counts["constant"], variant)
        assert [c[1].strip() for c in paired["cells"][:2]] == ["CASME II", "constant"]
        assert paired["cells"][3][1] == f"{100 * expected['difference']:+.1f}" and paired["cells"][4][1] == f"{expected['p']:.4f}"
        assert paired["cells"][5][1].startswith(f"{holm([expected['p']])[0]:.4f}") and paired["cells"][6][1] == "yes"
    reported = [r for r in page.tables["reported"] if r["class"] == "reported"]
    assert any(r["cells"][4][1].startswith("macro") for r in reported) and any(r["cells"][4][1].startswith("unknown") for r in reported)


def test_shared_study_plots_follow_the_studys_direction(tmp_path, monkeypatch):
    """F1 is maximised: the optimization history draws the best value so far, and the importances
    rank the parameter that decides a *high* F1 first (a custom target would make Optuna's
    PED-ANOVA rank the parameters by how they reach low values)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from suite.leaderboard import figures as leaderboard_figures

    journal = tmp_path / "optuna.journal"
    study = optuna.create_study(study_name="shared", direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0),
                                storage=JournalStorage(JournalFileBackend(str(journal))))
    study.optimize(lambda t: float(t.suggest_float("decisive", 0, 1) > 0.8) + 0.01 * t.suggest_float("noise", 0, 1), n_trials=60)
    figures = []
    monkeypatch.setattr(leaderboard_figures, "_png", lambda fig: figures.append(fig) or str(len(figures) - 1))
    plots = {p["title"]: figures[int(p["png"])] for p in leaderboard_figures.optuna_plots(journal)}
    history = plots["optimization history"].axes[0]
    assert "Best Value" in [t.get_text() for t in history.get_legend().get_texts()]
    importances = plots["parameter importances"].axes[0]
    width = dict(zip((t.get_text() for t in importances.get_yticklabels()), (b.get_width() for b in importances.patches)))
    assert width["decisive"] > width["noise"], width

