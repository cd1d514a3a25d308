"""Generator → reader round trip and every release quirk of DATASETS.md, read by the real readers."""
import json

import numpy as np
import openpyxl
import pytest

from suite.aus import ACTION_UNITS
from suite.data import read_release
from suite.data.synthetic import SyntheticSpec, generate


def _truth(root, dataset):
    return {(t["subject"], t["filename"]): t for t in map(json.loads, open(root / "truth" / f"{dataset}.jsonl"))}


@pytest.mark.parametrize("dataset, folder", [("casme2", "CASME2"), ("samm", "SAMM")])
def test_round_trip_labels_equal_truth(synthetic, dataset, folder):
    release = read_release(dataset, synthetic / folder)
    truth = _truth(synthetic, dataset)
    assert len(release.samples) == len(truth) and not release.fatal
    for s in release.samples:
        t = truth[(s.subject.split("/")[1], s.clip)]
        assert set(s.aus_unknown) == set(t["aus_unknown"]), (s.sample_id, s.au_raw)
        known = lambda aus: {a for a in aus if a not in t["aus_unknown"]}
        assert known(s.aus) == known(t["aus"]), (s.sample_id, s.au_raw)
        assert s.emotion == t["emotion"]
        assert s.objective_class == t["objective_class"]
        assert s.onset == t["onset"] and s.offset == t["offset"]
        if isinstance(t["apex"], int) and t["onset"] <= t["apex"] <= t["offset"]:
            assert s.apex == t["apex"]
        else:  # '/' or outside the clip: the midpoint, where the generator put the peak
            assert s.apex == (s.onset + s.offset) // 2 == t["render_apex"]
        assert s.onset_path.exists() and s.apex_path.exists()


def test_ids_are_namespaced(synthetic):
    c = read_release("casme2", synthetic / "CASME2").samples[0]
    s = read_release("samm", synthetic / "SAMM").samples[0]
    assert c.subject.startswith("casme2/") and c.sample_id.startswith("casme2/sub")
    assert s.subject.startswith("samm/") and len(s.subject.split("/")[1]) == 3


def test_casme2_quirks_are_present_and_handled(synthetic):
    root = synthetic / "CASME2"
    ws = openpyxl.load_workbook(root / "CASME2-coding-20140508.xlsx")["Sheet1"]
    rows = list(ws.iter_rows(values_only=True))
    assert rows[0][2] is None and rows[0][6] is None and len(rows[0]) == 9  # blank header columns
    assert all(isinstance(r[0], str) for r in rows[1:])  # text subject ids '01'
    cells = [r[7] for r in rows[1:]]
    assert any(isinstance(c, int) for c in cells) and any(isinstance(c, str) and "+" in c for c in cells)
    assert "/" in [r[4] for r in rows[1:]] and cells.count("?") == 1 and sum(isinstance(c, str) and c.endswith("+?") for c in cells) == 1
    assert {"Sheet1", "Sheet2", "Sheet3"} <= set(openpyxl.load_workbook(root / "CASME2-coding-20140508.xlsx").sheetnames)
    release = read_release("casme2", root)
    problems = [p.problem for p in release.problems]
    assert any("apex frame is '/'" in p for p in problems)
    assert sum("'?' operand" in p for p in problems) == 2  # '?' and '12+?'
    assert sum(len(s.aus_unknown) > 0 for s in release.samples) == 2
    # Frame numbers are not padded and are indexed by their integer; a stray .lnk is ignored.
    s = release.samples[0]
    assert any(f.suffix == ".lnk" for f in s.onset_path.parent.iterdir())
    assert all(p.name == f"reg_img{n}.jpg" for n, p in s.frames.items())
    assert sorted(s.frames) == list(range(s.onset, s.offset + 1))
    styles = {c.clip[4:] for c in release.samples}
    assert any(x.endswith("f") for x in styles) and any(x.count("_") == 2 for x in styles)


def test_samm_quirks_are_present_and_handled(synthetic):
    root = synthetic / "SAMM"
    ws = openpyxl.load_workbook(root / "SAMM_Micro_FACS_Codes_v2.xlsx")["MICRO_ONLY"]
    rows = list(ws.iter_rows(values_only=True))
    assert rows[13][0] == "Subject" and rows[13][11] == "Notes"  # header on row 14 after a preamble
    assert str(rows[14][6]).startswith("=")  # Duration is a formula ...
    cached = list(openpyxl.load_workbook(root / "SAMM_Micro_FACS_Codes_v2.xlsx", data_only=True)["MICRO_ONLY"].iter_rows(values_only=True))
    assert all(r[6] == r[5] - r[3] + 1 for r in cached[14:])  # ... saved with its value, as Excel does
    release = read_release("samm", root)
    problems = [p.problem for p in release.problems]
    assert sum("outside" in p for p in problems) == 2
    assert any("alternative" in p for p in problems) and any("soft focus" in p for p in problems)
    cells = {s.au_raw for s in release.samples}
    assert any("L12 or L14" in c for c in cells) and any("(R6 or R12)+R15" in c for c in cells)  # an evaluated AU against another
    assert any(p.startswith("ref(") for p in problems)
    paddings = {len(p.stem.split("_")[-1]) for s in release.samples for p in s.frames.values()}
    assert len(paddings) > 1  # varying zero-padding, parsed by value
    assert {s.emotion for s in release.samples} <= {"Anger", "Contempt", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other"}
    assert all(s.face_box is not None for s in release.samples)


def test_casme2_2019_sheet_and_raw_frames(tmp_path):
    spec = SyntheticSpec(casme2_subjects=2, casme2_clips=6, samm_subjects=2, samm_clips=10, frames=(6, 8), raw=True, casme2_sheet="20190701")
    generate(tmp_path, seed=5, spec=spec)
    root = tmp_path / "CASME2"
    assert (root / "CASME2-coding-20190701.xlsx").exists()
    truth = _truth(tmp_path, "casme2")
    for frames in ("cropped", "raw_selected", "raw"):
        release = read_release("casme2", root, frames=frames)
        assert not release.fatal
        for s in release.samples:
            t = truth[(s.subject.split("/")[1], s.clip)]
            assert s.objective_class == t["objective_class"]  # from the 10th column
            assert list(s.aus) == t["aus"] and not s.aus_unknown  # the 2019 sheet has no '?'
            if frames != "cropped":
                assert s.onset_path.name == f"img{s.onset}.jpg"


def test_subject_read_as_int_is_normalised(release_copy):
    root = release_copy("casme2")
    path = root / "CASME2-coding-20140508.xlsx"
    wb = openpyxl.load_workbook(path)
    for row in wb["Sheet1"].iter_rows(min_row=2):
        row[0].value = int(row[0].value)
    wb.save(path)
    release = read_release("casme2", root)
    assert not release.fatal and all(s.subject.split("/")[1].startswith("0") for s in release.samples)


def test_generator_is_deterministic(tmp_path):
    spec = SyntheticSpec(casme2_subjects=2, casme2_clips=5, samm_subjects=2, samm_clips=10, frames=(6, 7))
    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, 11, spec)
    generate(b, 11, spec)
    assert (a / "truth" / "casme2.jsonl").read_text() == (b / "truth" / "casme2.jsonl").read_text()
    assert (a / "truth" / "samm.jsonl").read_text() == (b / "truth" / "samm.jsonl").read_text()
    for f in sorted((a / "CASME2" / "Cropped").rglob("*.jpg"))[:20]:
        assert f.read_bytes() == (b / f.relative_to(a)).read_bytes()


def test_landmark_motion_falls_in_au_regions(synthetic):
    """Ground truth for region mapping: where the generator moved landmarks for an AU lies in
    that AU's template region."""
    from suite.data.synthetic import MOTION, TEMPLATE

    for au, field in MOTION.items():
        moved = np.linalg.norm(field, axis=1) > 1e-6
        pts = TEMPLATE[moved]
        for x, y in pts:
            assert any(x0 <= x <= x1 and y0 <= y <= y1 for x0, y0, x1, y1 in ACTION_UNITS[au].regions), (au, x, y)
    # The written landmarks move only between onset and offset.
    lms = np.load(synthetic / "truth" / "casme2_landmarks.npz")
    truth = _truth(synthetic, "casme2")
    key, t = next((f"sub{k[0]}/{k[1]}", t) for k, t in truth.items() if t["aus"])
    track = lms[key]
    peak = t["render_apex"] - t["onset"]
    assert np.abs(track[peak] - track[0]).max() > np.abs(track[-1] - track[0]).max()


def test_faces_are_found_where_they_were_drawn(synthetic):
    truth = _truth(synthetic, "samm")
    ious = []
    for s in read_release("samm", synthetic / "SAMM").samples:
        x, y, w, h = truth[(s.subject.split("/")[1], s.clip)]["face_box"]
        bx, by, bw, bh = s.face_box
        ix = max(0, min(x + w, bx + bw) - max(x, bx))
        iy = max(0, min(y + h, by + bh) - max(y, by))
        ious.append(ix * iy / (w * h + bw * bh - ix * iy))
    assert min(ious) > 0.7 and np.mean(ious) > 0.8


@pytest.mark.parametrize("quirk", [None, "ref", "or_same", "or_diff", "or_evaluated", "or_group", "free_text", "spaces"])
def test_generated_samm_cells_read_back_as_their_truth(quirk):
    """Every quirky cell the generator can write parses to the AU set it animated, on the AUs the
    cell leaves known, and leaves unknown exactly what the generator says it does."""
    from suite.data.au_strings import parse_au_string
    from suite.data.synthetic import _samm_au_cell

    for seed in range(400):
        rng = np.random.default_rng(seed)
        aus = set(rng.choice([1, 2, 4, 7, 12, 14, 15, 17, 6, 10], size=int(rng.integers(1, 4)), replace=False).tolist())
        cell, truth, unknown = _samm_au_cell(np.random.default_rng(seed), aus, quirk)
        parsed = parse_au_string(cell)
        vocabulary = set(ACTION_UNITS) | truth
        assert {a for a in vocabulary if not parsed.known(a)} == set(unknown), (cell, unknown)
        assert set(parsed.aus) - set(unknown) == truth - set(unknown), (cell, truth)
