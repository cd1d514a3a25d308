"""CAS(ME)³ Part A: the generator writes the label file and clips with every quirk of
``docs/datasets.md``; the real reader gives back the generator's truth and reports every odd row."""
import json
import re
import shutil

import openpyxl
import pytest

from suite.data import DataError, build_cache, load_cache, read_release
from suite.data.__main__ import main as data_cli
from suite.data.casme3 import CLIP_DIR, EVALUATED_AUS, SCALES, subject_id
from suite.data.registry import get_release
from suite.data.synthetic import SyntheticSpec, generate


@pytest.fixture(scope="module")
def casme3(tmp_path_factory):
    out = tmp_path_factory.mktemp("casme3")
    generate(out, seed=3, spec=SyntheticSpec(), releases=["casme3"])
    return out


def _truth(out):
    return [json.loads(line) for line in open(out / "truth" / "casme3.jsonl")]


def _sheet(out):
    return openpyxl.load_workbook(out / "CASME3" / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx")


def test_round_trip_labels_equal_truth(casme3):
    release = read_release("casme3", casme3 / "CASME3")
    truth = {(t["subject"], t["filename"], t["onset"]): t for t in _truth(casme3)}
    n_subjects, n_clips, _ = SCALES["small"]
    malformed = json.loads((casme3 / "truth" / "casme3_malformed.json").read_text())
    assert len(release.samples) == len(truth) == n_clips - len(malformed) and not release.fatal
    assert {s.subject for s in release.samples} == {f"casme3/{t['subject']}" for t in truth.values()}
    assert len({s.subject for s in release.samples}) == n_subjects
    for s in release.samples:
        subject = s.subject.split("/")[1]
        letter, onset = s.clip.split("_")[1], int(s.clip.split("_")[2])
        t = truth[(subject, letter, onset)]  # the key is (Subject, Filename, Onset)
        assert s.clip == f"{subject}_{letter}_{onset}" and s.sample_id == f"casme3/{subject}/{s.clip}"
        assert set(s.aus) == set(t["aus"]) and s.aus_unknown == (), (s.sample_id, s.au_raw)
        assert s.objective_class == t["objective_class"] and isinstance(s.objective_class, int)  # Roman numeral → 1–7
        assert s.emotion == t["emotion"] and s.emotion in get_release("casme3").emotions
        assert s.onset == t["onset"] and s.offset == t["offset"]
        if t["onset"] <= int(t["apex"]) <= t["offset"]:
            assert s.apex == t["apex"]
        else:  # apex before onset: the midpoint, where the generator put the peak
            assert s.apex == (s.onset + s.offset) // 2 == t["render_apex"]
        assert s.onset_path.exists() and s.apex_path.exists() and s.face_box is not None


def test_label_file_has_every_quirk(casme3):
    book = _sheet(casme3)
    assert book.sheetnames[0] == "Sheet1" and set(book.sheetnames) == {"Sheet1", "label", "Sheet3"}  # select by name
    assert book["Sheet1"].max_row >= 400
    rows = list(book["label"].iter_rows(values_only=True))
    assert rows[0] == ("Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion")
    body = rows[1:]
    assert all(isinstance(v, str) for r in body for v in r)  # every cell is text, frame numbers too
    assert all(re.fullmatch(r"spNO\.\d+", r[0]) for r in body)
    assert sum(r[1] == "J" for r in body) == 1 and all(re.fullmatch(r"[a-m]|J", r[1]) for r in body)
    assert {r[6] for r in body} <= {"I", "II", "III", "IV", "V", "VI", "VII"}
    assert sum(r[7] == "Others" for r in body) == 3 and {r[7] for r in body} - {"Others"} <= set(get_release("casme3").emotions)
    cells = [r[5] for r in body]
    assert not any(" " in c or "AU" in c for c in cells)
    assert any(re.search(r"(^|\+)T\d", c) for c in cells) and any(re.search(r"(^|\+)B\d", c) for c in cells)
    assert any(re.search(r"(^|\+)[LR]\d", c) for c in cells)
    per_video = {}
    for r in body:
        per_video.setdefault((r[0], r[1].lower()), []).append(r[2])
    assert max(len(v) for v in per_video.values()) >= 5  # several micro-expressions from one video
    folders = [p.name for p in (casme3 / "CASME3" / CLIP_DIR).iterdir()]
    assert folders and all(f.startswith("spNo.") for f in folders)  # the labels say 'spNO.'


def test_malformed_rows_are_reported_with_row_and_clip(casme3):
    release = read_release("casme3", casme3 / "CASME3", annotations_only=True)
    malformed = json.loads((casme3 / "truth" / "casme3_malformed.json").read_text())
    assert len(malformed) == 3
    for m in malformed:  # offset 0 twice, onset after apex and offset once: dropped with a finding
        [p] = [p for p in release.problems if p.row == m["row"] and "before onset frame" in p.problem]
        assert p.clip == m["clip"] and "before onset frame" in p.problem and "dropped" in p.action and not p.fatal
    assert not any(s.row in {m["row"] for m in malformed} for s in release.samples)
    apex = [p for p in release.problems if "apex frame" in p.problem and "outside" in p.problem]
    assert len(apex) == 1 and apex[0].row and apex[0].clip.startswith("spNO.") and "midpoint" in apex[0].action
    upper = [p for p in release.problems if "Filename 'J'" in p.problem]
    assert len(upper) == 1 and "_j_" in upper[0].clip
    assert sum("'Others'" in p.problem for p in release.problems) == 3


def test_missing_frame_is_reported_like_the_other_releases(casme3, tmp_path):
    root = tmp_path / "CASME3"
    shutil.copytree(casme3 / "CASME3", root)
    sample = read_release("casme3", root, annotations_only=True).samples[0]
    folder = next(p for p in (root / CLIP_DIR).iterdir() if p.name.lower() == sample.clip.lower())
    (folder / f"{sample.apex}.jpg").unlink()
    release = read_release("casme3", root)
    [p] = [p for p in release.fatal if p.row == sample.row]
    assert p.clip == sample.clip and f"apex frame {sample.apex} not in" in p.problem
    assert data_cli(["validate", "--dataset", "casme3", "--root", str(root), "--annotations-only"]) == 0
    assert data_cli(["validate", "--dataset", "casme3", "--root", str(root)]) == 1


def test_label_sheet_is_selected_by_name(casme3, tmp_path):
    root = tmp_path / "CASME3"
    shutil.copytree(casme3 / "CASME3", root, ignore=shutil.ignore_patterns("Part_A_ME_clip"))
    path = root / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"
    book = openpyxl.load_workbook(path)
    book["label"].title = "labels"
    book.save(path)
    with pytest.raises(DataError, match="sheet 'label' not found; sheets present: \\['Sheet1', 'labels', 'Sheet3'\\]"):
        read_release("casme3", root, annotations_only=True)


@pytest.mark.parametrize("cell, expected", [("spNO.12", "spNO.12"), ("spNo.12", "spNO.12"), ("SPNO.012", "spNO.12"),
                                            ("12", "spNO.12"), (12.0, "spNO.12"), ("sp12x", None), ("", None)])
def test_subject_ids_case_insensitive(cell, expected):
    assert subject_id(cell) == expected


def test_validate_build_cache_and_recognition_without_emotions(casme3, tmp_path, capsys):
    """`validate --json` and `build` work; the cache holds every kept clip; objective classes agree
    with the sheet's Roman numerals; a `suite.train` run scores objective-class recognition."""
    root = casme3 / "CASME3"
    assert data_cli(["validate", "--dataset", "casme3", "--root", str(root), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == len(_truth(casme3)) and list(summary["au_counts"]) == [f"AU{a}" for a in EVALUATED_AUS]
    assert summary["objective_rule_agreement"]["clips"] == summary["samples"]
    assert data_cli(["build", "--dataset", "casme3", "--root", str(root), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert capsys.readouterr().out.startswith("built: ")
    release = read_release("casme3", root)
    result = build_cache(release, tmp_path / "cache")
    assert result.hit
    arrays, meta = load_cache(result.path)
    assert meta["dataset"] == "casme3" and len(arrays["sample_id"]) == len(release.samples)

    from suite.results import load_record
    from suite.train import main as train_cli

    assert train_cli(["--method", "constant", "--dataset", "casme3", "--data-root", str(root), "--results", str(tmp_path)]) == 0
    record = load_record(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["dataset"] == "casme3" and list(record["f1"]["binary"]["per_au"]) == [f"AU{a}" for a in EVALUATED_AUS]
    assert "objective" in record["mer"] and "emotion5" not in record["mer"]


def test_scales():
    assert SCALES["full"][:2] == (94, 860)  # the release: 94 subjects, 860 micro-expressions
