"""`tagger eval`: the tool's decisions against the user's own tags, and `--calibrate` (issue 22, item 3)."""
from __future__ import annotations

import json
import shutil

import pytest
from conftest import EXPORTER_DATA, TRUMPET

from tagger.cli import main
from tagger.decision.evaluate import Case, calibrate, evaluate
from tagger.tagging.plan import Change
from tagger.tagging.writer import read_fields, write_changes

ORCHESTRA = EXPORTER_DATA / "Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra).ogg"


def test_precision_coverage_and_confusion_by_hand():
    cases = [Case("a", ("Jazz",), ("Jazz",), "Jazz", 0.9), Case("b", ("Jazz",), ("Jazz",), "Jazz", 0.8),
             Case("c", ("Blues",), ("Jazz",), "Jazz", 0.5), Case("d", ("Classical",), ()),
             Case("e", ("classical", "Soundtrack"), ("Classical",), "Classical", 0.7)]
    r = evaluate("genre", cases)
    assert (r.tracks, r.right, r.wrong, r.nothing) == (5, 3, 1, 1)
    jazz, classical, blues = r.values["Jazz"], r.values["Classical"], r.values["Blues"]
    assert (jazz.written, jazz.right, jazz.precision, jazz.coverage) == (3, 2, 2 / 3, 1.0)
    assert (classical.user_tracks, classical.written, classical.precision, classical.coverage) == (2, 1, 1.0, 0.5)
    assert blues.written == 0 and blues.coverage == 0.0 and r.never_proposed == ["Blues", "Soundtrack"]
    assert r.confusion["Blues"] == {"Jazz": 1} and r.confusion["Classical"] == {"(nothing)": 1, "Classical": 1}
    # Jazz is right 2 of 3 times overall, always from 0.8 up: the cut for 0.9 precision sits at 0.8.
    assert calibrate(cases, 0.9, min_tracks=3) == {"Jazz": 0.8}
    assert calibrate(cases, 0.6, min_tracks=3) == {"Jazz": 0.5}
    assert calibrate(cases, 0.9, min_tracks=1) == {"Jazz": 0.8, "Classical": 0.7}


@pytest.fixture
def library(tmp_path, monkeypatch):
    """Real clips with the user's own genres: three copies of the solo trumpet (the tool hears Jazz), of which
    the user calls two Jazz and one Blues; one untagged copy; two copies of the orchestra, called Classical."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    lib = tmp_path / "lib"
    for name, src, genre in (("t1", TRUMPET, "Jazz"), ("t2", TRUMPET, "Jazz"), ("t3", TRUMPET, "Blues"),
                             ("t4", TRUMPET, None), ("o1", ORCHESTRA, "Classical"), ("o2", ORCHESTRA, "Classical")):
        path = lib / name / f"{name}.ogg"  # a folder each: no folder mates vote
        path.parent.mkdir(parents=True)
        shutil.copyfile(src, path)
        path.chmod(0o644)
        if genre:
            write_changes(path, [Change("GENRE", [], [genre])], expect=None)
    return lib


def test_eval_reports_the_library_and_calibration_changes_what_a_scan_writes(library, capsys):
    assert main(["scan", str(library), "--no-write"]) == 0
    capsys.readouterr()
    assert main(["eval", "--json", "--field", "genre"]) == 0
    report = json.loads(capsys.readouterr().out)["reports"]["genre"]
    jazz = report["values"]["Jazz"]
    assert report["tracks"] == 5 and jazz["written"] == 3 and jazz["right"] == 2
    assert jazz["precision"] == pytest.approx(2 / 3) and jazz["coverage"] == 1.0
    assert report["values"]["Blues"]["coverage"] == 0.0 and report["confusion"]["Blues"] == {"Jazz": 1}
    assert main(["eval", "--field", "genre"]) == 0
    text = capsys.readouterr().out
    assert "5 of your tracks carry your own genre" in text and "Blues -> Jazz 1" in text

    # The three trumpet copies score alike: no cut reaches 0.9, so the calibrated rule never writes Jazz.
    assert main(["eval", "--calibrate", "--precision", "0.9", "--field", "genre"]) == 0
    assert "Jazz never" in capsys.readouterr().out
    untagged = library / "t4" / "t4.ogg"
    assert main(["scan", str(library)]) == 0
    assert read_fields(untagged)["GENRE"] == []
    capsys.readouterr()
    assert main(["analyze", str(untagged), "--json"]) == 0
    decided = json.loads(capsys.readouterr().out)[0]["decision"]["genre"]
    assert decided["values"] == [] and "calibrated on your tagged tracks" in decided["reason"]

    assert main(["eval", "--remove-calibration"]) == 0
    assert main(["scan", str(library), "--force"]) == 0
    assert read_fields(untagged)["GENRE"] == ["Jazz"]  # the model set's own rule again


def test_eval_without_tagged_tracks_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copyfile(TRUMPET, lib / "t.ogg")
    assert main(["scan", str(lib), "--no-write"]) == 0
    assert main(["eval"]) == 1
    assert "carries your own" in capsys.readouterr().err
    assert main(["eval", "--precision", "2"]) == 2
