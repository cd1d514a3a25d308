"""A release added through the registry alone: this module declares a toy release (its own label
file name and sheet, frame folder, AU list, reader) and nothing else in the suite changes; the
command lines list it, `validate` reads it and one `suite.train` run trains and scores it."""
import json
import re
import shutil
from pathlib import Path

import pytest

from suite.data import DATASETS, read_release
from suite.data.__main__ import main as data_cli
from suite.data.au_strings import AURules
from suite.data.records import Release
from suite.data.registry import ReleaseSpec, get_release, register, unregister
from suite.data.release import COLUMNS, REQUIRED, attach_frames, read_sheet, rows_to_samples
from suite.data.sheets import subject_id
from suite.emotions import CASME2_EMOTIONS

TOY_AUS = (4, 12)
FRAME = re.compile(r"frame(\d+)\.jpg")


def read_toy(root: Path, rules: AURules = AURules(), annotations_only: bool = False) -> Release:
    table = read_sheet(SPEC, root)
    samples, problems = rows_to_samples(table, SPEC, rules)
    if not annotations_only:
        problems += attach_frames(samples, lambda s: root / "clips" / s.subject.split("/")[1] / s.clip, FRAME)
    return Release("toyme", root, table.path, samples, problems, {"rules": vars(rules)})


SPEC = ReleaseSpec(
    name="toyme", title="Toy ME", folder="TOYME", sheet_pattern="toy-labels*.xlsx", sheet_expected="toy-labels.xlsx",
    sheet_name="labels", columns=COLUMNS, required=frozenset(REQUIRED), aus=TOY_AUS, subject_id=lambda cell: subject_id(cell, 2),
    frame_layout="clips/{Subject}/{Filename}/frame{N}.jpg", frame_number=FRAME, emotions=CASME2_EMOTIONS, objective_form="none",
    reader=read_toy)


@pytest.fixture
def toy(synthetic, tmp_path):
    """A toy release written from the synthetic CASME II (its rows, another sheet name, file name and frame layout)."""
    import openpyxl

    src = synthetic / "CASME2"
    root = tmp_path / "TOYME"
    book = openpyxl.load_workbook(next(src.glob("CASME2-coding-*.xlsx")))
    book.active.title = "labels"
    root.mkdir()
    book.save(root / "toy-labels.xlsx")
    for clip in (src / "Cropped").glob("sub*/*"):
        dst = root / "clips" / clip.parent.name[3:] / clip.name
        dst.mkdir(parents=True)
        for frame in clip.glob("reg_img*.jpg"):
            shutil.copy(frame, dst / f"frame{frame.stem[7:]}.jpg")
    register(SPEC)
    yield root
    unregister("toyme")


def test_a_release_added_through_the_registry_alone_validates_and_trains(toy, tmp_path, capsys):
    assert "toyme" in DATASETS and get_release("toyme").aus == TOY_AUS
    release = read_release("toyme", toy)
    assert release.samples and not release.fatal
    assert all(s.sample_id.startswith("toyme/") and s.onset_path.name.startswith("frame") for s in release.samples)

    assert data_cli(["validate", "--dataset", "toyme", "--root", str(toy), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == len(release.samples) and list(summary["au_counts"]) == ["AU4", "AU12"]

    from suite.results import load_record
    from suite.train import main as train_cli

    assert train_cli(["--method", "constant", "--dataset", "toyme", "--data-root", str(toy), "--results", str(tmp_path / "results")]) == 0
    record = load_record(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["dataset"] == "toyme" and list(record["f1"]["binary"]["per_au"]) == ["AU4", "AU12"]
    # the constant floor's pooled F1 per AU is 2p/(1+p) of the AU's prevalence among the scored clips
    known = [s for s in release.samples if 4 not in s.aus_unknown]
    p = sum(4 in s.aus for s in known) / len(known)
    assert record["f1"]["binary"]["per_au"]["AU4"] == pytest.approx(2 * p / (1 + p), abs=1e-6)


def test_an_unknown_release_names_the_registered_ones():
    from suite.data import DataError

    with pytest.raises(DataError, match="unknown dataset 'nope'; choose one of .*'casme2'.*'samm'.*'casme3'"):
        get_release("nope")
