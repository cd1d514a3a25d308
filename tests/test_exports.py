"""The paper exports (``suite.leaderboard.export``): every warning and label of the page in their
captions, and LaTeX tables that fit a one-column ``article`` page (pdflatex, no overfull box)."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from suite.aus import DATASET_AUS
from suite.leaderboard.export import export
from suite.leaderboard.table import chose_with, measured_views
from suite.results import write_run
from suite.stats import TOO_FEW_SUBJECTS

MAIN_JOB = {"micro_au_clip": 0.62, "clip_global": 0.45, "prior": 0.30, "constant": 0.22}  # the main job's methods, detection skill


def _frame(dataset: str, skill: float, seed: int, subjects: int = 6, clips: int = 12) -> pd.DataFrame:
    """Predictions of one run: ``skill`` the share of clips a model gets right beyond chance."""
    rng = np.random.default_rng([seed, int(100 * skill), len(dataset)])
    rows = []
    for s in range(subjects):
        for c in range(clips):
            row = {"sample_id": f"{dataset}-{s}-{c}", "subject": f"s{s:02d}", "fold": s,
                   "emotion": "happiness" if dataset == "casme2" else "Happiness", "objective_class": 1 + c % 7}
            for a in DATASET_AUS[dataset]:
                true = int(rng.random() < 0.3)
                pred = true if rng.random() < skill else int(rng.random() < 0.3)
                row.update({f"prob_AU{a}": float(pred), f"pred_AU{a}": pred, f"true_AU{a}": true, f"known_AU{a}": bool(rng.random() < 0.95)})
            rows.append(row)
    return pd.DataFrame(rows)


def _cache(tmp: Path, dataset: str) -> Path:
    """A dataset cache's ``meta.json`` next to a synthetic release (its generator's ``truth/spec.json``)."""
    root = tmp / "data" / dataset / "release"
    (root.parent / "truth").mkdir(parents=True, exist_ok=True)
    (root.parent / "truth" / "spec.json").write_text(json.dumps({"seed": 3, "scale": "small"}))
    cache = tmp / "cache" / dataset
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "meta.json").write_text(json.dumps({"dataset": dataset, "root": str(root), "sheet": str(root / "labels.xlsx"),
                                                "fingerprint": f"fp-{dataset}"}))
    return cache


def write_main_job(results: Path, metric: dict | None = None) -> Path:
    """The records ``python -m suite.search --space gsd`` leaves (fabricated predictions, real
    record writer): micro_au_clip's strictly nested search (its search seed and 3 final seeds) and
    the baselines constant, prior and clip_global with inner-validation selection, on CASME II and
    SAMM. ``metric``: method → the F1 variant it chose with (default binary)."""
    metric = metric or {}
    for dataset in ("casme2", "samm"):
        cache = _cache(results.parent, dataset)
        for method, skill in MAIN_JOB.items():
            hp = {"lr": 1e-3, "metric": metric.get(method, "binary")}
            if method == "micro_au_clip":
                stems = [(results / "searches" / "gsd" / dataset / "strict_nested", 0, "search")]
                stems += [(results / "searches" / "gsd" / dataset / "final" / "strict_nested" / f"seed{s}", s, "final") for s in (1, 2, 3)]
                selection, extra = "strict_nested", {"search": "gsd"}
            else:
                stems = [(results / "runs" / dataset / method / "cfg0" / f"seed{s}", s, None) for s in (1, 2, 3)]
                selection, extra = "inner_validation", {}
            for stem, seed, role in stems:
                stem.parent.mkdir(parents=True, exist_ok=True)
                write_run(stem, _frame(dataset, skill, seed), method=method, dataset=dataset, aus=DATASET_AUS[dataset], hparams=hp,
                          seed=seed, selection=selection, cache_path=cache, device="cpu", duration_s=1.0,
                          extra={**extra, **({"seed_role": role} if role else {})})
    return results


@pytest.fixture(scope="module")
def main_job(tmp_path_factory) -> Path:
    return write_main_job(tmp_path_factory.mktemp("main-job") / "results")


@pytest.fixture(scope="module")
def mixed_job(tmp_path_factory) -> Path:
    """The main job with one baseline that chose with macro F1."""
    return write_main_job(tmp_path_factory.mktemp("mixed-job") / "results", {"clip_global": "macro"})


def _caption(tex: str) -> str:
    return re.search(r"\\caption\{(.*?)\}\n\\label", tex, re.S).group(1)


def test_captions_carry_the_pages_warnings_for_a_macro_chosen_row(mixed_job, tmp_path):
    """clip_global chose with macro F1: in the binary tables the page labels its row "(chose with
    macro F1)" and says the records chose with different variants; every export says the same
    (LaTeX and Markdown in their captions, CSV in its warnings column), as does the page."""
    from suite.leaderboard import render
    from suite.leaderboard.export import tex
    from suite.leaderboard.table import MIXED_METRICS_NOTE

    _, _, _, views, _ = measured_views(mixed_job)
    binary = next(v for v in views if v["variant"] == "binary")
    rows = {r.method: r for r in binary["rows"]}
    warning = chose_with(rows["clip_global"], "binary")
    assert warning == "chose with macro F1" and not any(chose_with(r, "binary") for m, r in rows.items() if m != "clip_global")
    html = render(mixed_job).read_text()
    assert f"({warning})" in html and MIXED_METRICS_NOTE in html  # what the page shows, from the same source

    detection, per_au = export(mixed_job, "latex", tmp_path / "t.tex", "binary")
    for path in (detection, per_au):
        cap = _caption(path.read_text())
        assert tex(warning) in cap and r"clip\_global" in cap and tex(MIXED_METRICS_NOTE[1:]) in cap, cap
        assert "not comparable with published results" in cap and "binary F1 (positive class)" in cap
    [line] = [x for x in detection.read_text().splitlines() if x.startswith(r"clip\_global &")]
    assert line.split(" & ")[1] == r"inner-val.$^\dagger$"
    assert sum(r"$^\dagger$" in x for x in detection.read_text().split(r"\midrule")[1].splitlines()) == 1  # that row only

    for path in export(mixed_job, "md", tmp_path / "t.md", "binary"):
        cap, table = path.read_text().split("\n\n", 1)
        assert warning in cap and "clip_global" in cap and MIXED_METRICS_NOTE[1:] in cap and "not comparable with published results" in cap
    [line] = [x for x in (tmp_path / "t.md").read_text().splitlines() if x.startswith("| clip_global ")]
    assert "| fixed configuration; epochs and thresholds on inner-validation subjects (chose with macro F1) |" in line

    detection, per_au = (pd.read_csv(p, keep_default_na=False) for p in export(mixed_job, "csv", tmp_path / "t.csv", "binary"))
    for frame in (detection, per_au):
        for method, text in zip(frame["method"], frame["warnings"]):
            assert (warning in text) == (method == "clip_global") and "not comparable with published results" in text
    # what each interval is, as the page's legend says it (here: too few subjects, marked on the page)
    ci_notes = {n for c in detection.columns if c.endswith(" CI") for n in detection[c] if n}
    assert ci_notes and all(n.startswith(TOO_FEW_SUBJECTS) or n.startswith("95 % subject-bootstrap interval") for n in ci_notes), ci_notes

    # the macro tables label the other rows, which chose with binary F1
    cap = _caption(export(mixed_job, "latex", tmp_path / "m.tex", "macro")[0].read_text())
    assert all(f"{tex(m)}, chose with binary F1" in cap for m in ("micro_au_clip", "prior", "constant")) and r"clip\_global," not in cap


PDFLATEX = shutil.which("pdflatex")


@pytest.mark.skipif(PDFLATEX is None, reason="pdflatex not installed (Debian texlive-latex-recommended; .ci/run installs it)")
def test_latex_export_of_the_main_job_fits_a_one_column_article(main_job, mixed_job, tmp_path):
    """``python -m suite.leaderboard --format latex`` on the main job's records, both variants (and
    a row marked for its F1 variant), ``\\input`` into a bare ``article`` with booktabs: it compiles,
    every tabular is at most ``\\textwidth`` wide and the log has no overfull box."""
    from suite.leaderboard.__main__ import main

    files = []
    for variant in ("binary", "macro"):
        out = tmp_path / f"main-{variant}.tex"
        assert main(["--results", str(main_job), "--format", "latex", "--variant", variant, "--out", str(out)]) == 0
        files += [out, out.with_name(out.stem + "-per-au.tex")]
    files += export(mixed_job, "latex", tmp_path / "mixed.tex", "binary")
    measures = []
    for f in files:  # each tabular (with its table's column gap) boxed alone: its natural width
        text = f.read_text()
        sep = "".join(re.findall(r"\\setlength\{\\tabcolsep\}\{[^}]*\}", text))
        [tab] = re.findall(r"^\\begin\{tabular\}.*?^\\end\{tabular\}", text, re.S | re.M)
        measures.append(rf"\begin{{lrbox}}{{\tb}}{sep}{tab}\end{{lrbox}}\typeout{{WIDTH {f.name} \the\wd\tb}}")
    doc = "\n".join([r"\documentclass{article}", r"\usepackage{booktabs}", r"\newsavebox\tb", r"\begin{document}",
                     r"\typeout{TEXTWIDTH \the\textwidth}", *measures, *(rf"\input{{{f.name}}}" + "\n\\clearpage" for f in files),
                     r"\end{document}", ""])
    (tmp_path / "paper.tex").write_text(doc)
    proc = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    log = (tmp_path / "paper.log").read_text(errors="replace")
    assert proc.returncode == 0 and (tmp_path / "paper.pdf").exists(), log[-3000:]
    assert "Overfull \\hbox" not in log, [x for x in log.splitlines() if "Overfull" in x]
    text_width = float(re.search(r"^TEXTWIDTH ([\d.]+)pt", log, re.M).group(1))
    widths = {m[0]: float(m[1]) for m in re.findall(r"^WIDTH (\S+) ([\d.]+)pt", log, re.M)}
    assert len(widths) == len(files) and max(widths.values()) <= text_width, (text_width, widths)
