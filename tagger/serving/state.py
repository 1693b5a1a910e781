"""The server's view of the database: reopened when another process commits (in the background when that
is slow), so requests never wait on a big library."""
from __future__ import annotations

import logging
import threading
import time

from tagger.config import Config
from tagger.library.store import RECORDS, Store
from tagger.lookup.similar import Library
from tagger.models.session import Model
from tagger.serving.web.site import Snapshot

log = logging.getLogger(__name__)


class LibraryState:
    """The read-only store, library and page index, reopened when the writer commits.

    A small library is reopened by the request that notices the commit. A large one (its last reopening took
    more than SYNC_REBUILD_S) is reopened in a background thread while requests keep being answered from the
    previous view, so a daemon committing every 30 s during a scan never stalls the pages for the 1.8 s a
    100,000-track index takes. An old view is never closed under a request still using it: it is dropped
    and collected when the last request lets go of it.
    """

    SYNC_REBUILD_S = 0.25

    def __init__(self, cfg: Config, model: Model) -> None:
        self.cfg, self.model = cfg, model
        self.lock = threading.Lock()
        self.stamp: tuple | None = None
        self.store: Store | None = None
        self.lib: Library | None = None
        self.snap: Snapshot | None = None
        self.build_s = 0.0
        self.building: threading.Thread | None = None

    def _stamp(self) -> tuple:
        out: list[tuple[int, int] | None] = []
        for name in (RECORDS, "records.journal"):
            try:
                st = (self.cfg.database / name).stat()
                out.append((st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    def _open(self) -> tuple[Store | None, Library | None, Snapshot | None]:
        if not (self.cfg.database / RECORDS).exists():
            return None, None, None
        store = Store(self.cfg.database, writer=False)
        if not len(store.slots(self.model.spec.id)[0]):
            return store, None, None
        lib = Library(store, self.model.spec.id, self.model.spec.labels)
        return store, lib, Snapshot(self.cfg, store, lib)

    def _swap(self, stamp: tuple, opened: tuple, seconds: float) -> None:
        self.store, self.lib, self.snap = opened
        self.stamp, self.build_s = stamp, seconds

    def _rebuild(self, stamp: tuple) -> None:
        t0 = time.monotonic()
        try:
            opened = self._open()
        except Exception as exc:  # keep serving the previous view; the next request tries again
            log.error("cannot reopen the database: %s", exc)
            opened = None
        with self.lock:
            if opened is not None:
                self._swap(stamp, opened, time.monotonic() - t0)
            self.building = None

    def current(self) -> tuple[Store | None, Library | None]:
        """(store, library), or (None, None) while the database is empty or not created yet: the API
        starts before the first scan and answers with empty results. A damaged database raises."""
        with self.lock:
            stamp = self._stamp()
            if stamp == self.stamp:
                return self.store, self.lib
            if self.snap is not None and self.build_s > self.SYNC_REBUILD_S:
                if self.building is None:
                    self.building = threading.Thread(target=self._rebuild, args=(stamp,), name="tagger-serve-reopen",
                                                     daemon=True)
                    self.building.start()
                return self.store, self.lib  # the previous view, until the new one is ready
            t0 = time.monotonic()
            self._swap(stamp, self._open(), time.monotonic() - t0)
            return self.store, self.lib

    def snapshot(self) -> Snapshot | None:
        """The web pages' view of the current database (None while nothing is analysed)."""
        self.current()
        return self.snap
