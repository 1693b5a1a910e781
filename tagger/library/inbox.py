"""The control channel: how a correction made in the web page reaches the files, and how the daemon says
what it is doing.

Only one process writes to the database and the files at a time: whoever holds the database's writer lock
(the daemon when it runs, else a scan, else the web server for a moment). The web page never writes itself:
`tagger serve` drops each correction as a small JSON request into ``<database>/inbox/`` (written atomically,
so it survives a crash of either side) and waits for the answer. The lock holder applies the requests in
order, through the same safe tag write a scan uses, and leaves an answer file next to each. When no process
holds the lock, the server takes it just long enough to apply its own request.

The daemon also keeps ``<database>/daemon.json`` (what it is doing, how far it got), which the status page
reads; a status whose writer no longer holds the lock is reported as stopped, never as running.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tagger.errors import TaggerError
from tagger.fsutil import atomic_write_bytes

log = logging.getLogger(__name__)

INBOX = "inbox"
STATUS = "daemon.json"
ANSWER_KEPT_S = 24 * 3600  # answers nobody collected are removed after a day


@dataclass(frozen=True)
class Correction:
    """Set a field of one file to the user's values (``values=None``: give the field back to the tool)."""

    path: str
    field: str
    values: tuple[str, ...] | None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "field": self.field,
                "values": None if self.values is None else list(self.values)}

    @classmethod
    def from_json(cls, doc: Any) -> "Correction":
        if not isinstance(doc, dict) or not isinstance(doc.get("path"), str) or not isinstance(doc.get("field"), str):
            raise ValueError("a correction needs a path and a field")
        values = doc.get("values")
        if values is not None and (not isinstance(values, list) or not all(isinstance(v, str) for v in values)):
            raise ValueError("values must be a list of strings or null")
        return cls(doc["path"], doc["field"], None if values is None else tuple(values))


class Inbox:
    """Requests waiting for the writer, one JSON file each, answered in place."""

    def __init__(self, database: Path) -> None:
        self.root = Path(database) / INBOX

    def submit(self, c: Correction) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        rid = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        atomic_write_bytes(self.root / f"{rid}.json", json.dumps(c.to_json()).encode())
        return rid

    def pending(self) -> list[str]:
        """Request ids in the order they were made."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and not n.endswith(".done.json")
                      and not n.startswith("."))

    def answer(self, rid: str, result: dict[str, Any]) -> None:
        atomic_write_bytes(self.root / f"{rid}.done.json", json.dumps(result).encode())
        (self.root / f"{rid}.json").unlink(missing_ok=True)

    def collect(self, rid: str) -> dict[str, Any] | None:
        """The answer to ``rid`` if there is one (and then it is removed)."""
        done = self.root / f"{rid}.done.json"
        try:
            doc = json.loads(done.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return {"ok": False, "error": f"unreadable answer {done}: {exc}"}
        done.unlink(missing_ok=True)
        return doc

    def wait(self, rid: str, timeout: float, poll: float = 0.05) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while True:
            got = self.collect(rid)
            if got is not None or time.monotonic() >= deadline:
                return got
            time.sleep(poll)

    def drain(self, apply: Callable[[Correction], dict[str, Any]]) -> int:
        """Apply every waiting request with ``apply`` (the caller holds the writer lock); returns how many were
        answered. One bad request is answered with its reason and never stops the others."""
        done = 0
        for rid in self.pending():
            req = self.root / f"{rid}.json"
            try:
                c = Correction.from_json(json.loads(req.read_bytes()))
                result = apply(c)
            except FileNotFoundError:
                continue
            except TaggerError as exc:
                result = {"ok": False, "error": str(exc)}
            except ValueError as exc:
                result = {"ok": False, "error": f"{req.name}: {exc}"}
            self.answer(rid, result)
            done += 1
        self._tidy()
        return done

    def _tidy(self) -> None:
        cutoff = time.time() - ANSWER_KEPT_S
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        for e in entries:
            try:
                if e.name.endswith(".done.json") and e.stat().st_mtime < cutoff:
                    os.unlink(e.path)
            except OSError:
                pass


def lock_holder(database: Path) -> int | None:
    """The pid holding the database's writer lock, or None when nobody does."""
    path = Path(database) / "lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raw = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(raw) if raw.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def write_status(database: Path, status: dict[str, Any]) -> None:
    """The daemon's status for the page; a failure to write it is logged, never fatal."""
    try:
        atomic_write_bytes(Path(database) / STATUS,
                           json.dumps({**status, "pid": os.getpid(), "updated": time.time()}).encode())
    except OSError as exc:
        log.warning("cannot write %s: %s", Path(database) / STATUS, exc.strerror)


def read_status(database: Path) -> dict[str, Any]:
    """What the daemon said last, with ``running`` true only while its process still holds the writer lock."""
    holder = lock_holder(database)
    try:
        doc = json.loads((Path(database) / STATUS).read_bytes())
        if not isinstance(doc, dict):
            raise ValueError("not an object")
    except FileNotFoundError:
        doc = {}
    except (OSError, ValueError) as exc:
        doc = {"error": f"{Path(database) / STATUS} is unreadable: {exc}"}
    doc["running"] = bool(doc.get("pid")) and holder == doc.get("pid")
    doc["lock_holder"] = holder
    doc["inbox"] = len(Inbox(database).pending())
    return doc


