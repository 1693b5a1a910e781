"""File-system events to work: a debouncer that lets a file settle before it is analysed, and the handler
that turns watchdog's events into its operations (tests feed it synthetic events)."""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler

from tagger.library.files import is_library_audio

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Op:
    """A structural change, applied in arrival order: 'move' (src -> dest) or 'delete' (src)."""

    kind: str
    src: str
    dest: str = ""
    is_dir: bool = False


class Debouncer:
    """Turns a stream of file events into settled paths and ordered structural operations.

    A path is due once `settle` seconds passed without an event for it. Moves are due at once; deletions
    wait until `settle` seconds passed without another deletion, so a burst of them (an emptied or
    unmounting disk) is judged as a whole. The clock is injectable, so tests feed synthetic events
    without sleeping.
    """

    def __init__(self, settle: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle = settle
        self.clock = clock
        self._lock = threading.Condition()
        self._pending: dict[str, float] = {}
        self._ops: list[Op] = []
        self._deletes: list[Op] = []
        self._last_delete = 0.0

    def touch(self, path: str) -> None:
        with self._lock:
            self._pending[path] = self.clock()
            self._lock.notify_all()

    def op(self, op: Op) -> None:
        with self._lock:
            if op.kind == "delete":
                self._pending.pop(op.src, None)
                self._deletes.append(op)
                self._last_delete = self.clock()
            else:
                if op.src in self._pending:  # still settling: follow it to its new name
                    del self._pending[op.src]
                    self._pending[op.dest] = self.clock()
                self._ops.append(op)
            self._lock.notify_all()

    def take_ops(self) -> list[Op]:
        """Moves, then deletions once their burst is over. Applying a deletion re-checks the disk, so
        running it after a later move is safe."""
        with self._lock:
            ops, self._ops = self._ops, []
            if self._deletes and self.clock() - self._last_delete >= self.settle:
                ops += self._deletes
                self._deletes = []
            return ops

    def take_due(self) -> list[str]:
        with self._lock:
            now = self.clock()
            due = sorted(p for p, t in self._pending.items() if now - t >= self.settle)
            for p in due:
                del self._pending[p]
            return due

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def has_ops(self) -> bool:
        with self._lock:
            return bool(self._ops)

    def next_due_in(self, paths_only: bool = False) -> float | None:
        """Seconds until the next path (or, unless ``paths_only``, burst of deletions) is due."""
        with self._lock:
            times = list(self._pending.values()) + ([self._last_delete] if self._deletes and not paths_only else [])
            if not times:
                return None
            return max(0.0, min(times) + self.settle - self.clock())

    def wait(self, timeout: float) -> None:
        """Sleep until an event arrives or `timeout` passes (real time; used by the worker only)."""
        with self._lock:
            self._lock.wait(timeout)

    def wake(self) -> None:
        with self._lock:
            self._lock.notify_all()


class LibraryEventHandler(FileSystemEventHandler):
    """Classifies watchdog events for the debouncer. Never raises: a failure is logged and watching goes on."""

    def __init__(self, debouncer: Debouncer, extensions: frozenset[str], ignore_under: tuple[str, ...] = ()) -> None:
        self.debouncer = debouncer
        self.extensions = extensions
        self.ignore_under = ignore_under
        self.errors = 0

    def _audio(self, path: str) -> bool:
        name = os.path.basename(path)
        return (is_library_audio(name, self.extensions)
                and not any(path.startswith(d) for d in self.ignore_under)
                and not any(part.startswith(".") for part in Path(path).parts[1:-1]))

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self.handle(event)
        except Exception:  # a handler exception must never kill the observer thread
            self.errors += 1
            log.exception("error while handling %s; watching goes on", event)

    def handle(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        kind = event.event_type
        if kind in ("opened", "closed_no_write"):
            return
        if kind == "moved":
            dest = os.fsdecode(event.dest_path)
            if event.is_directory:
                self.debouncer.op(Op("move", src, dest, is_dir=True))
            elif self._audio(dest) and self._audio(src):
                self.debouncer.op(Op("move", src, dest))
            elif self._audio(dest):  # a temp or partial name becoming real (our own writes included)
                self.debouncer.touch(dest)
            elif self._audio(src):  # renamed to an ignored name: gone from the library
                self.debouncer.op(Op("delete", src))
            return
        if kind == "deleted":
            if event.is_directory or self._audio(src):
                self.debouncer.op(Op("delete", src, is_dir=event.is_directory))
            return
        if not event.is_directory and kind in ("created", "modified", "closed") and self._audio(src):
            self.debouncer.touch(src)
