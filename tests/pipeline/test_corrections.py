"""A user's correction: planned exactly, written through the safe write, read back by TagLib and mediafile,
locked against every later scan and model upgrade, learned from by `tagger train`, and delivered through the
single writer (the server itself, a scan, or the running daemon)."""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
from audiofiles import USER, with_user_tags
from conftest import TRUMPET

from tagger.config import load_config
from tagger.errors import TagWriteError
from tagger.fsutil import path_key
from tagger.library.inbox import Correction, Inbox, lock_holder, read_status
from tagger.library.store import Store
from tagger.pipeline.corrections import apply_correction, apply_now
from tagger.pipeline.scanner import scan
from tagger.tagging.plan import Change, plan_changes, plan_correction, user_values
from tagger.tagging.writer import read_fields, write_changes

taglib = pytest.importorskip("taglib")
mediafile = pytest.importorskip("mediafile")

TOOL_WROTE = {"GENRE": ["Jazz"], "MOOD": ["Relaxing"], "TAGGER_WRITTEN": ["GENRE=Jazz", "MOOD=Relaxing"]}


# -- the plan (pure) -------------------------------------------------------------------------------
def test_a_correction_takes_the_field_over_and_locks_it():
    changes = {c.field: c.after for c in plan_correction(TOOL_WROTE, "genre", ["Classical", " Romantic  era "])}
    assert changes == {"GENRE": ["Classical", "Romantic era"], "TAGGER_WRITTEN": ["MOOD=Relaxing"],
                       "TAGGER_LOCKED": ["GENRE"]}
    after = {**TOOL_WROTE, **changes}
    assert user_values(after) == {"genre": ["Classical", "Romantic era"]}  # the user's now: train learns it


def test_clear_and_unlock():
    cleared = {c.field: c.after for c in plan_correction(TOOL_WROTE, "mood", [])}
    assert cleared == {"MOOD": [], "TAGGER_WRITTEN": ["GENRE=Jazz"], "TAGGER_LOCKED": ["MOOD"]}
    locked = {"GENRE": ["Classical"], "TAGGER_LOCKED": ["GENRE", "MOOD"]}
    assert plan_correction(locked, "genre", None) == [Change("TAGGER_LOCKED", ["GENRE", "MOOD"], ["MOOD"])]
    assert plan_correction({"GENRE": ["Classical"]}, "genre", None) == []  # nothing locked: nothing to do
    assert plan_correction({"GENRE": ["Classical"], "TAGGER_LOCKED": ["GENRE"]}, "genre", ["classical"]) == \
        [Change("GENRE", ["Classical"], ["classical"])]


@pytest.mark.parametrize("field,values,message", [("artist", ["x"], "cannot be corrected"),
                                                  ("genre", ["a\x00b"], "control character"),
                                                  ("genre", ["x" * 101], "longer than"),
                                                  ("genre", ["a=b"], "'='")])
def test_bad_corrections_are_refused_with_the_reason(field, values, message):
    with pytest.raises(ValueError, match=message):
        plan_correction({}, field, values)


def test_a_locked_field_is_never_written_whatever_the_policy():
    cfg = load_config(None)
    cfg = replace(cfg, fields={**cfg.fields, "genre": replace(cfg.fields["genre"], policy="replace")})
    current = {"GENRE": ["Classical"], "MOOD": ["Relaxing"], "TAGGER_LOCKED": ["GENRE"],
               "TAGGER_WRITTEN": ["MOOD=Relaxing"]}
    selection = {"genre": [("Jazz", "jazz", 0.9)], "mood": [("Sad", "sad", 0.8)]}
    changes = {c.field: c.after for c in plan_changes(current, selection, cfg, analyser="m@1", scores={}, now="t")}
    assert "GENRE" not in changes and changes["MOOD"] == ["Sad"]
    assert changes["TAGGER_WRITTEN"] == ["MOOD=Sad"]
    # Values the tool wrote before the user locked the field (by hand) stay the tool's, for undo.
    current2 = {**current, "GENRE": ["Jazz"], "TAGGER_WRITTEN": ["GENRE=Jazz"]}
    changes2 = {c.field: c.after for c in plan_changes(current2, selection, cfg, analyser="m@1", scores={}, now="t")}
    assert "GENRE" not in changes2 and "GENRE=Jazz" in changes2.get("TAGGER_WRITTEN", current2["TAGGER_WRITTEN"])


# -- the write, read back by real readers -------------------------------------------------------------
def _tool_tagged(tmp: Path, ext: str) -> Path:
    """A file with the user's own tags (artist, title, album, ReplayGain, MusicBrainz id) and the tool's."""
    path = with_user_tags(tmp, ext)
    write_changes(path, [Change("GENRE", [], ["Jazz"]), Change("MOOD", [], ["Relaxing"]),
                         Change("TAGGER_WRITTEN", [], ["GENRE=Jazz", "MOOD=Relaxing"])], expect=None)
    return path


@pytest.mark.parametrize("ext", [".mp3", ".flac", ".ogg", ".opus", ".m4a", ".wav"])
def test_correction_is_in_the_file_for_taglib_and_mediafile(tmp_path, ext):
    path = _tool_tagged(tmp_path, ext)
    cfg = replace(load_config(None), database=tmp_path / "db")
    st = os.stat(path)
    with Store(cfg.database) as store:
        store.put({"path": path_key(path), "model": "m", "analyser": "m@1", "status": "ok",
                   "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        store.commit()
        result = apply_correction(store, cfg, Correction(path_key(path), "genre", ("Classical",)))
        rec = store.get(path, "m")
    assert result["ok"] and result["values"] == ["Classical"] and result["locked"] == ["GENRE"]
    with taglib.File(str(path)) as f:
        assert f.tags["GENRE"] == ["Classical"] and f.tags["ARTIST"] == [USER["ARTIST"]]
        assert f.tags["MOOD"] == ["Relaxing"]
    assert mediafile.MediaFile(str(path)).genre == "Classical"
    fields = read_fields(path)
    assert fields["TAGGER_LOCKED"] == ["GENRE"] and fields["TAGGER_WRITTEN"] == ["MOOD=Relaxing"]
    new = os.stat(path)
    assert (rec["size"], rec["mtime_ns"]) == (new.st_size, new.st_mtime_ns)  # no re-analysis needed
    assert rec["user"] == {"genre": ["Classical"]} and rec["locked"] == ["GENRE"]


def test_a_file_changed_since_analysis_keeps_its_stale_record(tmp_path):
    path = _tool_tagged(tmp_path, ".flac")
    cfg = replace(load_config(None), database=tmp_path / "db")
    with Store(cfg.database) as store:
        store.put({"path": path_key(path), "model": "m", "status": "ok", "size": 1, "mtime_ns": 2})
        store.commit()
        apply_correction(store, cfg, Correction(path_key(path), "genre", ("Classical",)))
        assert (store.get(path, "m")["size"], store.get(path, "m")["mtime_ns"]) == (1, 2)  # the next scan redoes it


# -- the control channel ---------------------------------------------------------------------------
def test_inbox_answers_every_request_even_bad_ones(tmp_path):
    good = _tool_tagged(tmp_path, ".flac")
    cfg = replace(load_config(None), database=tmp_path / "db")
    with Store(cfg.database) as store:
        st = os.stat(good)
        store.put({"path": path_key(good), "model": "m", "status": "ok", "size": st.st_size,
                   "mtime_ns": st.st_mtime_ns})
        store.commit()
    inbox = Inbox(cfg.database)
    bad_json = inbox.root / "00000000000000000001-broken.json"
    inbox.root.mkdir(parents=True, exist_ok=True)
    bad_json.write_text("{not json")
    missing = inbox.submit(Correction(str(tmp_path / "gone.flac"), "genre", ("Rock",)))
    wrong_field = inbox.submit(Correction(path_key(good), "tempo", ("fast",)))
    ok = inbox.submit(Correction(path_key(good), "genre", ("Classical",)))
    assert apply_now(cfg)  # nobody holds the lock: applied here
    assert inbox.collect("00000000000000000001-broken")["ok"] is False
    assert "not in the database" in inbox.collect(missing)["error"]
    assert "cannot be corrected" in inbox.collect(wrong_field)["error"]
    assert inbox.collect(ok)["values"] == ["Classical"]
    assert inbox.pending() == [] and read_fields(good)["GENRE"] == ["Classical"]


def test_apply_now_leaves_requests_to_the_lock_holder(tmp_path):
    cfg = replace(load_config(None), database=tmp_path / "db")
    with Store(cfg.database) as _:
        assert lock_holder(cfg.database) == os.getpid()
        rid = Inbox(cfg.database).submit(Correction("/x.flac", "genre", ("Rock",)))
        assert apply_now(cfg) is False and Inbox(cfg.database).pending() == [rid]
    assert lock_holder(cfg.database) is None


def test_unreadable_tags_are_answered_not_raised(tmp_path):
    path = tmp_path / "fake.flac"
    path.write_bytes(b"not audio at all" * 100)
    cfg = replace(load_config(None), database=tmp_path / "db")
    with Store(cfg.database) as store:
        store.put({"path": path_key(path), "model": "m", "status": "ok", "size": 1, "mtime_ns": 1})
        store.commit()
        with pytest.raises(TagWriteError):
            apply_correction(store, cfg, Correction(path_key(path), "genre", ("Rock",)))
    assert path.read_bytes() == b"not audio at all" * 100


# -- the lock against scans, model upgrades, and what train learns -------------------------------------
def _trumpet_library(tmp: Path) -> tuple[Path, Path]:
    """(library folder, its one real recording), writable."""
    lib = tmp / "lib"
    lib.mkdir()
    song = lib / "trumpet.ogg"
    shutil.copy(TRUMPET, song)
    os.chmod(song, 0o644)
    return lib, song


def test_correction_survives_rescan_and_model_upgrade_and_feeds_train(tmp_path, msd_model):
    from exporter.heads.dataset import collect

    lib, song = _trumpet_library(tmp_path)
    cfg = replace(load_config(None), database=tmp_path / "db")
    with Store(cfg.database) as store:
        scan([lib], cfg, msd_model, store)
    tool_genre = read_fields(song)["GENRE"]
    assert tool_genre and "Classical" not in tool_genre  # the tool said something else
    rid = Inbox(cfg.database).submit(Correction(path_key(song), "genre", ("Classical",)))
    assert apply_now(cfg) and Inbox(cfg.database).collect(rid)["ok"]
    with Store(cfg.database) as store:
        again = scan([lib], cfg, msd_model, store)
        assert again.analysed == 0 and again.skipped == 1  # the correction kept the record current
        forced = scan([lib], cfg, msd_model, store, force=True)
        assert forced.analysed == 1 and forced.written == 0
        # A model upgrade: the stored analysis is from another version, so the file is analysed again.
        mid = msd_model.card.id
        store.update(song, mid, {"analyser": f"{mid}@0.0.1"})
        store.commit()
        upgraded = scan([lib], cfg, msd_model, store)
        assert upgraded.analysed == 1
        assert read_fields(song)["GENRE"] == ["Classical"] and read_fields(song)["TAGGER_LOCKED"] == ["GENRE"]
        ds = collect(store, [msd_model.card], "genre", min_tracks=1)
    assert ds.labels == ["Classical"] and [r["path"] for r in ds.records] == [path_key(song)]


def test_the_daemon_applies_corrections_and_reports_its_status(tmp_path, msd_model):
    from tagger.daemon.watch import Daemon

    lib, song = _trumpet_library(tmp_path)
    cfg = replace(load_config(None), database=tmp_path / "db", settle_seconds=0.2)
    daemon = Daemon(cfg, [lib], model=msd_model)
    daemon.start()
    try:
        deadline = time.monotonic() + 60
        while not daemon.stats.analysed and time.monotonic() < deadline:
            time.sleep(0.1)
        status = read_status(cfg.database)
        assert status["running"] and status["pid"] == os.getpid() and status["roots"] == [str(lib)]
        inbox = Inbox(cfg.database)
        rid = inbox.submit(Correction(path_key(song), "mood", ("Melancholic",)))
        assert apply_now(cfg) is False  # the daemon holds the lock: the server must leave it to the daemon
        answer = inbox.wait(rid, 30)
        assert answer is not None and answer["ok"] and answer["values"] == ["Melancholic"]
        assert read_fields(song)["MOOD"] == ["Melancholic"]
        time.sleep(1.0)  # the daemon must not take its own write back as new work
        assert daemon.stats.analysed == {str(song): 1}
    finally:
        daemon.shutdown()
    status = read_status(cfg.database)
    assert status["running"] is False and status["state"] == "stopped"
    assert json.loads((cfg.database / "daemon.json").read_text())["analysed"] == 1


def test_tagger_set_refuses_a_bad_value_before_touching_anything(tmp_path, capsys):
    from tagger.cli import main

    path = _tool_tagged(tmp_path, ".flac")
    before = path.read_bytes()
    assert main(["set", str(path), "--genre", "a=b", "--database", str(tmp_path / "db")]) == 2
    assert "--genre" in capsys.readouterr().err and path.read_bytes() == before
    assert not (tmp_path / "db").exists()  # refused before the database was even opened
