"""The database and its in-memory twin keep one contract (tagger.library.memory), and the reconcile rules
(tagger.library.reconcile), checked on the twin with real files on disk: no model, no journal."""
from __future__ import annotations

import os

import numpy as np
import pytest

from tagger.library import reconcile
from tagger.library.memory import MemoryStore
from tagger.library.reconcile import Move
from tagger.library.store import Store


@pytest.fixture(params=["disk", "memory"])
def store(request, tmp_path):
    s = Store(tmp_path / "db") if request.param == "disk" else MemoryStore()
    with s:
        yield s


def _rec(path: str, model: str, **kw) -> dict:
    return {"path": path, "model": model, "analyser": f"{model}@1", "status": "ok", "size": 1, "mtime_ns": 1,
            "analysed_at": "2026-12-05T00:00:00Z", **kw}


def test_records_vectors_ids_rename_and_remove(store):
    tags, emb = np.array([0.9, 0.1], np.float32), np.array([1.0, 0.0, 0.0], np.float32)
    store.put(_rec("/lib/a.flac", "m1", track_id="t1"), tags, emb)
    store.put(_rec("/lib/a.flac", "m2", track_id="t1"), tags[::-1].copy(), emb)
    store.put(_rec("/lib/b.flac", "m1", status="failed", reason="bad"))
    assert store.doc_id("/lib/a.flac", "m1") is None  # ids are given at commit
    store.commit()
    ida = store.doc_id("/lib/a.flac", "m1")
    assert ida is not None and store.by_id(ida)["path"] == "/lib/a.flac"
    assert store.models() == ["m1", "m2"] and len(store) == 3
    assert [r["model"] for r in store.for_path("/lib/a.flac")] == ["m1", "m2"]
    rec = store.get("/lib/a.flac", "m2")
    got_tags, got_emb = store.vectors(rec)
    np.testing.assert_allclose(got_tags, [0.1, 0.9]) and np.testing.assert_allclose(got_emb, emb)
    assert store.has_vectors(rec) and not store.has_vectors(store.get("/lib/b.flac", "m1"))
    assert store.update("/lib/a.flac", "m1", {"size": 7}) and store.get("/lib/a.flac", "m1")["size"] == 7
    assert not store.update("/lib/nope.flac", "m1", {"size": 7})
    assert store.rename("/lib/a.flac", "/lib/moved/a.flac") == 2
    moved = store.get("/lib/moved/a.flac", "m2")
    assert store.get("/lib/a.flac", "m1") is None and moved["track_id"] == "t1"
    np.testing.assert_allclose(store.vectors(moved)[0], [0.1, 0.9])  # vectors follow the file
    assert store.remove("/lib/b.flac", "m1") and not store.remove("/lib/b.flac", "m1")
    store.commit()
    assert sorted(r["path"] for r in store.records("m1")) == ["/lib/moved/a.flac"]


def _library(tmp_path, names):
    lib = tmp_path / "lib"
    for n in names:
        (lib / n).parent.mkdir(parents=True, exist_ok=True)
        (lib / n).write_bytes(b"x" * 10)
    return lib


def test_prune_drops_what_is_gone_but_never_under_a_root_without_audio(tmp_path):
    lib = _library(tmp_path, ["a.flac", "b.flac"])
    store = MemoryStore()
    for n in ("a.flac", "b.flac", "gone.flac"):
        store.put(_rec(str(lib / n), "m1"))
    done = reconcile.prune(store, [lib], [lib / "a.flac", lib / "b.flac"])
    assert done.removed == 1 and store.get(lib / "gone.flac", "m1") is None
    for n in ("a.flac", "b.flac"):
        os.unlink(lib / n)  # the disk looks emptied or unmounted: nothing is removed
    done = reconcile.prune(store, [lib], [])
    assert done.removed == 0 and done.kept_roots == [str(lib)] and len(store) == 2


def test_moves_keep_records_and_deletions_wait_for_an_empty_root(tmp_path):
    lib = _library(tmp_path, ["new/a.flac", "keep.flac"])
    store = MemoryStore()
    st = os.stat(lib / "new/a.flac")
    store.put(_rec(str(lib / "old/a.flac"), "m1", size=st.st_size, mtime_ns=st.st_mtime_ns, track_id="t9"))
    store.put(_rec(str(lib / "keep.flac"), "m1"))
    done = reconcile.carry_moves(store, "m1", [lib], [lib / "new/a.flac", lib / "keep.flac"])
    assert done.moved == 1 and store.get(lib / "new/a.flac", "m1")["track_id"] == "t9"

    (lib / "new/a.flac").rename(lib / "b.flac")  # reported by the file system
    done = reconcile.apply_moves(store, ["m1"], [lib], [Move(str(lib / "new/a.flac"), str(lib / "b.flac"))])
    assert done.moved == 1 and store.get(lib / "b.flac", "m1") is not None
    (lib / "b.flac").write_bytes(b"changed")
    (lib / "b.flac").rename(lib / "c.flac")
    done = reconcile.apply_moves(store, ["m1"], [lib], [Move(str(lib / "b.flac"), str(lib / "c.flac"))])
    assert done.reanalyse == [str(lib / "c.flac")] and store.get(lib / "b.flac", "m1") is None

    (lib / "keep.flac").unlink()  # the root still holds audio (c.flac): the deletion is real
    done = reconcile.apply_deletes(store, [lib], frozenset({".flac"}), [Move(str(lib / "keep.flac"), "")])
    assert done.removed == 1 and store.get(lib / "keep.flac", "m1") is None
    store.put(_rec(str(lib / "c.flac"), "m1"))
    (lib / "c.flac").unlink()  # the last audio file goes too: it looks unmounted, the record stays
    done = reconcile.apply_deletes(store, [lib], frozenset({".flac"}), [Move(str(lib / "c.flac"), "")])
    assert done.removed == 0 and done.kept_roots == [str(lib)] and store.get(lib / "c.flac", "m1") is not None
