"""The only code that touches the database: TinyDB records plus a compact vector store, one writer.

Layout of the database folder::

    records.json            TinyDB document store, one record per (track path, model id)
    records.journal         changes committed since records.json was last rewritten (JSON lines)
    records.json.cache      marshal snapshot of records.json, used only while it matches that file exactly
    vectors/<model>.f32     float32 rows [tag probabilities | embedding], one row ("slot") per record
    vectors/<model>.json    row width and label count of that matrix
    lock                    held (flock) by the single writer process

Plain TinyDB rewrites the whole JSON file on every operation (1.6 s per insert at 100k records), so
records are kept in memory with an index by path, and :meth:`Store.commit` appends just the changed
records to a journal and fsyncs it: commit cost follows the size of the change, not of the library.
When the journal grows past a fraction of records.json, it is folded in: records.json is rewritten
(temp file, fsync, atomic rename) and the journal emptied. Journal entries are idempotent (put or
delete by document id), so replaying one twice is harmless, and a torn last line (a crash in the
middle of an append) is recognised and dropped. Vectors are written to slots that no committed record
references and synced before the records that point at them are committed; so whatever moment a
crash happens, every committed record points at the vectors it was committed with.
"""
from __future__ import annotations

import errno
import fcntl
import json
import marshal
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tinydb import TinyDB
from tinydb.storages import Storage

from .errors import StoreError, StoreLockedError

RECORDS = "records.json"
JOURNAL = "records.journal"
TABLE = "tracks"
CACHE_VERSION = 1
COMPACT_MIN_BYTES = 4 << 20  # fold the journal into records.json past 4 MB ...
COMPACT_RATIO = 0.5  # ... or half the size of records.json, whichever is larger


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers and crashes see the old or the new content, nothing else."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class _CommitStorage(Storage):
    """TinyDB storage kept in memory; the file is written only by :meth:`rewrite`, atomically."""

    def __init__(self, path: str, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._data: dict[str, Any] | None = None

    @property
    def cache_path(self) -> Path:
        return self.path.with_name(self.path.name + ".cache")

    def _cache_key(self) -> tuple:
        st = self.path.stat()
        return (CACHE_VERSION, sys.version_info[:2], st.st_size, st.st_mtime_ns)

    def _read_cache(self) -> dict[str, Any] | None:
        """The same data from a marshal snapshot, valid only for this exact records.json (3x faster to load)."""
        try:
            key, data = marshal.loads(self.cache_path.read_bytes())
        except (OSError, EOFError, ValueError, TypeError):
            return None
        return data if key == self._cache_key() else None

    def read(self) -> dict[str, Any] | None:
        if self._data is None:
            if not self.path.exists():
                self._data = {}
                return self._data
            cached = self._read_cache()
            if cached is not None:
                self._data = cached
                return self._data
            try:
                raw = self.path.read_bytes()
            except OSError as exc:
                raise StoreError(self.path, f"cannot read the database file: {exc.strerror or exc}") from exc
            if not raw:
                raise StoreError(self.path, "database file is empty (0 bytes: truncated by a crash or a full disk?); "
                                            "restore it or move it aside")
            try:
                data = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise StoreError(self.path, f"database file is not valid JSON ({exc}); restore it or move it aside") from None
            if not isinstance(data, dict) or not isinstance(data.get(TABLE, {}), dict):
                raise StoreError(self.path, f"database file does not hold a {{'{TABLE}': {{id: record}}}} mapping; "
                                            "restore it or move it aside")
            self._data = data
        return self._data

    def write(self, data: dict[str, Any]) -> None:
        if self.read_only:
            raise StoreError(self.path, "opened read-only")
        self._data = data

    def rewrite(self) -> None:
        # ASCII escapes keep undecodable file names (surrogate-escaped) intact through JSON.
        atomic_write_bytes(self.path, json.dumps(self._data or {}, ensure_ascii=True, separators=(",", ":")).encode())
        # A derived snapshot for fast opening; records.json stays the source of truth.
        atomic_write_bytes(self.cache_path, marshal.dumps((self._cache_key(), self._data or {})))

    def close(self) -> None:
        pass


def _read_meta(meta: Path) -> dict[str, int]:
    """A vector file's shape description, or StoreError naming the file."""
    try:
        stored = json.loads(meta.read_text())
        width, n_labels = int(stored["width"]), int(stored.get("n_labels", 0))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StoreError(meta, f"vector description is unreadable or malformed ({exc}); move the vectors folder "
                               "aside and run `tagger scan` to rebuild it") from None
    if width <= 0 or n_labels < 0:
        raise StoreError(meta, "vector description has a non-positive width")
    return {"width": width, "n_labels": n_labels}


class VectorMatrix:
    """A growable memory-mapped float32 matrix; row ``slot`` holds one record's vectors."""

    def __init__(self, path: Path, width: int, n_labels: int, writable: bool) -> None:
        self.path, self.width, self.n_labels, self.writable = path, width, n_labels, writable
        meta = path.with_suffix(".json")
        if meta.exists():
            stored = _read_meta(meta)
            if (stored["width"], stored["n_labels"]) != (width, n_labels):
                raise StoreError(path, f"vector width {stored['width']} does not match the model ({width}); "
                                       "the model changed shape: use another database or remove this file")
        elif writable:
            try:
                atomic_write_bytes(meta, json.dumps({"width": width, "n_labels": n_labels, "dtype": "float32"}).encode())
            except OSError as exc:
                raise StoreError(meta, f"cannot write: {exc.strerror or exc}") from exc
        self._map: np.memmap | None = None
        self.capacity = 0
        self._open()

    def _open(self) -> None:
        try:
            size = self.path.stat().st_size if self.path.exists() else 0
            self.capacity = size // (4 * self.width)
            self._map = (np.memmap(self.path, np.float32, "r+" if self.writable else "r",
                                   shape=(self.capacity, self.width)) if self.capacity else None)
        except (OSError, ValueError) as exc:
            raise StoreError(self.path, f"cannot map the vector file: {exc}") from exc

    def ensure(self, rows: int) -> None:
        if rows <= self.capacity:
            return
        new = max(rows, 2 * self.capacity, 1024)
        if self._map is not None:
            self._map.flush()
            self._map = None
        # Real blocks, not a sparse hole: a write through the memory map into a hole on a full disk is a
        # SIGBUS that kills the process; allocating up front turns a full disk into an ordinary error here.
        try:
            with open(self.path, "ab") as f:
                old = f.seek(0, os.SEEK_END)
                want = new * 4 * self.width
                try:
                    os.posix_fallocate(f.fileno(), old, want - old)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                        raise
                    zeros = bytes(1 << 20)
                    while f.tell() < want:
                        f.write(zeros[: min(len(zeros), want - f.tell())])
                f.flush()
        except OSError as exc:
            try:
                with open(self.path, "ab") as f:  # give back what was allocated past the rows in use
                    f.truncate(self.capacity * 4 * self.width)
            except OSError:
                pass
            raise StoreError(self.path, f"cannot grow the vector file: {exc.strerror or exc}") from exc
        self._open()

    def write(self, slot: int, row: np.ndarray) -> None:
        self.ensure(slot + 1)
        assert self._map is not None
        self._map[slot] = row

    def read(self, slot: int) -> np.ndarray:
        if self._map is None or slot >= self.capacity:
            self._open()
        if self._map is None or slot >= self.capacity:
            raise StoreError(self.path, f"slot {slot} is beyond the vector file (database and vectors disagree)")
        return np.array(self._map[slot])

    def sync(self) -> None:
        if self._map is not None:
            try:
                self._map.flush()  # msync, so the rows are on disk before records point at them
            except OSError as exc:  # EIO, ENOSPC: no record is committed pointing at rows that may be lost
                raise StoreError(self.path, f"cannot write the vectors to disk: {exc.strerror or exc}") from exc

    def ensure_open(self) -> None:
        """Re-map when another process grew the file (readers see rows added since they opened)."""
        if self.path.exists() and self.path.stat().st_size // (4 * self.width) != self.capacity:
            self._open()

    def rows(self, slots) -> np.ndarray:
        """A view (for a slice) or a copy (for an index array) of rows."""
        if self._map is None:
            self._open()
        if self._map is None:
            if isinstance(slots, slice) or len(np.atleast_1d(slots)) == 0:
                return np.zeros((0, self.width), np.float32)
            raise StoreError(self.path, "vector file is missing or empty (database and vectors disagree); "
                                        "run `tagger scan` to re-analyse what is missing")
        try:
            return self._map[slots]
        except IndexError:
            raise StoreError(self.path, f"vector file has {self.capacity} rows but the database points beyond "
                                        "them (truncated?); run `tagger scan` to re-analyse what is missing") from None

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.flush()
            except OSError as exc:  # closing after a failure: rows no committed record points at
                raise StoreError(self.path, f"cannot write the vectors to disk: {exc.strerror or exc}") from exc
            finally:
                self._map = None


def _str_lists(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(x, list) and all(isinstance(s, str) for s in x) for x in v.values())


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# The record's fields and what each must hold (absent is always fine): checked once when the database opens,
# so a damaged or hand-edited record is refused there, naming the file and the field, instead of failing
# deep inside a lookup.
RECORD_FIELDS: dict[str, tuple[str, Any]] = {
    "path": ("text", lambda v: isinstance(v, str)),
    "model": ("text", lambda v: isinstance(v, str)),
    "slot": ("a row number or null", lambda v: v is None or (_is_int(v) and v >= 0)),
    "size": ("an integer", _is_int),
    "mtime_ns": ("an integer", _is_int),
    "windows": ("an integer", _is_int),
    "duration": ("a number", lambda v: (_is_int(v) or isinstance(v, float)) and v == v),
    "status": ("ok or failed", lambda v: v in ("ok", "failed")),
    "analyser": ("text", lambda v: isinstance(v, str)),
    "analysed_at": ("text", lambda v: isinstance(v, str)),
    "reason": ("text", lambda v: isinstance(v, str)),
    "fingerprint": ("text or null", lambda v: v is None or isinstance(v, str)),
    "format": ("text", lambda v: isinstance(v, str)),
    "track_id": ("text", lambda v: isinstance(v, str)),
    "artist": ("text", lambda v: isinstance(v, str)),
    "album": ("text", lambda v: isinstance(v, str)),
    "title": ("text", lambda v: isinstance(v, str)),
    "write_error": ("text or null", lambda v: v is None or isinstance(v, str)),
    "applied": ("true or false", lambda v: isinstance(v, bool)),
    "heads": ("a list of text", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "locked": ("a list of text", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "user": ("a mapping of lists of text", _str_lists),
    "decided": ("a mapping of lists of text", _str_lists),
    "written": ("a mapping of lists of text", _str_lists),
}


def record_problem(doc: Any) -> str | None:
    """What is wrong with a stored record (None when it is well formed)."""
    if not isinstance(doc, dict):
        return f"is {type(doc).__name__}, not a record"
    for name in ("path", "model"):
        if name not in doc:
            return f"has no {name}"
    for name, (want, ok) in RECORD_FIELDS.items():
        if name in doc and not ok(doc[name]):
            return f"field {name!r} must be {want}, got {json.dumps(doc[name])[:40]}"
    return None


def _valid_doc(doc: Any) -> bool:
    return record_problem(doc) is None


def _key(path: str, model: str) -> tuple[str, str]:
    return path, model


def path_key(path: Path | str) -> str:
    """Records store paths as text; undecodable bytes survive via surrogateescape (os.fsdecode)."""
    return os.fsdecode(os.path.abspath(path))


class Store:
    """Records and vectors; open with ``writer=True`` from exactly one process at a time."""

    def __init__(self, root: Path, *, writer: bool = True) -> None:
        self.root = Path(root)
        self.writer = writer
        self._lock_fd: int | None = None
        if writer:
            try:
                (self.root / "vectors").mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(self.root, f"cannot create database folder: {exc.strerror}") from None
            self._lock()
        elif not (self.root / RECORDS).exists():
            raise StoreError(self.root, "no database here yet (run `tagger scan` first)")
        self._storage: _CommitStorage | None = None

        def make_storage(path: str) -> _CommitStorage:
            self._storage = _CommitStorage(path, read_only=not writer)
            return self._storage

        self.db = TinyDB(str(self.root / RECORDS), storage=make_storage)
        assert self._storage is not None
        data = self._storage.read()
        assert data is not None
        self._rows: dict[str, dict[str, Any]] = data.setdefault(TABLE, {})  # TinyDB's own table: id -> doc
        self._journal = self.root / JOURNAL
        if writer and not (self.root / RECORDS).exists():
            try:
                self._storage.rewrite()  # an empty database, so readers find one
            except OSError as exc:
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None
                raise StoreError(self.root / RECORDS, f"cannot create the database: {exc.strerror or exc}") from exc
        self._replay()
        self.table = self.db.table(TABLE, cache_size=0)  # for TinyDB queries by readers
        # Documents are shared with the TinyDB table (no copies: opening 100k records must stay fast);
        # every change replaces a document instead of mutating it.
        self._docs: dict[tuple[str, str], dict[str, Any]] = {}
        self._ids: dict[tuple[str, str], int] = {}
        for doc_id, doc in self._rows.items():
            problem = record_problem(doc) or (None if str(doc_id).isdigit() else "has no integer id")
            if problem:
                raise StoreError(self.root / RECORDS, f"record {doc_id!r} is malformed: it {problem}; restore the "
                                                      "database or move it aside")
            k = (doc["path"], doc["model"])
            self._docs[k] = doc
            self._ids[k] = int(doc_id)
        self._models: set[str] = {m for _, m in self._docs}  # every model id with a record (lookups by path)
        self._next_id = max(self._ids.values(), default=0) + 1
        self._new: dict[tuple[str, str], dict[str, Any]] = {}
        self._changed: set[tuple[str, str]] = set()
        self._removed: dict[tuple[str, str], int] = {}
        self._vectors: dict[str, VectorMatrix] = {}
        self._committed_slots: dict[str, set[int]] = {}
        self._fresh_slots: dict[str, set[int]] = {}
        self._retired_slots: dict[str, set[int]] = {}
        self._free: dict[str, list[int]] = {}
        self._high: dict[str, int] = {}
        for (_, model), doc in self._docs.items():
            if doc.get("slot") is not None:
                self._committed_slots.setdefault(model, set()).add(int(doc["slot"]))

    def _replay(self) -> None:
        """Apply journal entries on top of records.json; drop a torn final line."""
        try:
            raw = self._journal.read_bytes()
        except FileNotFoundError:
            return
        lines = raw.split(b"\n")
        good_bytes = 0
        for i, line in enumerate(lines):
            if not line:
                good_bytes += 1 if i < len(lines) - 1 else 0
                continue
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                if i == len(lines) - 1:  # torn last append: the commit never completed
                    break
                raise StoreError(self._journal, f"journal line {i + 1} is corrupt; restore the database or move it aside") from None
            ok = isinstance(entry, dict) and entry.get("op") in ("put", "del") and isinstance(entry.get("id"), int)
            if ok and entry["op"] == "put":
                ok = _valid_doc(entry.get("doc"))
            if not ok:
                raise StoreError(self._journal, f"journal line {i + 1} is not a valid entry; restore the database "
                                                "or move it aside")
            if entry["op"] == "put":
                self._rows[str(entry["id"])] = entry["doc"]
            else:
                self._rows.pop(str(entry["id"]), None)
            good_bytes += len(line) + (1 if i < len(lines) - 1 else 0)
        if self.writer and good_bytes < len(raw):
            with open(self._journal, "r+b") as f:
                f.truncate(good_bytes)

    # -- locking -----------------------------------------------------------------------------------
    def _lock(self) -> None:
        path = self.root / "lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(path, f"cannot open the lock file: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLockedError(self.root, f"database is in use by another tagger process (pid {holder}); "
                                              "stop it (or let `tagger watch` do the scanning) and try again") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())  # who holds it, for the message another process prints
        except OSError as exc:
            os.close(fd)
            raise StoreError(path, f"cannot write the lock file: {exc.strerror or exc}") from exc
        self._lock_fd = fd

    def close(self) -> None:
        """Release the lock. Uncommitted changes are dropped, as a crash would drop them."""
        for vm in self._vectors.values():
            vm.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------------
    def get(self, path: Path | str, model: str) -> dict[str, Any] | None:
        doc = self._docs.get(_key(path_key(path), model))
        return dict(doc) if doc is not None else None

    def models(self) -> list[str]:
        """Every model id the database holds records of."""
        return sorted(self._models)

    def _keys_of(self, path: Path | str) -> list[tuple[str, str]]:
        key = path_key(path)
        return [k for m in sorted(self._models) if (k := (key, m)) in self._docs]

    def documents(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(record id, record) for every record, without copies (for read-only indexes: do not modify them)."""
        for k, doc in list(self._docs.items()):
            yield self._ids[k], doc

    def for_path(self, path: Path | str) -> list[dict[str, Any]]:
        """Every model's record of one file."""
        return [dict(self._docs[k]) for k in self._keys_of(path)]

    def records(self, model: str | None = None) -> Iterator[dict[str, Any]]:
        for (_, m), doc in list(self._docs.items()):
            if model is None or m == model:
                yield dict(doc)

    def __len__(self) -> int:
        return len(self._docs)

    def matrix(self, model: str, width: int | None = None, n_labels: int | None = None) -> VectorMatrix:
        vm = self._vectors.get(model)
        if vm is None:
            path = self.root / "vectors" / f"{model}.f32"
            if width is None or n_labels is None:
                meta = path.with_suffix(".json")
                if not meta.exists():
                    raise StoreError(path, "no vectors stored for this model")
                stored = _read_meta(meta)
                width, n_labels = stored["width"], stored["n_labels"]
            vm = VectorMatrix(path, width, n_labels, self.writer)
            self._vectors[model] = vm
        return vm

    def unit_matrix(self, model: str, dim: int | None = None) -> VectorMatrix:
        """Unit-length embeddings, same slots as :meth:`matrix`: cosine similarity is one mat-vec product."""
        key = f"{model}#unit"
        vm = self._vectors.get(key)
        if vm is None:
            path = self.root / "vectors" / f"{model}.unit.f32"
            if dim is None:
                meta = path.with_suffix(".json")
                if not meta.exists():
                    raise StoreError(path, "no embeddings stored for this model")
                dim = _read_meta(meta)["width"]
            vm = VectorMatrix(path, dim, 0, self.writer)
            self._vectors[key] = vm
        return vm

    def describe(self, model: str, card_json: str) -> None:
        """Keep the model's card beside its vectors, so readers learn what each column means without the model."""
        self._require_writer()
        path = self.root / "vectors" / f"{model}.card.json"
        try:
            if path.exists() and path.read_text(encoding="utf-8") == card_json:
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, card_json.encode("utf-8"))
        except OSError as exc:
            raise StoreError(path, f"cannot write the model card: {exc.strerror or exc}") from exc

    def card_json(self, model: str) -> str | None:
        """The stored card of a model's vectors (see :meth:`describe`), or None for older databases."""
        path = self.root / "vectors" / f"{model}.card.json"
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(path, f"cannot read the model card: {exc}") from exc

    def slots(self, model: str) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Slots and records of every committed track with vectors, in a stable order (by path)."""
        recs = sorted((d for (p, m), d in self._docs.items() if m == model and d.get("slot") is not None),
                      key=lambda d: d["path"])
        return np.array([int(d["slot"]) for d in recs], dtype=np.int64), recs

    def doc_id(self, path: Path | str, model: str) -> int | None:
        """A committed record's TinyDB document id: the stable handle the HTTP API uses."""
        return self._ids.get(_key(path_key(path), model))

    def by_id(self, doc_id: int) -> dict[str, Any] | None:
        doc = self._rows.get(str(doc_id))
        return dict(doc) if doc is not None else None

    def has_vectors(self, record: dict[str, Any]) -> bool:
        """Whether an ok record's vectors are really there (a deleted or truncated vectors folder is not)."""
        if record.get("slot") is None:
            return False
        try:
            vm = self.matrix(record["model"])
            if int(record["slot"]) >= vm.capacity:
                vm.ensure_open()
            unit = self.unit_matrix(record["model"])
            if int(record["slot"]) >= unit.capacity:
                unit.ensure_open()
            if int(record["slot"]) >= min(vm.capacity, unit.capacity):
                return False
            # A re-created vector file is zero-filled where old rows were: sigmoid scores are never all 0.
            return bool(np.any(vm.read(int(record["slot"]))[: max(vm.n_labels, 1)] != 0))
        except StoreError:
            return False

    def vectors(self, record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(tag probabilities, embedding) of a stored ok record."""
        if record.get("slot") is None:
            raise StoreError(record["path"], "no vectors stored for this record")
        vm = self.matrix(record["model"])
        row = vm.read(int(record["slot"]))
        return row[: vm.n_labels], row[vm.n_labels:]

    # -- writing -----------------------------------------------------------------------------------
    def _require_writer(self) -> None:
        if not self.writer:
            raise StoreError(self.root, "opened read-only")

    def _alloc(self, model: str, vm: VectorMatrix) -> int:
        free = self._free.get(model)
        if free is None:  # slots no committed record references, lowest first
            used = self._committed_slots.get(model, set())
            free = [s for s in range(vm.capacity - 1, -1, -1) if s not in used]
            self._free[model] = free
            self._high[model] = max(vm.capacity, max(used, default=-1) + 1)
        if free:
            slot = free.pop()
        else:
            slot = self._high[model]
            self._high[model] += 1
        self._fresh_slots.setdefault(model, set()).add(slot)
        return slot

    def put(self, record: dict[str, Any], tags: np.ndarray | None = None, embedding: np.ndarray | None = None) -> None:
        """Insert or replace the record for (record['path'], record['model']); vectors go to a new slot."""
        self._require_writer()
        record = dict(record)
        record["path"] = path_key(record["path"])
        k = _key(record["path"], record["model"])
        old = self._docs.get(k)
        if old is not None and old.get("slot") is not None:
            self._retire(record["model"], int(old["slot"]))
        if tags is not None and embedding is not None:
            row = np.concatenate([tags, embedding]).astype(np.float32)
            vm = self.matrix(record["model"], len(row), len(tags))
            if vm.width != len(row):
                raise StoreError(vm.path, f"vector width {vm.width} != {len(row)}")
            slot = self._alloc(record["model"], vm)
            vm.write(slot, row)
            unit = np.asarray(embedding, np.float32)
            self.unit_matrix(record["model"], len(unit)).write(slot, unit / max(float(np.linalg.norm(unit)), 1e-12))
            record["slot"] = slot
        else:
            record["slot"] = None
        self._docs[k] = record
        self._models.add(record["model"])
        if k in self._ids:
            self._changed.add(k)
        else:
            self._new[k] = record

    def update(self, path: Path | str, model: str, fields: dict[str, Any]) -> bool:
        """Change some fields of a record, keeping its vectors (e.g. the new size and mtime after a tag write)."""
        self._require_writer()
        k = _key(path_key(path), model)
        doc = self._docs.get(k)
        if doc is None:
            return False
        doc = {**doc, **fields, "path": doc["path"], "model": doc["model"], "slot": doc.get("slot")}
        self._docs[k] = doc
        if k in self._new:
            self._new[k] = doc
        else:
            self._changed.add(k)
        return True

    def _retire(self, model: str, slot: int) -> None:
        if slot in self._fresh_slots.get(model, set()):
            self._fresh_slots[model].discard(slot)  # never committed: free at once
            if model in self._free:
                self._free[model].append(slot)
        else:
            self._retired_slots.setdefault(model, set()).add(slot)

    def _drop(self, k: tuple[str, str]) -> dict[str, Any]:
        """Forget a record in memory and schedule its deletion; its slot is the caller's business."""
        doc = self._docs.pop(k)
        if k in self._new:
            del self._new[k]
        else:
            self._changed.discard(k)
            self._removed[k] = self._ids.pop(k)
        return doc

    def remove(self, path: Path | str, model: str) -> bool:
        self._require_writer()
        k = _key(path_key(path), model)
        if k not in self._docs:
            return False
        doc = self._drop(k)
        if doc.get("slot") is not None:
            self._retire(model, int(doc["slot"]))
        return True

    def rename(self, old: Path | str, new: Path | str) -> int:
        """Move every model's record from ``old`` to ``new`` (a file moved inside the library), vectors kept."""
        self._require_writer()
        moved = 0
        for k in self._keys_of(old):
            doc = dict(self._drop(k))
            doc["path"] = path_key(new)
            target = _key(doc["path"], k[1])
            if target in self._docs:
                self.remove(doc["path"], k[1])
            self._docs[target] = doc
            self._new[target] = doc
            moved += 1
        return moved

    @property
    def pending(self) -> int:
        return len(self._new) + len(self._changed) + len(self._removed)

    def commit(self) -> None:
        """Make every change so far durable: one journal append and fsync."""
        self._require_writer()
        if not self.pending:
            return
        for vm in self._vectors.values():
            vm.sync()
        for k in self._new:
            self._ids[k] = self._next_id
            self._next_id += 1
        lines = [{"op": "del", "id": i} for i in self._removed.values()]
        lines += [{"op": "put", "id": self._ids[k], "doc": self._docs[k]} for k in (*self._changed, *self._new)]
        payload = "".join(json.dumps(e, ensure_ascii=True, separators=(",", ":")) + "\n" for e in lines).encode()
        new_journal = not self._journal.exists()
        old_size = 0 if new_journal else self._journal.stat().st_size
        try:
            with open(self._journal, "ab") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:  # a full disk: take back the partial append, keep the database as it was
            try:
                os.truncate(self._journal, old_size)
            except OSError:
                pass  # a torn last line is dropped on the next open anyway
            raise StoreError(self._journal, f"cannot commit: {exc.strerror or exc}; nothing of this batch "
                                            "was recorded") from exc
        if new_journal:
            fsync_dir(self.root)
        for e in lines:
            if e["op"] == "put":
                self._rows[str(e["id"])] = e["doc"]
            else:
                self._rows.pop(str(e["id"]), None)
        self._removed.clear()
        self._changed.clear()
        self._new.clear()
        self._committed_slots = {}
        for (_, model), doc in self._docs.items():
            if doc.get("slot") is not None:
                self._committed_slots.setdefault(model, set()).add(int(doc["slot"]))
        self._fresh_slots.clear()
        self._retired_slots.clear()
        self._free.clear()
        main_size = (self.root / RECORDS).stat().st_size if (self.root / RECORDS).exists() else 0
        if self._journal.stat().st_size > max(COMPACT_MIN_BYTES, COMPACT_RATIO * main_size):
            self.compact()

    def compact(self) -> None:
        """Fold the journal into records.json (atomic rewrite), then empty the journal."""
        self._require_writer()
        assert self._storage is not None
        try:
            self._storage.rewrite()
            with open(self._journal, "wb") as f:  # replaying it again would be harmless: entries are idempotent
                os.fsync(f.fileno())
        except OSError as exc:  # the journal still holds every change: nothing is lost
            raise StoreError(self.root / RECORDS, f"cannot fold the journal in: {exc.strerror or exc}; the "
                                                  "journal keeps every change") from exc
