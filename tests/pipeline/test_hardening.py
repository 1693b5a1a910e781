"""Defects found by attacking the tool: each test failed before its fix (hangs, crashes, data at risk)."""
from __future__ import annotations

import errno
import json
import os
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from audiofiles import music_like, write_audio
from conftest import TRUMPET

from tagger.analysis.engine import Engine, TrackFailure
from tagger.cli import main
from tagger.config import load_config
from tagger.errors import TagWriteError
from tagger.library.store import Store
from tagger.pipeline.scanner import scan
from tagger.tagging.plan import Change
from tagger.tagging.writer import read_fields, write_changes


@pytest.fixture
def cfg(tmp_path):
    return replace(load_config(None), database=tmp_path / "db", threads=2, models=("musicnn-msd",))


def _run(fn, timeout=120):
    """Run fn in a thread; fail (instead of hanging the suite) if it does not finish."""
    box: dict = {}

    def target():
        try:
            box["v"] = fn()
        except BaseException as exc:  # handed to the test thread
            box["e"] = exc

    t = threading.Thread(target=target, name="test-runner", daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"did not finish within {timeout} s (hang)"
    if "e" in box:
        raise box["e"]
    return box.get("v")


def test_a_fifo_in_the_library_is_reported_not_waited_on(cfg, msd_model, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    os.mkfifo(lib / "x.wav")
    write_audio(lib / "good.flac", music_like(4.0, 44100, 2), 44100)
    with Store(cfg.database) as store:
        report = _run(lambda: scan([lib], cfg, msd_model, store))
    failed = dict(report.failed)
    assert "FIFO" in failed[str(lib / "x.wav")] and report.analysed == 1


def test_any_error_while_decoding_becomes_that_files_failure(msd_model, tmp_path, monkeypatch):
    import tagger.analysis.cut as eng

    good = write_audio(tmp_path / "a.flac", music_like(4.0, 44100, 2), 44100)
    bad = write_audio(tmp_path / "b.flac", music_like(4.0, 44100, 2, seed=1), 44100)
    real = eng.stream_native_mono

    def flaky(path, info=None):
        if Path(path).name == "b.flac":
            raise RuntimeError("decoder library bug")
        return real(path, info)

    monkeypatch.setattr(eng, "stream_native_mono", flaky)
    results = _run(lambda: list(Engine(msd_model).analyse([good, bad, good])))
    assert [type(r).__name__ for r in results].count("TrackResult") == 2
    (fail,) = [r for r in results if isinstance(r, TrackFailure)]
    assert fail.path == bad and "RuntimeError: decoder library bug" in fail.reason
    assert isinstance(fail.error.__cause__, RuntimeError)


def test_a_failing_item_source_ends_the_run_instead_of_hanging(msd_model, tmp_path):
    good = write_audio(tmp_path / "a.flac", music_like(4.0, 44100, 2), 44100)

    def items():
        yield good
        raise OSError("the path source broke")

    with pytest.raises(OSError, match="path source broke"):
        _run(lambda: list(Engine(msd_model).analyse(items())))


def test_long_multibyte_file_name_is_tagged(cfg, msd_model, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    name = "音" * 80 + ".flac"  # 245 bytes: a temp name cut at 100 characters would be 300+ bytes
    assert len(name.encode()) < 255
    write_audio(lib / name, music_like(4.0, 44100, 2), 44100)
    with Store(cfg.database) as store:
        report = scan([lib], cfg, msd_model, store)
    assert report.analysed == 1 and not report.write_failed and report.written == 1
    assert read_fields(lib / name)["TAGGER_MODEL"]


def test_a_full_disk_fails_one_tag_write_and_the_scan_goes_on(cfg, msd_model, tmp_path, monkeypatch):
    import tagger.tagging.writer as w

    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(3):
        write_audio(lib / f"s{i}.flac", music_like(4.0, 44100, 2, seed=i), 44100)
    real = shutil.copyfile

    def full(src, dst, *a, **k):
        if Path(src).name == "s1.flac":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(w.shutil, "copyfile", full)
    before = (lib / "s1.flac").read_bytes()
    with Store(cfg.database) as store:
        report = scan([lib], cfg, msd_model, store)
    assert report.written == 2 and len(report.write_failed) == 1
    assert "No space left" in report.write_failed[0][1]
    assert (lib / "s1.flac").read_bytes() == before
    assert not [p for p in lib.iterdir() if ".tagger-" in p.name]  # no temp copy left behind


def test_a_file_replaced_during_the_write_is_not_overwritten(tmp_path, monkeypatch):
    """Same size, same mtime, different audio: the final check must notice, and the user's file survives."""
    import tagger.tagging.writer as w

    path = write_audio(tmp_path / "t.flac", music_like(4.0, 44100, 2), 44100)
    other = tmp_path / "other.flac"
    write_audio(other, music_like(4.0, 44100, 2, seed=7), 44100)
    st = os.stat(path)
    real = w.packet_digest
    calls = []

    def replace_midway(p):
        calls.append(p)
        if len(calls) == 2:  # the tagged copy is being verified: the user swaps the file now
            data = bytearray(path.read_bytes())
            data[-100:] = bytes(100)  # same size, different bytes
            tmp = path.with_name("swap")
            tmp.write_bytes(bytes(data))
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.replace(tmp, path)
        return real(p)

    monkeypatch.setattr(w, "packet_digest", replace_midway)
    with pytest.raises(TagWriteError, match="replaced"):
        write_changes(path, [Change("GENRE", [], ["Jazz"])], expect=None)
    assert path.read_bytes()[-100:] == bytes(100)  # the user's new file is intact


def test_symlink_target_is_tagged_in_place_and_hard_links_are_refused(tmp_path):
    target = write_audio(tmp_path / "real.flac", music_like(4.0, 44100, 2), 44100)
    link = tmp_path / "link.flac"
    link.symlink_to(target)
    write_changes(link, [Change("GENRE", [], ["Jazz"])], expect=None)
    assert link.is_symlink() and read_fields(target)["GENRE"] == ["Jazz"]
    hard = tmp_path / "hard.flac"
    os.link(target, hard)
    before = target.read_bytes()
    with pytest.raises(TagWriteError, match="hard links"):
        write_changes(hard, [Change("GENRE", ["Jazz"], ["Blues"])], expect=None)
    assert os.stat(target).st_nlink == 2 and target.read_bytes() == before


def test_unreadable_folder_is_reported_and_its_records_kept(cfg, msd_model, tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    (lib / "locked").mkdir(parents=True)
    write_audio(lib / "a.flac", music_like(4.0, 44100, 2), 44100)
    write_audio(lib / "locked" / "b.flac", music_like(4.0, 44100, 2, seed=1), 44100)
    with Store(cfg.database) as store:
        assert scan([lib], cfg, msd_model, store).analysed == 2
    real = os.scandir

    def denied(path="."):
        if os.fspath(path).endswith("locked"):  # what a chmod 000 folder does to a non-root user
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", denied)
    with Store(cfg.database) as store:
        report = scan([lib], cfg, msd_model, store)
        assert store.get(lib / "locked" / "b.flac", "musicnn-msd") is not None  # not pruned
    assert any("locked" in p and "Permission denied" in r for p, r in report.failed)


@pytest.mark.parametrize("damage,needle", [
    (lambda db: (db / "records.json").write_text("[]"), "records.json"),
    (lambda db: (db / "records.json").write_bytes(b""), "empty"),
    (lambda db: (db / "records.journal").write_text("123\n"), "records.journal"),
    (lambda db: (db / "records.journal").write_text('{"op": "put", "id": 99, "doc": {"model": "m"}}\n'),
     "records.journal"),
    (lambda db: [p.write_text("garbage") for p in (db / "vectors").glob("*[!d].json")], ".json"),
])
def test_corrupt_database_shapes_exit_4_naming_the_file(cfg, msd_model, tmp_path, capsys, damage, needle):
    lib = tmp_path / "lib"
    lib.mkdir()
    song = write_audio(lib / "a.flac", music_like(4.0, 44100, 2), 44100)
    with Store(cfg.database) as store:
        scan([lib], cfg, msd_model, store)
    for p in cfg.database.glob("records.json.cache"):
        p.unlink()
    damage(cfg.database)
    capsys.readouterr()
    code = main(["show", str(song), "--database", str(cfg.database), "--model", "musicnn-msd"])
    if code == 0:  # show may not touch the damaged part; similar reads every vector
        code = main(["similar", str(song), "--database", str(cfg.database), "--model", "musicnn-msd"])
    err = capsys.readouterr().err
    assert code == 4, err
    assert needle in err and "Traceback" not in err


def test_deleted_vectors_are_detected_and_rebuilt_by_a_rescan(cfg, msd_model, tmp_path, capsys):
    lib = tmp_path / "lib"
    lib.mkdir()
    song = write_audio(lib / "a.flac", music_like(4.0, 44100, 2), 44100)
    with Store(cfg.database) as store:
        scan([lib], cfg, msd_model, store)
        tags_before, _ = store.vectors(store.get(song, "musicnn-msd"))
    shutil.rmtree(cfg.database / "vectors")
    assert main(["show", str(song), "--database", str(cfg.database), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["models"]
    assert "missing" in shown[0]["problem"] and "tags" not in shown[0]  # never a list of zeros
    with Store(cfg.database) as store:
        report = scan([lib], cfg, msd_model, store)
        assert report.analysed == 1  # re-analysed although size and mtime did not change
        tags_after, _ = store.vectors(store.get(song, "musicnn-msd"))
    np.testing.assert_allclose(tags_after, tags_before, atol=1e-6)


def test_sighup_with_a_bad_model_name_keeps_the_daemon_running(cfg, msd_model, tmp_path):
    from tagger.daemon.watch import Daemon

    conf = tmp_path / "config.yaml"
    conf.write_text(f"database: {cfg.database}\nwatch: {{settle_seconds: 0.5, rescan_hours: 0}}\n")
    daemon = Daemon(replace(cfg, source=str(conf)), [tmp_path], config_path=conf, model=msd_model)
    daemon.start()
    settle = daemon.cfg.settle_seconds
    try:
        conf.write_text(f"database: {cfg.database}\nmodels: [musicnn-msdd]\nwatch: {{settle_seconds: 2}}\n")
        daemon.reload_event.set()
        daemon.debouncer.wake()
        time.sleep(1.5)
        assert daemon.worker.is_alive() and not daemon.stop_event.is_set()
        assert [m.card.id for m in daemon.models] == ["musicnn-msd"] and daemon.cfg.settle_seconds == settle
    finally:
        daemon.shutdown()


def test_a_file_queued_twice_while_in_flight_does_not_crash_the_scanner(cfg, msd_model, tmp_path):
    """The daemon can hand the same path in again while its first analysis is still running."""
    from tagger.pipeline.scanner import Scanner, ScanReport

    song = write_audio(tmp_path / "a.flac", music_like(4.0, 44100, 2), 44100)
    st = os.stat(song)
    with Store(cfg.database) as store:
        report = ScanReport()
        Scanner(cfg, msd_model, store).run(iter([(song, st), (song, st)]), report)
    assert report.analysed == 2 and not report.failed


def _wav_with_junk(path: Path, seconds: float = 4.0, junk: int = 100_000) -> Path:
    """A 16-bit stereo WAV with a big JUNK chunk before the audio (as some editors write)."""
    import struct

    pcm = (music_like(seconds, 44100, 2).T * 20000).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 2, 44100, 44100 * 4, 4, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"JUNK" + struct.pack("<I", junk) + bytes(junk)
    body += b"data" + struct.pack("<I", len(pcm)) + pcm
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_wav_cut_behind_a_big_chunk_is_refused(tmp_path):
    from tagger.analysis.decode import decode
    from tagger.errors import DecodeError

    whole = _wav_with_junk(tmp_path / "whole.wav")
    assert decode(whole, 16000).duration == pytest.approx(4.0, abs=0.01)
    cut = tmp_path / "cut.wav"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match="truncated"):
        decode(cut, 16000)


def test_wav_with_a_placeholder_data_size_is_measured_not_trusted(tmp_path):
    """Streaming writers leave 0xFFFFFFFF as the data size: 6.7 hours of silence if believed."""
    from tagger.analysis.decode import decode

    path = _wav_with_junk(tmp_path / "stream.wav", junk=16)
    data = bytearray(path.read_bytes())
    at = data.index(b"data") + 4
    data[at:at + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    audio = decode(path, 16000)
    assert audio.duration == pytest.approx(4.0, abs=0.05)


def test_watchdog_keepalive_follows_progress_not_a_live_thread(cfg, msd_model, tmp_path):
    from tagger.daemon.watch import Daemon

    daemon = Daemon(cfg, [tmp_path], model=msd_model)
    assert daemon.progressing(stall=5)
    daemon.heartbeat -= 100  # the worker has not turned its loop for 100 s (blocked somewhere)
    assert not daemon.progressing(stall=60)
    engine = Engine(msd_model)
    daemon.engines = [engine]  # ... but its scan is decoding and inferring: that is progress
    assert daemon.progressing(stall=60)
    engine.heartbeat -= 100
    assert not daemon.progressing(stall=60)


def test_a_journal_append_on_a_full_disk_is_a_store_error_and_the_database_stays_readable(tmp_path, monkeypatch):
    import builtins

    from tagger.errors import StoreError

    with Store(tmp_path / "db") as store:
        store.put({"path": str(tmp_path / "a.flac"), "model": "m", "status": "failed", "reason": "x"})
        store.commit()
        store.put({"path": str(tmp_path / "b.flac"), "model": "m", "status": "failed", "reason": "y"})
        real_open = builtins.open

        class Full:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *a):
                self.f.close()

            def write(self, data):
                self.f.write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")

        def fake_open(path, mode="r", *a, **k):
            f = real_open(path, mode, *a, **k)
            return Full(f) if str(path).endswith("records.journal") and "a" in mode else f

        monkeypatch.setattr(builtins, "open", fake_open)
        with pytest.raises(StoreError, match="No space left"):
            store.commit()
        monkeypatch.setattr(builtins, "open", real_open)
    with Store(tmp_path / "db", writer=False) as store:
        assert [r["reason"] for r in store.records()] == ["x"]


def test_json_output_survives_file_names_that_are_not_utf8(tmp_path, capsys):
    lib = tmp_path / "lib"
    lib.mkdir()
    name = os.path.join(os.fsencode(lib), b"caf\xe9-\xff.ogg")
    shutil.copy(TRUMPET, name)
    assert main(["scan", str(lib), "--json", "--no-write", "--model", "musicnn-msd",
                 "--database", str(tmp_path / "db")]) == 0
    report = json.loads(capsys.readouterr().out)
    (f,) = report["files"]
    assert os.fsencode(f["path"]) == name


def test_an_analysis_of_a_file_that_changed_before_its_write_is_dropped(cfg, msd_model, tmp_path):
    from tagger.pipeline.scanner import Scanner, ScanReport

    song = write_audio(tmp_path / "a.flac", music_like(4.0, 44100, 2), 44100)
    st = os.stat(song)
    write_audio(song, music_like(5.0, 44100, 2, seed=3), 44100)  # the user replaced it meanwhile
    os.utime(song, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with Store(cfg.database) as store:
        report = ScanReport()
        Scanner(cfg, msd_model, store).run(iter([(song, st)]), report)
        assert "changed since it was analysed" in report.write_failed[0][1]
        assert store.get(song, "musicnn-msd") is None  # not stored: it described audio that is gone
    with Store(cfg.database) as store:
        again = scan([tmp_path], cfg, msd_model, store)
        assert again.analysed == 1 and again.written == 1 and store.get(song, "musicnn-msd")["status"] == "ok"
