"""The database: batched atomic commits, vectors consistent with records, one writer, crash safety."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tagger.errors import StoreError, StoreLockedError
from tagger.library.store import Store


def _vec(i, n=3, d=4):
    return np.full(n, i, np.float32), np.full(d, -i, np.float32)


def _rec(i, **kw):
    return {"path": f"/lib/{i}.flac", "model": "m", "status": "ok", **kw}


def test_put_commit_reopen(tmp_path):
    with Store(tmp_path) as s:
        for i in range(10):
            s.put(_rec(i), *_vec(i))
        s.commit()
    with Store(tmp_path, writer=False) as s:
        assert len(s) == 10
        tags, emb = s.vectors(s.get("/lib/7.flac", "m"))
        assert tags.tolist() == [7, 7, 7] and emb.tolist() == [-7] * 4


def test_uncommitted_changes_are_not_visible_after_a_crash(tmp_path):
    s = Store(tmp_path)
    s.put(_rec(1), *_vec(1))
    s.commit()
    s.put(_rec(2), *_vec(2))
    s.put(_rec(1), *_vec(9))  # update, not committed
    s.close()  # no commit: as if the process died here
    with Store(tmp_path, writer=False) as r:
        assert len(r) == 1
        assert r.vectors(r.get("/lib/1.flac", "m"))[0].tolist() == [1, 1, 1]


def test_update_remove_rename_and_slot_reuse(tmp_path):
    with Store(tmp_path) as s:
        for i in range(4):
            s.put(_rec(i), *_vec(i))
        s.commit()
        s.put(_rec(1, note="again"), *_vec(11))
        assert s.remove("/lib/2.flac", "m")
        assert s.rename("/lib/3.flac", "/lib/moved.flac") == 1
        s.commit()
        s.put(_rec(5), *_vec(5))  # takes a slot freed by the commit above
        s.commit()
        slots = [r["slot"] for r in s.records()]
        assert len(slots) == len(set(slots)) and max(slots) <= 4
    with Store(tmp_path, writer=False) as r:
        assert r.get("/lib/2.flac", "m") is None and r.get("/lib/3.flac", "m") is None
        assert r.vectors(r.get("/lib/moved.flac", "m"))[0].tolist() == [3, 3, 3]
        assert r.vectors(r.get("/lib/1.flac", "m"))[0].tolist() == [11, 11, 11]
        assert r.get("/lib/1.flac", "m")["note"] == "again"


def test_second_writer_gets_a_clear_error(tmp_path):
    with Store(tmp_path) as writer:
        writer.put(_rec(1), *_vec(1))
        writer.commit()
        with pytest.raises(StoreLockedError, match="in use by another tagger process"):
            Store(tmp_path)
        code = "from tagger.library.store import Store\nStore(__import__('sys').argv[1])"
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
        assert proc.returncode != 0 and "in use by another tagger process" in proc.stderr
        with Store(tmp_path, writer=False) as reader:  # readers are never blocked
            assert len(reader) == 1
    Store(tmp_path).close()  # the lock went away with the writer


def test_corrupt_database_is_reported_not_overwritten(tmp_path):
    (tmp_path / "vectors").mkdir()
    (tmp_path / "records.json").write_text("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        Store(tmp_path)
    assert (tmp_path / "records.json").read_text() == "{not json"


def test_reader_needs_an_existing_database(tmp_path):
    with pytest.raises(StoreError, match="no database"):
        Store(tmp_path / "none", writer=False)


def test_kill_during_updates_leaves_a_consistent_database(tmp_path):
    """SIGKILL a writer mid-stream of updates; every committed record must point at its own vectors."""
    script = textwrap.dedent("""
        import sys, numpy as np
        import tagger.library.store
        from tagger.library.store import Store
        tagger.library.store.COMPACT_MIN_BYTES = 3000  # fold the journal often, so kills land in compactions too
        s = Store(sys.argv[1])
        i = 0
        while True:
            k = i % 50
            s.put({"path": f"/lib/{k}.flac", "model": "m", "status": "ok", "gen": i},
                  np.full(3, i, np.float32), np.full(4, k, np.float32))
            if i % 7 == 6:
                s.commit()
                print(i, flush=True)
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    commits = 0
    while commits < 60:
        if proc.stdout.readline():
            commits += 1
    time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    json.loads((tmp_path / "records.json").read_text())  # a whole file, never half
    with Store(tmp_path) as s:  # the lock died with the process
        assert len(s) == 50
        for r in s.records():
            tags, emb = s.vectors(r)
            assert tags.tolist() == [r["gen"]] * 3, r
            assert emb.tolist() == [int(r["path"].split("/")[-1].split(".")[0])] * 4


def test_torn_journal_line_is_dropped_and_corruption_reported(tmp_path):
    with Store(tmp_path) as s:
        s.put(_rec(1), *_vec(1))
        s.commit()
        s.put(_rec(2), *_vec(2))
        s.commit()
    journal = tmp_path / "records.journal"
    good = journal.read_bytes()
    journal.write_bytes(good + b'{"op":"put","id":9,"doc":{"pa')  # a crash in the middle of an append
    with Store(tmp_path) as s:
        assert len(s) == 2
    assert journal.read_bytes() == good  # the writer cut the torn tail off
    journal.write_bytes(b"garbage\n" + good)
    with pytest.raises(StoreError, match="journal line 1 is corrupt"):
        Store(tmp_path)


def test_compaction_folds_the_journal(tmp_path, monkeypatch):
    import tagger.library.store

    monkeypatch.setattr(tagger.library.store, "COMPACT_MIN_BYTES", 500)
    with Store(tmp_path) as s:
        for i in range(30):
            s.put(_rec(i), *_vec(i))
            s.commit()
        s.remove("/lib/3.flac", "m")
        s.commit()
    assert (tmp_path / "records.journal").stat().st_size < 500
    assert len(json.loads((tmp_path / "records.json").read_text())["tracks"]) >= 20
    with Store(tmp_path, writer=False) as r:
        assert len(r) == 29 and r.get("/lib/3.flac", "m") is None
        assert r.vectors(r.get("/lib/29.flac", "m"))[0].tolist() == [29] * 3


def test_fast_open_snapshot_is_only_used_when_it_matches(tmp_path):
    with Store(tmp_path) as s:
        for i in range(3):
            s.put(_rec(i), *_vec(i))
        s.commit()
        s.compact()
    cache = tmp_path / "records.json.cache"
    assert cache.exists()
    cache.write_bytes(b"\x00garbage")  # damaged snapshot: ignored, records.json is the truth
    with Store(tmp_path, writer=False) as r:
        assert len(r) == 3
    with Store(tmp_path) as s:
        s.compact()
    data = json.loads((tmp_path / "records.json").read_text())
    data["tracks"].pop(next(iter(data["tracks"])))
    (tmp_path / "records.json").write_text(json.dumps(data))  # edited by hand: snapshot no longer matches
    with Store(tmp_path, writer=False) as r:
        assert len(r) == 2
