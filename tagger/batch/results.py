"""The batch job's output: Parquet parts in one folder, written incrementally and atomically, self-describing.

One row per (track, model): id, path, model, analyser (id@version), status, reason, duration, fingerprint,
size, mtime_ns, format, windows, tags (the song-level probabilities of the card's main label output),
outputs (every label output by name: each head of a multi-output card), embedding. Every part
carries the model cards in its Parquet metadata (``tagger.cards``), so the labels behind each ``tags``
column travel with the numbers, as they do in the ONNX files.

Each part is written to a hidden temp file and renamed into place, so a job killed at any moment leaves
only whole parts; a rerun reads them to learn which tracks are finished and removes stray temp files.
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tagger.errors import StoreError
from tagger.models.card import Card

log = logging.getLogger(__name__)

CARDS_KEY = b"tagger.cards"
COLUMNS = ("id", "path", "model", "analyser", "status", "reason", "duration", "fingerprint", "size", "mtime_ns",
           "format", "windows", "tags", "outputs", "embedding")


def schema():
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("path", pa.string()), ("model", pa.string()), ("analyser", pa.string()),
                      ("status", pa.string()), ("reason", pa.string()), ("duration", pa.float64()),
                      ("fingerprint", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
                      ("format", pa.string()), ("windows", pa.int32()), ("tags", pa.list_(pa.float32())),
                      ("outputs", pa.map_(pa.string(), pa.list_(pa.float32()))),
                      ("embedding", pa.list_(pa.float32()))])


def parts(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).glob("part-*.parquet") if not p.name.startswith("."))


class ResultWriter:
    """Appends rows; every ``rows_per_part`` rows, or ``flush_seconds`` after the last part, the rows so far
    become one new part file (atomically), so results land steadily even when tracks come slowly."""

    def __init__(self, folder: Path, cards: Sequence[Card], rows_per_part: int = 512,
                 flush_seconds: float = 30.0) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for stray in self.folder.glob(".part-*.tmp"):  # a part being written when a job was killed
            stray.unlink(missing_ok=True)
        self.meta = {CARDS_KEY: json.dumps({c.id: c.to_json() for c in cards}).encode()}
        self.rows_per_part = rows_per_part
        self.buffer: list[dict[str, Any]] = []
        self.written = 0
        self.seq = len(parts(self.folder))
        self.flush_seconds = flush_seconds
        self.last = time.monotonic()

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        """Add whole tracks (all of a track's rows in one call, so a part never splits a track)."""
        self.buffer.extend(rows)
        if len(self.buffer) >= self.rows_per_part or time.monotonic() - self.last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        sch = schema().with_metadata(self.meta)
        table = pa.Table.from_pylist([{k: r.get(k) for k in COLUMNS} for r in self.buffer], schema=sch)
        name = f"part-{self.seq:06d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.folder / f".{name}.tmp"
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / name)
        self.seq += 1
        self.written += len(self.buffer)
        self.buffer = []
        self.last = time.monotonic()


def read_rows(folder: Path, columns: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every row of every whole part; a part that cannot be read raises StoreError naming it."""
    import pyarrow.parquet as pq

    for part in parts(folder):
        try:
            table = pq.read_table(part, columns=list(columns) if columns else None)
        except Exception as exc:
            raise StoreError(part, f"unreadable Parquet part ({exc}); move it aside and rerun to redo its tracks") from exc
        yield from table.to_pylist()


def latest_rows(folder: Path, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per (id, model): the last one written (a track redone after an interrupted run, or a model
    upgraded since, appears once)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for row in read_rows(folder, columns):
        out[(row["id"], row["model"])] = row
    return list(out.values())


def read_cards(folder: Path) -> dict[str, Card]:
    """The model cards the parts were written with (model id -> card)."""
    import pyarrow.parquet as pq

    cards: dict[str, Card] = {}
    for part in parts(folder):
        meta = pq.read_schema(part).metadata or {}
        for mid, text in json.loads(meta.get(CARDS_KEY, b"{}")).items():
            cards.setdefault(mid, Card.from_json(text))
    return cards


def finished(folder: Path, analysers: Sequence[str]) -> set[str]:
    """Ids with a row (ok or failed) from every model of the set at its current version: a rerun skips them."""
    want = set(analysers)
    seen: dict[str, set[str]] = {}
    for row in read_rows(folder, ("id", "analyser")):
        seen.setdefault(row["id"], set()).add(row["analyser"])
    return {i for i, got in seen.items() if want <= got}
