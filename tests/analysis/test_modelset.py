"""A library analysed by a set of models: one decode per file, per-model storage, incremental additions."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from audiofiles import music_like, write_audio
from conftest import TRUMPET

from tagger.cli import main
from tagger.config import load_config
from tagger.library.store import Store
from tagger.models.session import load_model
from tagger.pipeline.scanner import scan


@pytest.fixture(scope="module")
def pair():
    return [load_model("musicnn-msd", device="cpu", threads=2), load_model("fcn-jamendo", device="cpu", threads=2)]


@pytest.fixture
def lib(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i, fmt in enumerate((".flac", ".mp3", ".ogg")):
        write_audio(lib / f"t{i}{fmt}", music_like(40.0 if i == 0 else 6.0, 44100, 2, seed=i), 44100)
    (lib / "trumpet.ogg").write_bytes(TRUMPET.read_bytes())
    return lib


@pytest.fixture
def cfg(tmp_path):
    return replace(load_config(None), database=tmp_path / "db", threads=2)


def test_two_models_one_decode_each_file_both_stored(cfg, lib, pair, monkeypatch):
    import tagger.analysis.cut as eng

    opened: list[str] = []
    real = eng.stream_native_mono

    def counting(path, info=None):
        opened.append(Path(path).name)
        return real(path, info)

    monkeypatch.setattr(eng, "stream_native_mono", counting)
    with Store(cfg.database) as store:
        report = scan([lib], cfg, pair, store)
        assert report.analysed == 4 and not report.failed
        assert sorted(opened) == sorted(p.name for p in lib.iterdir())  # each file decoded exactly once
        for p in lib.iterdir():
            a, b = store.get(p, "musicnn-msd"), store.get(p, "fcn-jamendo")
            assert a["status"] == b["status"] == "ok" and a["track_id"] == b["track_id"]
            ta, ea = store.vectors(a)
            tb, eb = store.vectors(b)
            assert (len(ta), len(ea), len(tb), len(eb)) == (50, 200, 50, 64)
        long = store.get(lib / "t0.flac", "fcn-jamendo")
        assert long["windows"] == 2  # 40 s: one 29-s window plus one aligned to the end (11 s unheard otherwise)
        assert store.get(lib / "t0.flac", "musicnn-msd")["windows"] == 13
        card = json.loads(store.card_json("fcn-jamendo"))
        assert card["outputs"][0]["labels"][4] == "classical"  # columns described without the model


def test_adding_a_model_later_analyses_only_what_it_lacks(cfg, lib, pair):
    msd, fcn = pair
    with Store(cfg.database) as store:
        scan([lib], cfg, [msd], store)
        first = {p.name: store.get(p, "musicnn-msd") for p in lib.iterdir()}
    with Store(cfg.database) as store:
        from tagger.library.files import discover
        from tagger.pipeline.scanner import Scanner, ScanReport

        scanner = Scanner(cfg, [msd, fcn], store)
        files, _ = discover([lib], cfg.extensions)
        todo = scanner.select(files, False, ScanReport())
        assert all(stale == ["fcn-jamendo"] for _, _, stale in todo) and len(todo) == 4
        report = ScanReport()
        scanner.run(todo, report)
        assert scanner.engine.per_model["musicnn-msd"]["windows"] == 0  # the old model ran on nothing
        assert scanner.engine.per_model["fcn-jamendo"]["windows"] >= 4
        for p in lib.iterdir():
            rec = store.get(p, "musicnn-msd")
            assert rec["slot"] == first[p.name]["slot"] and rec["analysed_at"] == first[p.name]["analysed_at"]
            assert store.get(p, "fcn-jamendo")["track_id"] == rec["track_id"]
    with Store(cfg.database) as store:
        third = scan([lib], cfg, [msd, fcn], store)
    assert third.analysed == 0 and third.skipped == 4


def test_similar_per_model_and_rename_keeps_ids(cfg, lib, pair, capsys):
    with Store(cfg.database) as store:
        scan([lib], replace(cfg, write_enabled=False), pair, store)
    seed = str(lib / "t1.mp3")
    for model, dim in (("musicnn-msd", 200), ("fcn-jamendo", 64)):
        assert main(["similar", seed, "--database", str(cfg.database), "--json", "--model", model,
                     "--include-duplicates"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert len(rows) == 3 and all(-1 <= r["score"] <= 1 for r in rows)
    with Store(cfg.database) as store:
        before = store.get(lib / "t1.mp3", "fcn-jamendo")
        os.rename(lib / "t1.mp3", lib / "moved.mp3")
        assert store.rename(lib / "t1.mp3", lib / "moved.mp3") == 2
        store.commit()
    with Store(cfg.database, writer=False) as store:
        after = store.get(lib / "moved.mp3", "fcn-jamendo")
        assert after["track_id"] == before["track_id"] and after["slot"] == before["slot"]
        np.testing.assert_array_equal(store.vectors(after)[0], store.vectors(before)[0])


def test_a_database_from_the_single_model_release_keeps_working(cfg, lib, pair):
    """Records written before model sets (no card beside the vectors, no track id) are read and extended."""
    msd, fcn = pair
    with Store(cfg.database) as store:
        scan([lib], cfg, [msd], store)
    (cfg.database / "vectors" / "musicnn-msd.card.json").unlink()
    raw = json.loads((cfg.database / "records.json").read_text() or "{}")
    journal = cfg.database / "records.journal"
    lines = [json.loads(x) for x in journal.read_text().splitlines() if x]
    for e in lines:
        if e["op"] == "put":
            e["doc"].pop("track_id", None)
            e["doc"].pop("decided", None)
    journal.write_text("".join(json.dumps(e) + "\n" for e in lines))
    with Store(cfg.database) as store:
        report = scan([lib], cfg, [msd, fcn], store)
        assert report.analysed == 4
        for p in lib.iterdir():
            assert store.get(p, "fcn-jamendo")["status"] == "ok" and store.get(p, "musicnn-msd")["slot"] is not None
    assert raw is not None


def test_a_file_moved_between_scans_keeps_its_id_and_analyses(cfg, lib, pair):
    with Store(cfg.database) as store:
        scan([lib], cfg, pair, store)
        before = store.get(lib / "t1.mp3", "fcn-jamendo")
    (lib / "Album").mkdir()
    os.rename(lib / "t1.mp3", lib / "Album" / "renamed.mp3")  # a move keeps size and mtime
    with Store(cfg.database) as store:
        report = scan([lib], cfg, pair, store)
        assert report.moved == 1 and report.analysed == 0 and report.removed == 0
        after = store.get(lib / "Album" / "renamed.mp3", "fcn-jamendo")
        assert after["track_id"] == before["track_id"] and after["slot"] == before["slot"]
        assert store.get(lib / "t1.mp3", "fcn-jamendo") is None
        assert store.get(lib / "Album" / "renamed.mp3", "musicnn-msd")["track_id"] == before["track_id"]
