"""`python -m suite.bench`: every row measured, ratios consistent with the rows, trial packing run
through the real search. (Figures themselves are machine-dependent; docs/benchmarks.md has them.)"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_writes_a_consistent_report(synthetic, tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "MICRO_AU_RESULTS": str(tmp_path / "results")}
    proc = subprocess.run([sys.executable, "-m", "suite.bench", "--data-root", str(synthetic / "CASME2"), "--epochs", "1",
                           "--packing", "2", "--packing-trials", "2", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    rows, ratios = report["rows"], report["ratios"]
    assert set(rows) == {"suite full", "peer full", "suite frozen", "suite frozen, cached", "peer frozen",
                         "trial, sequential engine", "trial, batched engine", "trial, peer"}
    assert all(r["seconds"] > 0 for r in rows.values())
    full = rows["suite full"]
    assert full["images"] > 0 and full["backbone_gflop_per_image"] > 0 and full["matmul_tflops"] > 0
    assert full["floor_seconds"] == pytest.approx(full["backbone_gflop_per_image"] * 1e9 * full["images"] / (full["matmul_tflops"] * 1e12))
    assert ratios["full: peer / suite"] == pytest.approx(rows["peer full"]["seconds"] / full["seconds"])
    assert ratios["per trial: full / frozen, cached"] == pytest.approx(full["seconds"] / rows["suite frozen, cached"]["seconds"])
    assert ratios["trial: sequential / batched engine"] == pytest.approx(
        rows["trial, sequential engine"]["seconds"] / rows["trial, batched engine"]["seconds"])
    one, two = report["trial_packing"]
    assert (one["per_device"], two["per_device"]) == (1, 2) and one["trials"] == two["trials"] == 2
    assert ratios["trials/hour: 2 per device / 1"] == pytest.approx(two["trials_per_hour"] / one["trials_per_hour"])
    assert report["n_samples"] == 24 and "torch" in report["versions"]
    assert str(out) in proc.stdout


def test_nested_search_bench_times_the_rounds_and_compares_the_same_configurations(synthetic, tmp_path):
    """--nested-search: the search's rounds without Ray (Optuna's ask/tell included), the batched
    engine for every slice, then the sequential engine on the same first configurations."""
    out = tmp_path / "nested.json"
    env = {**os.environ, "MICRO_AU_RESULTS": str(tmp_path / "results")}
    proc = subprocess.run([sys.executable, "-m", "suite.bench", "--data-root", str(synthetic / "CASME2"), "--epochs", "1",
                           "--nested-search", "3", "--round-size", "2", "--sequential-configs", "2", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    batched, sequential = report["nested_search"]["batched"], report["nested_search"]["sequential"]
    assert (batched["engine"], sequential["engine"]) == ("batched", "sequential")
    assert batched["configurations"] == len(batched["slice_seconds"]) == len(batched["proposals"]) == 3
    assert sequential["proposals"] == batched["proposals"][:2]  # the same configurations, compared slice by slice
    assert batched["seconds"] == pytest.approx(batched["slices_seconds"] + batched["outside_slices_seconds"])
    assert batched["outside_slices_seconds"] > 0  # Optuna's ask/tell and the journal, reported apart
    [ratio] = report["ratios"].values()
    assert ratio == pytest.approx(sum(sequential["slice_seconds"]) / sum(batched["slice_seconds"][:2]))
    assert "outside them (Optuna ask/tell" in proc.stdout and str(out) in proc.stdout


def test_trial_packing_runs_trial_processes_without_ray(synthetic, tmp_path):
    """--trial-packing: the search's first round with 1 and with K worker processes started as Ray
    starts packed trials, where Ray cannot be imported (as on the borrowed GPU machines)."""
    no_ray = tmp_path / "no_ray" / "ray"
    no_ray.mkdir(parents=True)
    (no_ray / "__init__.py").write_text("raise ImportError('Ray is not installed here')\n")
    out = tmp_path / "packing.json"
    env = {**os.environ, "MICRO_AU_RESULTS": str(tmp_path / "results"),
           "PYTHONPATH": os.pathsep.join([str(no_ray.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "suite.bench", "--data-root", str(synthetic / "CASME2"), "--epochs", "1",
                           "--trial-packing", "2", "--packing-trials", "2", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    one, two = report["trial_packing"]
    assert (one["per_device"], two["per_device"]) == (1, 2) and one["trials"] == two["trials"] == 2
    assert one["engine"] == two["engine"] == "batched"
    # the slices ran in worker processes, never in the bench's own: one worker, then at most two
    assert report["bench_pid"] not in one["worker_pids"] + two["worker_pids"]
    assert len(one["worker_pids"]) == 1 and 1 <= len(two["worker_pids"]) <= 2
    assert report["ratios"]["trials/hour: 2 processes per device / 1"] == pytest.approx(two["trials_per_hour"] / one["trials_per_hour"])
    assert "trials/hour" in proc.stdout and str(out) in proc.stdout
