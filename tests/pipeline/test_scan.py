"""`tagger scan` end to end with the real model: formats, bad input, incremental runs, crash recovery."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from audiofiles import good_and_bad, music_like, write_audio
from conftest import ROOT, TRUMPET

from tagger.analysis.digests import native_digest
from tagger.cli import main
from tagger.config import load_config
from tagger.library.store import Store
from tagger.pipeline.scanner import scan


@pytest.fixture
def cfg(tmp_path):
    from dataclasses import replace

    return replace(load_config(None), database=tmp_path / "db", threads=2, commit_every=5)


def snapshot(root: Path) -> dict[bytes, tuple[bytes, int]]:
    out = {}
    for dirpath, _, names in os.walk(os.fsencode(root)):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[p] = (f.read(), os.stat(p).st_mtime_ns)
    return out


def test_bad_input_corpus(cfg, msd_model, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    good, cut_or_bad = good_and_bad(lib)
    ro = write_audio(lib / "readonly.flac", music_like(4.0, 44100, 2, seed=9), 44100)
    ro.chmod(0o444)
    digests = {p: native_digest(p) for p in good + [ro]}
    before = snapshot(lib)
    with Store(cfg.database) as store:
        report = scan([lib], cfg, msd_model, store)
        records = {r["path"]: r for r in store.records()}
    failed = {Path(p).name: reason for p, reason in report.failed}
    for p in good:
        rec = records[os.fsdecode(os.path.abspath(p))]
        assert rec["status"] == "ok", (p, rec)
        assert native_digest(p) == digests[p]  # any byte change was a verified tag write
    for p in cut_or_bad:  # truncated files are refused too, not analysed as zero-filled silence
        assert records[str(p)]["status"] == "failed" and failed[p.name], p.name
    assert "empty" in failed["empty.mp3"] and "PNG" in failed["image.mp3"]
    after = snapshot(lib)
    for p in cut_or_bad:
        assert after[os.fsencode(p)] == before[os.fsencode(p)], p  # bad files are never touched
    assert after[os.fsencode(ro)] == before[os.fsencode(ro)]
    assert any("read-only" in r for p, r in report.write_failed if p.endswith("readonly.flac"))
    written = [p for p in good if after[os.fsencode(p)][0] != before[os.fsencode(p)][0]]
    assert written, "no good file was tagged"


def test_second_scan_is_a_no_op_and_pretend_writes_nothing(cfg, msd_model, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i, fmt in enumerate((".mp3", ".flac", ".ogg", ".m4a")):
        write_audio(lib / f"t{i}{fmt}", music_like(4.0, 44100, 2, seed=i), 44100)
    shutil.copy(TRUMPET, lib / "trumpet.ogg")
    before = snapshot(lib)
    pretend = scan([lib], cfg, msd_model, None, pretend=True)
    assert pretend.analysed == 5 and snapshot(lib) == before and not cfg.database.exists()
    assert any(c.field == "GENRE" and c.after == ["Jazz"] for o in pretend.outcomes if o.path.name == "trumpet.ogg"
               for c in o.changes)
    with Store(cfg.database) as store:
        first = scan([lib], cfg, msd_model, store)
    assert first.analysed == 5 and first.written >= 1 and not first.failed
    tagged = snapshot(lib)
    with Store(cfg.database) as store:
        second = scan([lib], cfg, msd_model, store)
    assert second.analysed == 0 and second.skipped == 5 and second.written == 0
    assert snapshot(lib) == tagged  # bytes and mtimes unchanged
    with Store(cfg.database) as store:
        forced = scan([lib], cfg, msd_model, store, force=True)
    assert forced.analysed == 5 and forced.written == 0  # same model, same tags: nothing to rewrite
    assert snapshot(lib) == tagged


def test_failures_are_remembered_and_stale_records_pruned_safely(cfg, msd_model, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "broken.mp3").write_bytes(b"garbage" * 100)
    keep = write_audio(lib / "keep.flac", music_like(3.0, 44100, 1), 44100)
    gone = write_audio(lib / "gone.flac", music_like(3.0, 44100, 1, seed=1), 44100)
    with Store(cfg.database) as store:
        r1 = scan([lib], cfg, msd_model, store)
    assert len(r1.failed) == 1
    gone.unlink()
    with Store(cfg.database) as store:
        r2 = scan([lib], cfg, msd_model, store)
        assert r2.analysed == 0 and r2.skipped == 2 and r2.removed == 1  # the broken file is not retried
        assert store.get(lib / "broken.mp3", "musicnn-msd")["status"] == "failed"
    # The library disappears (unmounted disk, emptied folder): nothing is removed.
    shutil.rmtree(lib)
    with Store(cfg.database) as store:
        r3 = scan([lib], cfg, msd_model, store)
        assert r3.missing_roots and len(store) == 2
    lib.mkdir()
    with Store(cfg.database) as store:
        r4 = scan([lib], cfg, msd_model, store)
        assert r4.kept_roots and len(store) == 2
    assert keep


def test_kill_during_a_200_file_scan_then_rescan_completes(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    formats = (".flac", ".mp3", ".ogg", ".wav")
    for i in range(200):
        write_audio(lib / f"{i:03d}{formats[i % 4]}", music_like(3.0, 22050, 1, seed=i), 22050)
    digests = {p: native_digest(p) for p in lib.iterdir()}
    db = tmp_path / "db"
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "noconfig")}
    cmd = [sys.executable, "-m", "tagger", "scan", str(lib), "--database", str(db), "--threads", "2", "--json",
           "--model", "musicnn-msd", "--model", "fcn-msd"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait for a few commits, then kill mid-scan
        journal = db / "records.journal"
        if journal.exists() and journal.read_bytes().count(b'"op":"put"') >= 40:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Store(db, writer=False) as s:
        done = len({r["path"] for r in s.records()})
    assert 0 < done < 200
    for p, d in digests.items():
        assert native_digest(p) == d, p
    rc = main(["scan", str(lib), "--database", str(db), "--threads", "2", "--json",
               "--model", "musicnn-msd", "--model", "fcn-msd"])
    assert rc == 0
    with Store(db, writer=False) as s:
        assert len(s) == 400 and all(r["status"] == "ok" for r in s.records())
    assert not [p for p in lib.iterdir() if p.name.startswith(".")]  # no temp copy left behind


def test_no_write_then_write_applies_decisions_and_unwritable_files_do_not_loop(cfg, tmp_path, msd_model):
    """A --no-write scan's decisions are written by the next writing scan without analysing again; a file whose
    tags cannot be written (WMA) is reported once, not decided again on every scan."""
    from dataclasses import replace

    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(TRUMPET, lib / "t.ogg")
    write_audio(lib / "w.wma", music_like(4.0, 44100, 2), 44100)
    with Store(cfg.database) as store:
        first = scan([lib], replace(cfg, write_enabled=False), msd_model, store)
    assert first.analysed == 2 and first.written == 0
    with Store(cfg.database) as store:
        second = scan([lib], cfg, msd_model, store)
    assert second.analysed == 0 and second.redecided == 2 and second.written == 1
    assert [p for p, _ in second.write_failed] == [str(lib / "w.wma")]
    with Store(cfg.database) as store:
        third = scan([lib], cfg, msd_model, store)
    assert (third.analysed, third.redecided, third.skipped, third.write_failed) == (0, 0, 2, [])
