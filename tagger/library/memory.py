"""The database's in-memory twin, for tests of the stages that read and write records.

:class:`MemoryStore` keeps the same record-and-vector contract as :class:`tagger.library.store.Store` (what
the scan, the daemon's reconciling, the corrections and the decision use): records keyed by (path, model),
a record id fixed at commit, vectors per record, rename and remove. It has no journal, lock or memory-mapped
matrices; similarity search (:class:`tagger.lookup.similar.Library`) needs the real store.
``tests/library/test_store_contract.py`` runs the same checks against both.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tagger.errors import StoreError
from tagger.fsutil import path_key


class MemoryStore:
    """Records and vectors in dicts; ``commit`` assigns record ids as the on-disk store does."""

    def __init__(self, root: Path | str = "memory:") -> None:
        self.root = Path(root)
        self.writer = True
        self._docs: dict[tuple[str, str], dict[str, Any]] = {}
        self._ids: dict[tuple[str, str], int] = {}
        self._rows: dict[int, dict[str, Any]] = {}  # committed records by id
        self._vectors: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._cards: dict[str, str] = {}
        self._next_id = 1
        self._dirty = 0

    def __enter__(self) -> "MemoryStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Uncommitted changes are kept (nothing to lose in memory)."""

    # -- reading ---------------------------------------------------------------------------------------
    def get(self, path: Path | str, model: str) -> dict[str, Any] | None:
        doc = self._docs.get((path_key(path), model))
        return dict(doc) if doc is not None else None

    def models(self) -> list[str]:
        return sorted({m for _, m in self._docs})

    def documents(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for k, doc in list(self._docs.items()):
            if k in self._ids:
                yield self._ids[k], doc

    def for_path(self, path: Path | str) -> list[dict[str, Any]]:
        key = path_key(path)
        return [dict(self._docs[(key, m)]) for m in self.models() if (key, m) in self._docs]

    def records(self, model: str | None = None) -> Iterator[dict[str, Any]]:
        for (_, m), doc in list(self._docs.items()):
            if model is None or m == model:
                yield dict(doc)

    def __len__(self) -> int:
        return len(self._docs)

    def describe(self, model: str, card_json: str) -> None:
        self._cards[model] = card_json

    def card_json(self, model: str) -> str | None:
        return self._cards.get(model)

    def doc_id(self, path: Path | str, model: str) -> int | None:
        return self._ids.get((path_key(path), model))

    def by_id(self, doc_id: int) -> dict[str, Any] | None:
        doc = self._rows.get(doc_id)
        return dict(doc) if doc is not None else None

    def has_vectors(self, record: dict[str, Any]) -> bool:
        return record.get("slot") is not None and (record["path"], record["model"]) in self._vectors

    def vectors(self, record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        found = self._vectors.get((record["path"], record["model"])) if record.get("slot") is not None else None
        if found is None:
            raise StoreError(record["path"], "no vectors stored for this record")
        return found

    # -- writing ---------------------------------------------------------------------------------------
    def put(self, record: dict[str, Any], tags: np.ndarray | None = None, embedding: np.ndarray | None = None) -> None:
        record = dict(record)
        record["path"] = path_key(record["path"])
        k = (record["path"], record["model"])
        if tags is not None and embedding is not None:
            self._vectors[k] = (np.asarray(tags, np.float32).copy(), np.asarray(embedding, np.float32).copy())
            record["slot"] = len(self._vectors)  # any row number: only "has one" matters outside the store
        else:
            self._vectors.pop(k, None)
            record["slot"] = None
        self._docs[k] = record
        self._dirty += 1

    def update(self, path: Path | str, model: str, fields: dict[str, Any]) -> bool:
        k = (path_key(path), model)
        doc = self._docs.get(k)
        if doc is None:
            return False
        self._docs[k] = {**doc, **fields, "path": doc["path"], "model": doc["model"], "slot": doc.get("slot")}
        self._dirty += 1
        return True

    def remove(self, path: Path | str, model: str) -> bool:
        k = (path_key(path), model)
        if self._docs.pop(k, None) is None:
            return False
        self._vectors.pop(k, None)
        self._ids.pop(k, None)
        self._dirty += 1
        return True

    def rename(self, old: Path | str, new: Path | str) -> int:
        moved = 0
        for m in self.models():
            k = (path_key(old), m)
            if k not in self._docs:
                continue
            doc = {**self._docs.pop(k), "path": path_key(new)}
            target = (doc["path"], m)
            if k in self._vectors:
                self._vectors[target] = self._vectors.pop(k)
            self._ids.pop(k, None)  # a moved record is new to the id space, as on disk
            self._docs[target] = doc
            moved += 1
        self._dirty += moved
        return moved

    @property
    def pending(self) -> int:
        return self._dirty

    def commit(self) -> None:
        for k, doc in self._docs.items():
            if k not in self._ids:
                self._ids[k] = self._next_id
                self._next_id += 1
        self._rows = {self._ids[k]: doc for k, doc in self._docs.items()}
        self._dirty = 0
