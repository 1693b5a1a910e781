"""The database files below the Store: records.json kept in memory (TinyDB storage with a marshal cache,
rewritten only atomically), the journal replayed on open, and the single-writer lock."""
from __future__ import annotations

import fcntl
import json
import marshal
import os
import sys
from pathlib import Path
from typing import Any

from tinydb.storages import Storage

from tagger.errors import StoreError, StoreLockedError
from tagger.fsutil import atomic_write_bytes
from tagger.library.records import valid_doc

TABLE = "tracks"


CACHE_VERSION = 1


class CommitStorage(Storage):
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
                raise StoreError(self.path, f"database file is not valid JSON ({exc}); restore it or move it aside") from exc
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


def replay_journal(journal: Path, rows: dict[str, Any], writer: bool) -> None:
    """Apply journal entries on top of records.json's ``rows``; drop a torn final line (truncated when ``writer``)."""
    try:
        raw = journal.read_bytes()
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
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if i == len(lines) - 1:  # torn last append: the commit never completed
                break
            raise StoreError(journal, f"journal line {i + 1} is corrupt; restore the database or move it aside") from exc
        ok = isinstance(entry, dict) and entry.get("op") in ("put", "del") and isinstance(entry.get("id"), int)
        if ok and entry["op"] == "put":
            ok = valid_doc(entry.get("doc"))
        if not ok:
            raise StoreError(journal, f"journal line {i + 1} is not a valid entry; restore the database "
                                            "or move it aside")
        if entry["op"] == "put":
            rows[str(entry["id"])] = entry["doc"]
        else:
            rows.pop(str(entry["id"]), None)
        good_bytes += len(line) + (1 if i < len(lines) - 1 else 0)
    if writer and good_bytes < len(raw):
        with open(journal, "r+b") as f:
            f.truncate(good_bytes)


def acquire_lock(root: Path) -> int:
    """Take the single-writer lock of the database at ``root``; its file names the holder's pid."""
    path = root / "lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(path, f"cannot open the lock file: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreLockedError(root, f"database is in use by another tagger process (pid {holder}); "
                                          "stop it (or let `tagger watch` do the scanning) and try again") from exc
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())  # who holds it, for the message another process prints
    except OSError as exc:
        os.close(fd)
        raise StoreError(path, f"cannot write the lock file: {exc.strerror or exc}") from exc
    return fd
