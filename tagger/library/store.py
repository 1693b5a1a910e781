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

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tinydb import TinyDB

from tagger.errors import StoreError
from tagger.fsutil import atomic_write_bytes, fsync_dir, path_key
from tagger.library.records import record_problem
from tagger.library.storage import TABLE, CommitStorage, acquire_lock, replay_journal
from tagger.library.vectors import VectorMatrix, _read_meta

RECORDS = "records.json"
JOURNAL = "records.journal"
COMPACT_MIN_BYTES = 4 << 20  # fold the journal into records.json past 4 MB ...
COMPACT_RATIO = 0.5  # ... or half the size of records.json, whichever is larger


def _key(path: str, model: str) -> tuple[str, str]:
    return path, model


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
                raise StoreError(self.root, f"cannot create database folder: {exc.strerror}") from exc
            self._lock()
        elif not (self.root / RECORDS).exists():
            raise StoreError(self.root, "no database here yet (run `tagger scan` first)")
        self._storage: CommitStorage | None = None

        def make_storage(path: str) -> CommitStorage:
            self._storage = CommitStorage(path, read_only=not writer)
            return self._storage

        self.db = TinyDB(str(self.root / RECORDS), storage=make_storage)
        assert self._storage is not None
        data = self._storage.read()
        assert data is not None
        self._rows: dict[str, dict[str, Any]] = data.setdefault(TABLE, {})  # TinyDB's own table: id -> doc
        self._journal: Path = self.root / JOURNAL
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
        self._next_id: int = max(self._ids.values(), default=0) + 1
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
        replay_journal(self._journal, self._rows, self.writer)

    # -- locking -----------------------------------------------------------------------------------
    def _lock(self) -> None:
        self._lock_fd = acquire_lock(self.root)

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
        lines: list[dict[str, Any]] = [{"op": "del", "id": i} for i in self._removed.values()]
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
