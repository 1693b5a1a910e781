"""The command line: outputs, exit codes and configuration errors that name the key."""
from __future__ import annotations

import json
import shutil

import pytest
from conftest import TRUMPET

from tagger.cli import main
from tagger.config import load_config
from tagger.errors import ConfigError


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


def test_analyze_json_has_every_label(capsys):
    assert main(["analyze", str(TRUMPET), "--json", "--threads", "2"]) == 0
    (out,) = json.loads(capsys.readouterr().out)
    assert set(out["models"]) == set(load_config(None).models)  # the default set, every model on one decode
    msd = out["models"]["musicnn-msd"]["tags"]
    assert len(msd) == 50 and max(msd, key=msd.get) == "jazz"
    assert out["decision"]["genre"]["values"] == ["Jazz"] and "musicnn-msd" in out["decision"]["genre"]["reason"]


def test_analyze_bars_and_failure_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"nope")
    assert main(["analyze", str(TRUMPET), str(bad), "--top", "3"]) == 1
    captured = capsys.readouterr()
    assert "jazz" in captured.out and "█" in captured.out and "genre: Jazz  <- Jazz" in captured.out
    assert str(bad) in captured.err and "not a recognised audio format" in captured.err


def test_scan_then_show(tmp_path, capsys):
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(TRUMPET, lib / "t.ogg")
    assert main(["scan", str(lib), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["analysed"] == 1 and report["written"] == 1
    assert main(["show", str(lib / "t.ogg"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["decision"]["genre"]["values"] == ["Jazz"]  # the scan's rule, said by show
    recs = {r["model"]: r for r in shown["models"]}
    assert set(recs) == set(load_config(None).models)
    rec = recs["musicnn-msd"]
    assert rec["status"] == "ok" and rec["tags"]["jazz"] > 0.5 and rec["written"]["GENRE"] == ["Jazz"]
    assert rec["decided"]["genre"] == ["Jazz"] and rec["analysed_at"].endswith("Z")
    assert main(["show", str(tmp_path / "other.ogg")]) == 1  # not in the database: not a database fault


def test_scan_pretend_prints_the_diff(tmp_path, capsys):
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(TRUMPET, lib / "t.ogg")
    before = (lib / "t.ogg").read_bytes()
    assert main(["scan", str(lib), "--pretend"]) == 0
    out = capsys.readouterr().out
    assert "GENRE: [] -> ['Jazz']" in out and (lib / "t.ogg").read_bytes() == before


def test_undo_removes_what_scan_wrote(tmp_path, capsys):
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(TRUMPET, lib / "t.ogg")
    assert main(["scan", str(lib)]) == 0
    assert main(["undo", str(lib / "t.ogg")]) == 0
    from tagger.tagging.writer import read_fields

    fields = read_fields(lib / "t.ogg")
    assert fields["GENRE"] == [] and fields["TAGGER_MODEL"] == []


def test_locked_database_exit_code(tmp_path, capsys):
    from tagger.library.store import Store

    with Store(tmp_path / "db"):
        assert main(["scan", str(TRUMPET), "--database", str(tmp_path / "db")]) == 5
    assert "in use" in capsys.readouterr().err


@pytest.mark.parametrize("text,key", [
    ("batchsize: 3\n", "batchsize"),
    ("batch_size: -1\n", "batch_size"),
    ("decode_processes: sometimes\n", "decode_processes"),
    ("decode_workers: -2\n", "decode_workers"),
    ("device: tpu\n", "device"),
    ("write:\n  fields:\n    genre: {policy: overwrite, max_values: 1, min_score: 0.1, relative: 0.5}\n",
     "write.fields.genre.policy"),
    ("vocabulary:\n  genre:\n    'Jazz; Blues': [jazz]\n", "vocabulary.genre.Jazz; Blues"),
    ("vocabulary:\n  colour: {Red: [red]}\n", "vocabulary.colour"),
    ("labels:\n  musicnn-msd: {jazz: genre}\n", "vocabulary"),
    ("models: []\n", "models"),
    ("write:\n  fields:\n    genre: {policy: fill, max_values: 1, min_score: 0.1, relative: 0.5, rule: vote}\n",
     "write.fields.genre.rule"),
    ("write: {id3_version: 2}\n", "write.id3_version"),
    ("[1, 2\n", "not valid YAML"),
])
def test_config_errors_name_the_key(tmp_path, capsys, text, key):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert key in str(info.value) and str(cfg) in str(info.value)
    assert main(["analyze", str(TRUMPET), "--config", str(cfg)]) == 2
    assert key in capsys.readouterr().err


def test_config_defaults_and_xdg(tmp_path, monkeypatch):
    cfg = load_config(None)
    assert cfg.database == tmp_path / "data" / "tagger" / "db"
    assert cfg.fields["genre"].policy == "fill" and cfg.models[0] == "musicnn-msd" and len(cfg.models) >= 2
    user = tmp_path / "cfg" / "tagger" / "config.yaml"
    user.parent.mkdir(parents=True)
    user.write_text("model: musicnn-mtt\nwrite: {id3_version: 3}\n")
    cfg = load_config(None)
    assert cfg.models == ("musicnn-mtt",) and cfg.id3_version == 3 and cfg.fields["mood"].policy == "fill"
    user.write_text("models: [musicnn-mtt, fcn-msd]\nvocabulary: {genre: {Calm: [Mellow]}}\n")
    cfg = load_config(None)
    assert cfg.models == ("musicnn-mtt", "fcn-msd") and cfg.vocabulary["genre"] == {"Calm": ("Mellow",)}
    assert "Happy" in cfg.vocabulary["mood"]  # fields the user did not give keep their defaults


def test_command_line_numbers_are_checked_like_the_config_file(tmp_path, capsys):
    assert main(["scan", str(tmp_path), "--max-windows", "-1"]) == 2
    assert "--max-windows" in capsys.readouterr().err
    assert main(["scan", str(tmp_path), "--batch-size", "-1"]) == 2
