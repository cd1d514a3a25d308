"""Every bad input gives a clear message naming the file/row/clip and what to do."""
import json

import openpyxl
import pytest

from suite.data import DataError, read_release
from suite.data.__main__ import main as data_cli


def _edit_sheet(path, sheet, fn):
    wb = openpyxl.load_workbook(path)
    fn(wb[sheet])
    wb.save(path)


def test_missing_spreadsheet(release_copy):
    root = release_copy("casme2")
    (root / "CASME2-coding-20140508.xlsx").unlink()
    with pytest.raises(DataError, match=r"no coding spreadsheet in .*CASME2-coding-20140508.xlsx"):
        read_release("casme2", root)


def test_wrong_sheet(release_copy):
    root = release_copy("samm")
    _edit_sheet(root / "SAMM_Micro_FACS_Codes_v2.xlsx", "MICRO_ONLY", lambda ws: setattr(ws, "title", "Sheet1"))
    with pytest.raises(DataError, match=r"sheet 'MICRO_ONLY' not found; sheets present: \['Sheet1'\]"):
        read_release("samm", root)


def test_missing_column_is_named_and_columns_listed(release_copy):
    root = release_copy("casme2")
    _edit_sheet(root / "CASME2-coding-20140508.xlsx", "Sheet1", lambda ws: ws.delete_cols(5))  # ApexFrame
    with pytest.raises(DataError) as e:
        read_release("casme2", root)
    msg = str(e.value)
    assert "missing required column 'ApexFrame'" in msg and "'OnsetFrame'" in msg and "columns found" in msg


def test_empty_rows_are_reported_not_silently_dropped(release_copy):
    root = release_copy("casme2")
    _edit_sheet(root / "CASME2-coding-20140508.xlsx", "Sheet1", lambda ws: ws.insert_rows(5))
    release = read_release("casme2", root)
    assert any(p.row == 5 and p.problem == "empty row" for p in release.problems)
    assert len(release.samples) == 24


def test_missing_frame_folder_and_frame_file(release_copy):
    import shutil

    root = release_copy("casme2")
    first = read_release("casme2", root).samples
    shutil.rmtree(first[0].onset_path.parent)
    first[1].apex_path.unlink()
    release = read_release("casme2", root)
    msgs = {p.clip: p for p in release.fatal}
    assert "frame folder" in msgs[first[0].clip].problem and "not found" in msgs[first[0].clip].problem
    assert f"apex frame {first[1].apex}" in msgs[first[1].clip].problem
    with pytest.raises(DataError, match="2 fatal problem"):
        release.raise_if_fatal()


def test_corrupt_frame_is_named(release_copy, capsys):
    root = release_copy("casme2")
    s = read_release("casme2", root).samples[2]
    s.onset_path.write_bytes(b"not a jpeg")
    code = data_cli(["validate", "--dataset", "casme2", "--root", str(root), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert any(p["fatal"] and str(s.onset_path) in p["problem"] for p in out["problems"])


def test_apex_outside_clip_and_bad_frame_cell(release_copy):
    root = release_copy("casme2")
    def edit(ws):
        ws.cell(row=2, column=5).value = 99999  # apex far outside
        ws.cell(row=3, column=4).value = "abc"  # onset not a number
    _edit_sheet(root / "CASME2-coding-20140508.xlsx", "Sheet1", edit)
    release = read_release("casme2", root, annotations_only=True)
    by_row = {p.row: p for p in release.problems}
    assert "outside" in by_row[2].problem and "midpoint" in by_row[2].action and not by_row[2].fatal
    assert by_row[3].fatal and "onset frame" in by_row[3].problem


def test_no_face_found_asks_for_boxes_then_boxes_file_works(release_copy, tmp_path):
    import cv2
    import numpy as np

    root = release_copy("samm")
    s = read_release("samm", root).samples[0]
    cv2.imwrite(str(s.onset_path), np.full((650, 960), 40, np.uint8))  # blank frame: no face
    release = read_release("samm", root)
    [p] = [p for p in release.fatal]
    assert p.clip == s.clip and "no face found" in p.problem and "--boxes" in p.action
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(f"clip,x,y,w,h\n{s.clip},300,100,300,340\n")
    release = read_release("samm", root, boxes=boxes)
    assert not release.fatal and release.samples[0].face_box == (300, 100, 300, 340)
    bad = tmp_path / "bad.csv"
    bad.write_text("clip,x,y\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['w', 'h'\]"):
        read_release("samm", root, boxes=bad)


def test_opencv_without_haar_cascades_names_the_fix(release_copy, monkeypatch):
    """OpenCV 5 has no CascadeClassifier: reading SAMM says which OpenCV to install, or --boxes."""
    import cv2

    from suite.data import faces

    monkeypatch.delattr(cv2, "CascadeClassifier")
    faces._cascade.cache_clear()
    try:
        with pytest.raises(DataError, match=r"opencv-python-headless<5.*--boxes"):
            read_release("samm", release_copy("samm"))
    finally:
        faces._cascade.cache_clear()


def test_cli_fatal_error_exits_nonzero_with_message(tmp_path, capsys):
    assert data_cli(["validate", "--dataset", "samm", "--root", str(tmp_path)]) == 2
    assert "no coding spreadsheet" in capsys.readouterr().err
