"""The watch daemon: synthetic-event unit tests (no sleeping) and real-observer integration tests."""
from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from audiofiles import music_like, write_audio
from conftest import ROOT
from watchdog.events import (
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
)

from tagger.analysis.digests import native_digest
from tagger.config import load_config
from tagger.daemon.events import Debouncer, LibraryEventHandler, Op
from tagger.daemon.watch import Daemon
from tagger.library.store import Store

EXT = load_config(None).extensions


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def deb():
    return Debouncer(2.0, Clock())


@pytest.fixture
def handler(deb):
    return LibraryEventHandler(deb, EXT, ("/db/",))


# -- synthetic events ----------------------------------------------------------------------------------
def test_settle_waits_for_quiet(deb, handler):
    handler.dispatch(FileCreatedEvent("/lib/a.flac"))
    deb.clock.t += 1.5
    handler.dispatch(FileModifiedEvent("/lib/a.flac"))  # still being copied
    deb.clock.t += 1.5
    assert deb.take_due() == []
    assert deb.next_due_in() == pytest.approx(0.5)
    deb.clock.t += 0.5
    assert deb.take_due() == ["/lib/a.flac"]
    assert deb.take_due() == [] and deb.pending == 0


def test_many_events_one_batch(deb, handler):
    for i in range(1000):
        handler.dispatch(FileCreatedEvent(f"/lib/{i:04d}.mp3"))
        handler.dispatch(FileClosedEvent(f"/lib/{i:04d}.mp3"))
    deb.clock.t += 2
    assert len(deb.take_due()) == 1000


@pytest.mark.parametrize("name", ["a.mp3.part", "a.tmp", ".syncthing.a.mp3.tmp", "~syncthing~a.mp3.tmp", ".hidden.mp3",
                                  ".a.mp3.tagger-x1y2.tmp", "cover.jpg", "notes.txt", "a.crdownload"])
def test_ignored_names(deb, handler, name):
    handler.dispatch(FileCreatedEvent(f"/lib/{name}"))
    handler.dispatch(FileModifiedEvent(f"/lib/{name}"))
    deb.clock.t += 10
    assert deb.take_due() == [] and deb.take_ops() == []


def test_hidden_folders_and_the_database_are_ignored(deb, handler):
    handler.dispatch(FileCreatedEvent("/lib/.trash/a.mp3"))
    handler.dispatch(FileCreatedEvent("/db/vectors/a.mp3"))
    deb.clock.t += 10
    assert deb.take_due() == []


def test_partial_name_renamed_to_final_counts_as_new(deb, handler):
    handler.dispatch(FileCreatedEvent("/lib/a.mp3.part"))
    handler.dispatch(FileMovedEvent("/lib/a.mp3.part", "/lib/a.mp3"))
    deb.clock.t += 2
    assert deb.take_due() == ["/lib/a.mp3"] and deb.take_ops() == []


def test_own_atomic_write_is_only_a_touch(deb, handler):
    """The writer renames its hidden temp copy over the file: that is a touch, which the
    unchanged size/mtime check in the worker then skips."""
    handler.dispatch(FileMovedEvent("/lib/.a.mp3.tagger-abc.tmp", "/lib/a.mp3"))
    assert deb.take_ops() == []


def test_moves_and_deletes_are_ordered_ops(deb, handler):
    handler.dispatch(FileMovedEvent("/lib/a.mp3", "/lib/b.mp3"))
    handler.dispatch(DirMovedEvent("/lib/Album", "/lib/Album (2001)"))
    handler.dispatch(FileDeletedEvent("/lib/c.flac"))
    handler.dispatch(FileMovedEvent("/lib/d.flac", "/lib/d.flac.bak"))
    assert deb.take_ops() == [Op("move", "/lib/a.mp3", "/lib/b.mp3"),
                              Op("move", "/lib/Album", "/lib/Album (2001)", is_dir=True)]
    deb.clock.t += 1
    handler.dispatch(FileDeletedEvent("/lib/e.flac"))
    deb.clock.t += 1.5
    assert deb.take_ops() == []  # a burst of deletions is judged once it is over
    deb.clock.t += 0.5
    assert deb.take_ops() == [Op("delete", "/lib/c.flac"), Op("delete", "/lib/d.flac"), Op("delete", "/lib/e.flac")]


def test_move_while_settling_follows_the_file(deb, handler):
    handler.dispatch(FileCreatedEvent("/lib/a.mp3"))
    handler.dispatch(FileMovedEvent("/lib/a.mp3", "/lib/x/a.mp3"))
    deb.clock.t += 2
    assert deb.take_due() == ["/lib/x/a.mp3"]


def test_delete_cancels_pending(deb, handler):
    handler.dispatch(FileCreatedEvent("/lib/a.mp3"))
    handler.dispatch(FileDeletedEvent("/lib/a.mp3"))
    deb.clock.t += 5
    assert deb.take_due() == []


def test_a_raising_handler_does_not_stop_watching(deb, handler, caplog):
    calls = []
    real = handler.handle

    def flaky(event):
        calls.append(event)
        if len(calls) == 1:
            raise RuntimeError("boom")
        real(event)

    handler.handle = flaky
    with caplog.at_level(logging.ERROR):
        handler.dispatch(FileCreatedEvent("/lib/a.mp3"))
        handler.dispatch(FileCreatedEvent("/lib/b.mp3"))
    deb.clock.t += 2
    assert deb.take_due() == ["/lib/b.mp3"] and handler.errors == 1 and "boom" in caplog.text


# -- real observer --------------------------------------------------------------------------------------
@pytest.fixture
def cfg(tmp_path):
    return replace(load_config(None), database=tmp_path / "db", settle_seconds=0.5, threads=2, rescan_hours=0)


def wait_for(cond, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def _copy_slowly(src: Path, dest: Path, chunks: int = 4, pause: float = 0.2) -> None:
    data = src.read_bytes()
    step = len(data) // chunks + 1
    with open(dest, "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i:i + step])
            f.flush()
            time.sleep(pause)


def test_daemon_end_to_end(cfg, tmp_path, msd_model):
    lib = tmp_path / "lib"
    (lib / "Album").mkdir(parents=True)
    src = tmp_path / "src"
    src.mkdir()
    fmts = [".flac", ".mp3", ".ogg", ".wav", ".m4a"]
    for i in range(20):
        write_audio(src / f"{i:02d}{fmts[i % 5]}", music_like(3.0 + 0.1 * i, 22050, 1, seed=i), 22050)
    daemon = Daemon(cfg, [lib], model=msd_model)
    daemon.start()
    try:
        for i, f in enumerate(sorted(src.iterdir())):
            dest = (lib / "Album" if i < 5 else lib) / f.name
            if i % 4 == 0:
                _copy_slowly(f, dest)  # pauses shorter than the settle time
            else:
                shutil.copy(f, dest)
        assert wait_for(lambda: len(daemon.stats.analysed) == 20), daemon.stats
        assert wait_for(lambda: len(daemon.stats.written) == 20)
        (lib / "Album").rename(lib / "Album (Remastered)")
        next(lib.glob("11.*")).unlink()
        assert wait_for(lambda: daemon.stats.moved == 5 and daemon.stats.removed == 1), daemon.stats
        quiet = dict(daemon.stats.analysed)
        time.sleep(3 * cfg.settle_seconds + 1)  # the daemon's own writes must not come back as work
        assert daemon.stats.analysed == quiet
    finally:
        daemon.shutdown()
    assert all(n == 1 for n in daemon.stats.analysed.values()), daemon.stats.analysed
    assert all(n == 1 for n in daemon.stats.written.values())
    with Store(cfg.database, writer=False) as store:
        paths = {r["path"] for r in store.records()}
        on_disk = {str(p) for p in lib.rglob("*") if p.is_file()}
        assert paths == on_disk and len(paths) == 19
        assert all(r["status"] == "ok" for r in store.records())


def test_emptied_root_keeps_its_records(cfg, tmp_path, msd_model):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(3):
        write_audio(lib / f"{i}.flac", music_like(3.0, 22050, 1, seed=i), 22050)
    daemon = Daemon(cfg, [lib], model=msd_model)
    daemon.start()
    try:
        assert wait_for(lambda: len(daemon.stats.analysed) == 3)
        for f in lib.iterdir():
            f.unlink()  # what an unmount or an emptied disk looks like from here
        time.sleep(1.5)
    finally:
        daemon.shutdown()
    with Store(cfg.database, writer=False) as store:
        assert len(store) == 3


def test_inotify_limit_falls_back_to_polling(cfg, tmp_path, msd_model, monkeypatch, caplog):
    from watchdog.observers.api import BaseObserver

    lib = tmp_path / "lib"
    lib.mkdir()
    real = BaseObserver.schedule

    def limited(self, handler, path, recursive=False, **kw):
        if type(self).__name__ != "PollingObserver":
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        return real(self, handler, path, recursive=recursive, **kw)

    monkeypatch.setattr(BaseObserver, "schedule", limited)
    daemon = Daemon(replace(cfg, poll_seconds=0.2), [lib], model=msd_model)
    with caplog.at_level(logging.WARNING):
        daemon.start()
    try:
        assert daemon.polled == [lib]
        assert sum("fs.inotify.max_user_watches" in r.message for r in caplog.records) == 1
        write_audio(lib / "a.flac", music_like(3.0, 22050, 1), 22050)
        assert wait_for(lambda: len(daemon.stats.analysed) == 1, 30)
    finally:
        daemon.shutdown()


# -- the real process: signals, systemd notify, crash recovery -------------------------------------------
_SPAWNED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _close_spawned():
    """Every daemon a test started is gone afterwards, its pipe closed."""
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()


def _spawn(lib: Path, db: Path, tmp: Path, extra_env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp / "noconfig"), **(extra_env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "tagger", "watch", str(lib), "--database", str(db),
                             "--settle", "0.3", "--threads", "2", "--model", "musicnn-msd"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _SPAWNED.append(proc)
    return proc


def _library(tmp_path: Path, n: int) -> tuple[Path, dict]:
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(n):
        write_audio(lib / f"{i:03d}.flac", music_like(3.0, 22050, 1, seed=i), 22050)
    return lib, {p: native_digest(p) for p in lib.iterdir()}


def _puts(db: Path) -> int:
    j = db / "records.journal"
    return j.read_bytes().count(b'"op":"put"') if j.exists() else 0


def test_sigterm_mid_batch_exits_zero_and_leaves_everything_intact(tmp_path):
    lib, digests = _library(tmp_path, 150)
    db = tmp_path / "db"
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)
    proc = _spawn(lib, db, tmp_path, {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"})
    try:
        messages = []
        while not any("READY=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        assert wait_for(lambda: _puts(db) >= 1, 60)  # the first commit (every 50 files) is in
        while not any("WATCHDOG=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # dump the stacks of a hung daemon into the failure
            time.sleep(1)
            proc.kill()
            raise AssertionError(proc.stderr.read()) from None
        log = proc.stderr.read()
        assert rc == 0, log
        assert time.monotonic() - t < 30, log
        sock.settimeout(1)
        try:
            while True:
                messages.append(sock.recv(4096).decode())
        except (socket.timeout, BlockingIOError):
            pass
        assert any("STOPPING=1" in m for m in messages)
    finally:
        sock.close()
        if proc.poll() is None:
            proc.kill()
    with Store(db, writer=False) as store:
        assert 0 < len(store) < 150, messages  # stopped mid-batch, after finishing the file in hand
    for p, d in digests.items():
        assert native_digest(p) == d
    assert not [p for p in lib.iterdir() if p.name.startswith(".")]


def test_kill9_mid_batch_then_restart_completes(tmp_path):
    lib, digests = _library(tmp_path, 150)
    db = tmp_path / "db"
    proc = _spawn(lib, db, tmp_path)
    assert wait_for(lambda: _puts(db) >= 1, 60)
    proc.kill()
    proc.wait()
    with Store(db, writer=False) as s:
        assert len(s) < 150  # really mid-batch
    for p, d in digests.items():
        assert native_digest(p) == d
    proc = _spawn(lib, db, tmp_path)
    try:
        def done() -> bool:
            with Store(db, writer=False) as s:
                return len(s) == 150
        assert wait_for(done, 120)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    with Store(db, writer=False) as store:
        assert all(r["status"] == "ok" for r in store.records())
    assert not [p for p in lib.iterdir() if p.name.startswith(".")]


def test_scan_refuses_while_the_daemon_owns_the_database(tmp_path):
    lib, _ = _library(tmp_path, 1)
    db = tmp_path / "db"
    proc = _spawn(lib, db, tmp_path)
    try:
        assert wait_for(lambda: _puts(db) >= 1, 60)
        env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "noconfig")}
        out = subprocess.run([sys.executable, "-m", "tagger", "scan", str(lib), "--database", str(db)],
                             cwd=ROOT, env=env, capture_output=True, text=True)
        assert out.returncode == 5 and "in use by another tagger process" in out.stderr
        show = subprocess.run([sys.executable, "-m", "tagger", "show", str(lib / "000.flac"), "--database", str(db)],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        assert show.returncode == 0 and "status ok" in show.stdout  # readers work while it runs
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_sighup_reloads_the_configuration(cfg, tmp_path, msd_model):
    conf = tmp_path / "config.yaml"
    conf.write_text(f"database: {cfg.database}\nwatch: {{settle_seconds: 0.5, rescan_hours: 0}}\n")
    daemon = Daemon(replace(cfg, source=str(conf)), [tmp_path], config_path=conf, model=msd_model)
    daemon.start()
    try:
        conf.write_text(f"database: {cfg.database}\nwatch: {{settle_seconds: 4, rescan_hours: 0}}\n"
                        "write: {fields: {genre: {policy: merge, max_values: 1, min_score: 0.2, relative: 0.5}}}\n")
        daemon.reload_event.set()
        daemon.debouncer.wake()
        assert wait_for(lambda: daemon.cfg.settle_seconds == 4.0, 10)
        assert daemon.cfg.fields["genre"].policy == "merge" and daemon.debouncer.settle == 4.0
        conf.write_text("watch: {settle_seconds: -1}\n")  # a bad edit is refused, the old settings stay
        daemon.reload_event.set()
        daemon.debouncer.wake()
        time.sleep(1.5)
        assert daemon.cfg.settle_seconds == 4.0
    finally:
        daemon.shutdown()


def test_notify_never_blocks_on_a_full_receiver(tmp_path, monkeypatch):
    from tagger.daemon.notify import notify

    path = tmp_path / "n.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        t = time.monotonic()
        results = [notify("WATCHDOG=1") for _ in range(2000)]  # nobody reads: the queue fills up
        assert time.monotonic() - t < 5 and results[0] and not results[-1]
        assert sock.recv(100) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_daemon_runs_the_bad_input_corpus_to_completion(cfg, tmp_path, msd_model):
    """Every bad file arriving at a running daemon is reported with its reason; no good file is missed;
    the daemon keeps going (a FIFO included, which once stopped it for good)."""
    from audiofiles import good_and_bad

    lib = tmp_path / "lib"
    lib.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    good, bad = good_and_bad(src)
    daemon = Daemon(cfg, [lib], model=msd_model)
    daemon.start()
    try:
        os.mkfifo(lib / "pipe.wav")
        for p in good + bad:
            shutil.copy(os.fsencode(p), os.path.join(os.fsencode(lib), os.fsencode(p.name)))
        total = len(good) + len(bad) + 1
        assert wait_for(lambda: len(daemon.stats.analysed) == total, 180), (len(daemon.stats.analysed), total)
        assert daemon.worker.is_alive() and daemon.worker_error is None
        failed = {os.path.basename(p): r for p, r in daemon.stats.failed.items()}
        assert "FIFO" in failed["pipe.wav"]
        assert {p.name for p in bad} <= set(failed) and not {p.name for p in good} & set(failed)
        assert all(r for r in failed.values())
    finally:
        daemon.shutdown()


def test_sighup_adding_a_model_analyses_what_it_lacks(cfg, tmp_path, msd_model):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(2):
        write_audio(lib / f"{i}.flac", music_like(4.0, 22050, 1, seed=i), 22050)
    conf = tmp_path / "config.yaml"
    conf.write_text(f"database: {cfg.database}\nmodels: [musicnn-msd]\nwatch: {{settle_seconds: 0.3, rescan_hours: 0}}\n")
    start = replace(cfg, source=str(conf), models=("musicnn-msd",), settle_seconds=0.3, rescan_hours=0)
    daemon = Daemon(start, [lib], config_path=conf, model=msd_model)
    daemon.start()
    try:
        assert wait_for(lambda: len(daemon.stats.analysed) == 2)
        conf.write_text(f"database: {cfg.database}\nmodels: [musicnn-msd, fcn-mtat]\n"
                        "watch: {settle_seconds: 0.3, rescan_hours: 0}\n")
        daemon.reload_event.set()
        daemon.debouncer.wake()

        def both() -> bool:
            with Store(cfg.database, writer=False) as store:
                return all(store.get(p, "fcn-mtat") is not None for p in lib.iterdir())
        assert wait_for(both, 120)
    finally:
        daemon.shutdown()
