"""Per-model tag and embedding vectors: one memory-mapped float32 matrix per model, a row per track."""
from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tagger.errors import StoreError
from tagger.fsutil import atomic_write_bytes
from tagger.library.records import Status
from tagger.models.card import Card

if TYPE_CHECKING:
    from tagger.library.store import Store


def _read_meta(meta: Path) -> dict[str, int]:
    """A vector file's shape description, or StoreError naming the file."""
    try:
        stored = json.loads(meta.read_text())
        width, n_labels = int(stored["width"]), int(stored.get("n_labels", 0))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StoreError(meta, f"vector description is unreadable or malformed ({exc}); move the vectors folder "
                               "aside and run `tagger scan` to rebuild it") from exc
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
        except IndexError as exc:
            raise StoreError(self.path, f"vector file has {self.capacity} rows but the database points beyond "
                                        "them (truncated?); run `tagger scan` to re-analyse what is missing") from exc

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.flush()
            except OSError as exc:  # closing after a failure: rows no committed record points at
                raise StoreError(self.path, f"cannot write the vectors to disk: {exc.strerror or exc}") from exc
            finally:
                self._map = None


def stored_vectors(store: "Store", path: Path | str, cards: Mapping[str, Card], *,
                   skip_missing: bool = False) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """Every model's stored song-level (analyser, tags, embedding) for a track: the input of a decision made
    without decoding. ``skip_missing`` leaves out a model whose vector file lost the row (else StoreError)."""
    out: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
    for mid, card in cards.items():
        rec = store.get(path, mid)
        if rec is None or rec.get("status") != Status.OK or rec.get("slot") is None:
            continue
        if skip_missing and not store.has_vectors(rec):
            continue
        tags, emb = store.vectors(rec)
        if len(tags) == len(card.labels):
            out[mid] = (str(rec.get("analyser")), tags, emb)
    return out
