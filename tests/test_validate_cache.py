"""`suite.data validate` JSON, the Arrow cache (hits and rebuilds), and the generator calibration."""
import json
import shutil
from collections import Counter

import numpy as np
import pytest

from suite.aus import DATASET_AUS
from suite.data import build_cache, load_cache, read_release
from suite.data.__main__ import main as data_cli


@pytest.mark.parametrize("dataset, folder", [("casme2", "CASME2"), ("samm", "SAMM")])
def test_validate_json(synthetic, capsys, dataset, folder):
    assert data_cli(["validate", "--dataset", dataset, "--root", str(synthetic / folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"dataset", "samples", "subjects", "au_counts", "problems"} <= set(out)
    truth = [json.loads(line) for line in open(synthetic / "truth" / f"{dataset}.jsonl")]
    counts = Counter(a for t in truth for a in t["aus"] if a not in t["aus_unknown"])  # known present
    assert out["samples"] == len(truth) and out["subjects"] == len({t["subject"] for t in truth})
    assert out["au_counts"] == {f"AU{a}": counts.get(a, 0) for a in DATASET_AUS[dataset]}
    assert out["au_labels_unknown"] == {f"AU{a}": sum(a in t["aus_unknown"] for t in truth) for a in DATASET_AUS[dataset]}
    assert all({"row", "clip", "problem", "action"} <= set(p) for p in out["problems"])


def test_annotations_only_needs_no_frames(release_copy, capsys):
    root = release_copy("samm")
    shutil.rmtree(root / "SAMM")
    assert data_cli(["validate", "--dataset", "samm", "--root", str(root), "--annotations-only", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 24
    assert data_cli(["validate", "--dataset", "samm", "--root", str(root)]) == 1  # frames missing


def test_cache_hit_and_rebuilds(release_copy, tmp_path, capsys):
    root = release_copy("casme2")
    cache = tmp_path / "cache"
    args = ["build", "--dataset", "casme2", "--root", str(root), "--cache-dir", str(cache)]
    assert data_cli(args) == 0 and capsys.readouterr().out.startswith("built:")
    assert data_cli(args) == 0 and capsys.readouterr().out.startswith("cache hit:")
    assert data_cli(args + ["--image-size", "64"]) == 0 and capsys.readouterr().out.startswith("built:")
    assert data_cli(args + ["--ref", "drop"]) == 0 and capsys.readouterr().out.startswith("built:")
    # A changed frame file changes the fingerprint.
    s = read_release("casme2", root).samples[0]
    s.apex_path.write_bytes(s.apex_path.read_bytes() + b"\0")  # still decodes; different bytes
    assert data_cli(args) == 0 and capsys.readouterr().out.startswith("built:")
    assert len(list(cache.iterdir())) == 4


def test_cache_content(synthetic, tmp_path):
    release = read_release("samm", synthetic / "SAMM")
    result = build_cache(release, tmp_path, image_size=64, flow=True)
    arrays, meta = load_cache(result.path)
    assert meta["fingerprint"] == result.fingerprint and meta["n_samples"] == len(release.samples)
    assert arrays["onset"].dtype == np.uint8 and arrays["onset"].shape == (24, 64, 64, 3)
    assert arrays["flow"].shape == (24, 64, 64, 2) and np.isfinite(arrays["flow"]).all()
    assert list(arrays["sample_id"]) == [s.sample_id for s in release.samples]
    assert [list(a) for a in arrays["aus"]] == [list(s.aus) for s in release.samples]
    # Grayscale SAMM frames become 3 equal channels; motion appears in the flow.
    assert np.array_equal(arrays["onset"][..., 0], arrays["onset"][..., 1])
    assert np.abs(arrays["flow"]).max() > 0.1
    # what the reader found but did not refuse is counted on every result, hit or not, and named
    assert result.findings == len(release.problems) > 0
    hit = build_cache(release, tmp_path, image_size=64, flow=True)
    assert hit.hit and hit.findings == result.findings
    assert f"{result.findings} non-fatal finding(s)" in hit.findings_note
    assert f"suite.data validate --dataset samm --root {synthetic / 'SAMM'}" in hit.findings_note


def test_provenance_and_page_name_a_non_default_reading(synthetic, tmp_path):
    """Labels read under other rules (here 'or' alternatives counted present) give other F1s: the
    record's data provenance and the page's data line say so; the default reading adds nothing."""
    from suite.data.au_strings import AURules
    from suite.leaderboard.records import data_label
    from suite.provenance import data_provenance

    default = data_provenance(build_cache(read_release("samm", synthetic / "SAMM"), tmp_path, image_size=32).path)
    union = data_provenance(build_cache(read_release("samm", synthetic / "SAMM", AURules(alternatives="union")), tmp_path,
                                        image_size=32).path)
    assert "reading" not in default and union["reading"] == {"alternatives": "union"}
    assert union["fingerprint"] != default["fingerprint"]  # a search's identity tells the two readings apart by it
    assert "read with" not in data_label({"data": default})
    assert data_label({"data": union}).endswith(f"fingerprint {union['fingerprint'][:12]}, read with alternatives=union")


@pytest.mark.slow
@pytest.mark.parametrize("dataset, folder", [("casme2", "CASME2"), ("samm", "SAMM")])
def test_synthetic_calibration_motion_beats_single_frame(tmp_path_factory, dataset, folder):
    """The generator's promise: local motion reveals the AUs, one frame's appearance does not."""
    from suite.data import synthetic_root
    from suite.data.calibration import probe_f1

    results = tmp_path_factory.getbasetemp() / "calibration"
    release = read_release(dataset, synthetic_root(dataset, results))
    arrays, _ = load_cache(build_cache(release, results / "cache", image_size=112).path)
    f1 = probe_f1(arrays, DATASET_AUS[dataset])
    assert f1["motion"] > f1["apex_only"] + 0.15
    assert f1["motion"] > f1["constant"] + 0.08
    assert f1["apex_only"] < f1["constant"] + 0.03
