"""The stored record, typed: its schema (checked once when the database opens), the per-track and per-model
views over it, the analysis status, and the one track-id rule of the scan, the daemon and the batch import.

On disk a record is one JSON object per (file, model): the model's analysis (``model``, ``analyser``,
``status``, ``slot``, ...) beside the track's own fields (``track_id``, ``user``, ``decided``, ...), which are
the same in every model's record of the file. :class:`Analysis` and :class:`Track` are typed views of the
two halves; :func:`track_doc` and :func:`analysis_doc` build the halves that :meth:`Store.put` stores.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol


class Status(str, Enum):
    """An analysis either produced vectors or failed with a reason (stored as the text ``ok``/``failed``)."""

    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True)
class Analysis:
    """One model's analysis of one file."""

    path: str
    model: str  # the model id (musicnn-msd)
    analyser: str  # model id and version (musicnn-msd@0.1.0+tagger.1): a new version re-analyses
    status: Status
    size: int = 0  # the file's size and mtime when it was analysed: a change re-analyses
    mtime_ns: int = 0
    analysed_at: str = ""
    reason: str = ""  # why it failed
    slot: int | None = None  # row of the model's vector matrix
    windows: int = 0
    duration: float = 0.0
    fingerprint: str | None = None
    format: str = ""

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @property
    def has_slot(self) -> bool:
        return self.status is Status.OK and self.slot is not None

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> "Analysis":
        return cls(path=doc["path"], model=doc["model"], analyser=str(doc.get("analyser", "")),
                   status=Status(doc.get("status", "failed")), size=int(doc.get("size") or 0),
                   mtime_ns=int(doc.get("mtime_ns") or 0), analysed_at=str(doc.get("analysed_at") or ""),
                   reason=str(doc.get("reason") or ""), slot=doc.get("slot"), windows=int(doc.get("windows") or 0),
                   duration=float(doc.get("duration") or 0.0), fingerprint=doc.get("fingerprint"),
                   format=str(doc.get("format") or ""))


@dataclass(frozen=True)
class Track:
    """The file-level fields every model's record of a file carries alike."""

    path: str
    track_id: str = ""
    artist: str = ""
    album: str = ""
    title: str = ""
    user: Mapping[str, list[str]] = field(default_factory=dict)  # the user's own values per field
    locked: tuple[str, ...] = ()  # tags the user took over
    decided: Mapping[str, list[str]] = field(default_factory=dict)  # what the decision chose per field
    written: Mapping[str, list[str]] = field(default_factory=dict)  # what the last write put in the file
    applied: bool = False  # the decision is in the file (False after --no-write)
    heads: tuple[str, ...] = ()  # trained heads the decision used
    write_error: str | None = None

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> "Track":
        return cls(path=doc["path"], track_id=str(doc.get("track_id") or ""), artist=str(doc.get("artist") or ""),
                   album=str(doc.get("album") or ""), title=str(doc.get("title") or ""), user=doc.get("user") or {},
                   locked=tuple(doc.get("locked") or ()), decided=doc.get("decided") or {},
                   written=doc.get("written") or {}, applied=bool(doc.get("applied", False)),
                   heads=tuple(doc.get("heads") or ()), write_error=doc.get("write_error"))


class RecordStore(Protocol):
    """What the stages ask of a database: records by (path, model), moved and removed. The on-disk
    :class:`tagger.library.store.Store` and its twin :class:`tagger.library.memory.MemoryStore` both are one."""

    def get(self, path: Any, model: str) -> dict[str, Any] | None: ...
    def records(self, model: str | None = None) -> Iterator[dict[str, Any]]: ...
    def remove(self, path: Any, model: str) -> bool: ...
    def rename(self, old: Any, new: Any) -> int: ...


# The track-level keys of a record (copied into every model's record of the file, patched together).
TRACK_KEYS = ("track_id", "artist", "album", "title", "user", "locked", "decided", "written", "applied", "heads",
              "write_error")


def new_track_id(existing: Iterable[Mapping[str, Any] | None]) -> str:
    """The one track-id rule: the id of any existing record of the file (renames, moves and re-analysis keep
    it; so does a batch import of a file the library knows), else a new random one. A batch job's own row id
    (a path hash or the manifest's id) is kept apart, as ``source_id``."""
    for rec in existing:
        if rec is not None and rec.get("track_id"):
            return str(rec["track_id"])
    return uuid.uuid4().hex[:16]



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
    "status": ("ok or failed", lambda v: v in (Status.OK.value, Status.FAILED.value)),
    "analyser": ("text", lambda v: isinstance(v, str)),
    "analysed_at": ("text", lambda v: isinstance(v, str)),
    "reason": ("text", lambda v: isinstance(v, str)),
    "fingerprint": ("text or null", lambda v: v is None or isinstance(v, str)),
    "format": ("text", lambda v: isinstance(v, str)),
    "track_id": ("text", lambda v: isinstance(v, str)),
    "source_id": ("text", lambda v: isinstance(v, str)),
    "artist": ("text", lambda v: isinstance(v, str)),
    "album": ("text", lambda v: isinstance(v, str)),
    "title": ("text", lambda v: isinstance(v, str)),
    "musicbrainz_trackid": ("text", lambda v: isinstance(v, str)),
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


def valid_doc(doc: Any) -> bool:
    return record_problem(doc) is None
