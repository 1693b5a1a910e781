"""`tagger watch`: tag new and changed music as it arrives.

Threads: the watchdog observer(s) only classify events and hand them to a :class:`Debouncer`; one worker
thread owns the database and the model, applies moves and deletions, and streams settled files into the
same engine as `tagger scan` (so 1,000 files landing at once are analysed as one batched stream); the main
thread handles signals, supervises the other two and sends systemd keep-alives.

Known failure modes and what handles them:
- our own tag writes: the temp copy has an ignored name, and the renamed result has the size and mtime the
  database recorded after the write, so it never needs analysis again (no cooldown timers);
- half-copied files: a path is analysed only after `settle_seconds` without events, and truncated files are
  refused by the decoder;
- inotify watch limits: one log line naming the sysctl, then polling for that root;
- missed events (overflow, network mounts, downtime): a reconciliation scan at start and every `rescan_hours`;
- an unmounted or emptied root: deletions are not applied to a root that holds no audio at all;
- an exception in an event handler: logged, watching goes on; a dead observer is restarted.
"""
from __future__ import annotations

import errno
import faulthandler
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from tagger.config import Config, load_config, schema
from tagger.daemon.events import Debouncer, LibraryEventHandler, Op
from tagger.daemon.notify import notify, watchdog_interval
from tagger.errors import TaggerError
from tagger.fsutil import path_key
from tagger.library import reconcile
from tagger.library.files import discover
from tagger.library.inbox import Inbox, write_status
from tagger.library.reconcile import Move
from tagger.library.store import Store
from tagger.models.session import Model
from tagger.pipeline.corrections import drain
from tagger.pipeline.scanner import FileOutcome, Scanner, ScanReport, load_models, scan

log = logging.getLogger(__name__)

INOTIFY_SYSCTL = "fs.inotify.max_user_watches"
STALL_SECONDS = 60.0  # no progress for this long (and twice the keep-alive interval) means stuck


@dataclass
class DaemonStats:
    analysed: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    moved: int = 0
    removed: int = 0
    reconciliations: int = 0
    batches: int = 0

    def record(self, outcome: FileOutcome, wrote: bool) -> None:
        key = os.fsdecode(outcome.path)
        self.analysed[key] = self.analysed.get(key, 0) + 1
        if wrote:
            self.written[key] = self.written.get(key, 0) + 1
        if outcome.status != "ok":
            self.failed[key] = outcome.reason


class Daemon:
    """The watch daemon. `run()` blocks until SIGTERM/SIGINT (or `stop()`), then exits cleanly."""

    def __init__(self, cfg: Config, roots: list[Path], *, config_path: Path | None = None,
                 model: Model | list[Model] | None = None, clock: Callable[[], float] = time.monotonic,
                 stop_event: threading.Event | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.roots = [Path(os.path.abspath(r)) for r in roots]
        self.models: list[Model] = ([model] if isinstance(model, Model) else list(model)) if model else load_models(cfg)
        self.debouncer = Debouncer(cfg.settle_seconds, clock)
        self.stats = DaemonStats()
        self.stop_event = stop_event or threading.Event()
        self.reload_event = threading.Event()
        self.ready = threading.Event()
        self.store: Store | None = None
        self.observers: list = []
        self.polled: list[Path] = []
        self.worker: threading.Thread | None = None
        self.worker_error: BaseException | None = None
        self._last_rescan = 0.0
        self.heartbeat = time.monotonic()  # the worker's last sign of progress (see progressing())
        self.reconcile_soon = False
        self.engines: list = []  # engines of the running scans, whose heartbeats count as progress too
        # The scanner of the last reconciliation, reused for event batches: its models, trained heads and
        # album/folder index are loaded once, not per batch. A reload drops it; the next reconciliation makes one.
        self.scanner: Scanner | None = None
        self.inbox = Inbox(cfg.database)  # corrections from the web page; applied by this worker only
        self.state = "starting"
        self.progress = (0, 0)  # (done, total) of the current reconciliation
        self._published = 0.0
        self.started = time.time()

    # -- observers ---------------------------------------------------------------------------------
    def _handler(self) -> LibraryEventHandler:
        db = path_key(self.cfg.database).rstrip(os.sep) + os.sep
        return LibraryEventHandler(self.debouncer, self.cfg.extensions, (db,))

    def start_observers(self) -> None:
        handler = self._handler()
        primary = (PollingObserver(timeout=self.cfg.poll_seconds) if self.cfg.polling else Observer())
        primary.name = "tagger-observer"
        primary.daemon = True
        primary.start()
        self.observers = [primary]
        fallback = None
        for root in self.roots:
            if not root.is_dir():
                log.warning("library folder %s does not exist (yet); the periodic rescan will pick it up", root)
                continue
            try:
                primary.schedule(handler, str(root), recursive=True)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                    raise
                limit = _read_sysctl(INOTIFY_SYSCTL)
                log.warning("inotify watch limit reached while watching %s (%s = %s); raise it, e.g. "
                            "`sysctl -w %s=524288`; polling %s every %g s meanwhile", root, INOTIFY_SYSCTL,
                            limit, INOTIFY_SYSCTL, root, self.cfg.poll_seconds)
                if fallback is None:
                    fallback = PollingObserver(timeout=self.cfg.poll_seconds)
                    fallback.name = "tagger-observer-poll"
                    fallback.daemon = True
                    fallback.start()
                    self.observers.append(fallback)
                fallback.schedule(handler, str(root), recursive=True)
                self.polled.append(root)

    def stop_observers(self) -> None:
        for obs in self.observers:
            obs.stop()
        for obs in self.observers:
            obs.join(timeout=10)
        self.observers = []

    # -- worker ------------------------------------------------------------------------------------
    def _scanner(self) -> Scanner:
        assert self.store is not None
        scanner = Scanner(self.cfg, self.models, self.store, roots=self.roots)

        def on_result(outcome: FileOutcome) -> None:
            self.heartbeat = time.monotonic()
            wrote = bool(outcome.changes) and not outcome.write_error
            self.stats.record(outcome, wrote=wrote)
            self.progress = (self.progress[0] + 1, self.progress[1])
            self.serve_inbox()  # a correction waits one file at most, not a whole reconciliation
            self.publish()
            if outcome.status != "ok":
                log.warning("failed: %s: %s", os.fsdecode(outcome.path), outcome.reason)
            else:
                log.info("analysed %s%s", os.fsdecode(outcome.path), " (tags written)" if wrote else
                         (f" (tags not written: {outcome.write_error})" if outcome.write_error else ""))

        scanner.on_result = on_result
        self.engines = [scanner.engine]
        return scanner

    def reconcile(self, yield_to_events: bool = False) -> None:
        """Full incremental scan of the roots: catches whatever events missed.

        With ``yield_to_events`` (the periodic rescan) it is low priority: it stops as soon as new files are
        waiting and is resumed after they are done.
        """
        assert self.store is not None
        existing = [r for r in self.roots if r.is_dir()]
        report = ScanReport()
        self._drop_scanner()
        scanner = self.scanner = self._scanner()
        leftovers: list[Path] = []
        files, _ = discover(existing, self.cfg.extensions, leftovers)
        for tmp in leftovers:  # temp copies of a tag write interrupted by a crash; we hold the lock
            log.info("removing temp copy left by an interrupted tag write: %s", tmp)
            tmp.unlink(missing_ok=True)
        scanner.prune(existing, files, report)
        todo = []
        for p, st, stale in scanner.select(files, False, report):
            if time.time() - st.st_mtime < self.cfg.settle_seconds:  # still arriving: let it settle first
                self.debouncer.touch(os.fsdecode(p))
            else:
                todo.append((p, st, stale))
        interrupted = False

        def should_stop() -> bool:
            nonlocal interrupted
            interrupted = self.stop_event.is_set() or (yield_to_events and self.debouncer.pending > 0)
            return interrupted

        self.state, self.progress = "reconciling", (0, len(todo))
        self.publish(force=True)
        scanner.run(todo, report, should_stop=should_stop)
        self.state = "watching"
        self.publish(force=True)
        self.stats.removed += report.removed
        if interrupted:
            return
        self.stats.reconciliations += 1
        self._last_rescan = time.monotonic()
        log.info("reconciled %d folder(s): %d analysed, %d unchanged, %d failed, %d removed",
                 len(existing), report.analysed, report.skipped, len(report.failed), report.removed)

    def apply_ops(self, ops: list[Op]) -> None:
        """Moves update records in place (no re-analysis); deletions drop them, except under an emptied root
        (:mod:`tagger.library.reconcile`, the scan's rules)."""
        assert self.store is not None
        moves = [Move(op.src, op.dest, op.is_dir) for op in ops if op.kind != "delete"]
        deleted = [Move(op.src, "", op.is_dir) for op in ops if op.kind == "delete"]
        moved = reconcile.apply_moves(self.store, [m.card.id for m in self.models], self.roots, moves)
        for path in moved.reanalyse:
            self.debouncer.touch(path)
        self.stats.moved += moved.moved
        self.stats.removed += moved.removed
        if deleted:
            self.stats.removed += reconcile.apply_deletes(self.store, self.roots, self.cfg.extensions, deleted).removed
        self.store.commit()

    def _stream(self, scanner: Scanner, first: list[str]) -> Iterator[tuple[Path, os.stat_result, list[str]]]:
        """Settled paths that need analysis, fed to the engine as they come: one stream per burst of files."""
        assert self.store is not None
        queue = list(first)
        while not self.stop_event.is_set():
            if not queue:
                wait = self.debouncer.next_due_in(paths_only=True)
                if wait is None or self.debouncer.has_ops():
                    return  # nothing more settling (or moves to apply first): end the stream
                self.stop_event.wait(min(wait, 0.5))
                queue = self.debouncer.take_due()
                continue
            p = queue.pop(0)
            try:
                st = os.stat(p)
            except OSError:
                continue  # gone again
            if time.time() - st.st_mtime < self.cfg.settle_seconds * 0.5 and self.cfg.settle_seconds > 0:
                self.debouncer.touch(p)  # still being written, whatever the events said
                continue
            stale = scanner.stale_models(p, st, False)
            if stale:
                yield Path(p), st, stale

    def work(self) -> None:
        """The worker thread: the only code that touches the store while the daemon runs."""
        try:
            self.store = Store(self.cfg.database, writer=True)
            self.ready.set()
            self.reconcile()
            notify("STATUS=watching " + ", ".join(map(str, self.roots)))
            while not self.stop_event.is_set():
                self.heartbeat = time.monotonic()
                if self.reload_event.is_set():
                    self.reload_event.clear()
                    self._reload()
                ops = self.debouncer.take_ops()
                if ops:
                    self.apply_ops(ops)
                self.serve_inbox()
                due = self.debouncer.take_due()
                if due:
                    self.stats.batches += 1
                    scanner = self.scanner or self._scanner()
                    self.state, self.progress = "analysing new files", (0, len(due))
                    scanner.run(self._stream(scanner, due), ScanReport(), should_stop=self.stop_event.is_set)
                    self.state = "watching"
                    self.publish(force=True)
                    continue
                self.publish()
                if self.reconcile_soon or (self.cfg.rescan_hours > 0
                                           and time.monotonic() - self._last_rescan > self.cfg.rescan_hours * 3600):
                    self.reconcile_soon = False
                    self.reconcile(yield_to_events=True)
                    continue
                wait = self.debouncer.next_due_in()
                self.debouncer.wait(1.0 if wait is None else min(max(wait, 0.01), 1.0))
        except BaseException as exc:  # surfaced to the main thread, which exits non-zero
            self.worker_error = exc
            log.exception("worker stopped")
            self.stop_event.set()
        finally:
            self._drop_scanner()
            self.state = "stopped"
            self.publish(force=True)
            if self.store is not None:
                self.store.close()
            self.ready.set()

    def _drop_scanner(self) -> None:
        """Forget the reused scanner, stopping its decoder processes if it has any."""
        if self.scanner is not None:
            self.scanner.engine.close()
            self.scanner = None

    def serve_inbox(self) -> None:
        """Apply the corrections waiting in the inbox (this worker holds the writer lock)."""
        if self.store is not None and self.inbox.pending():
            drain(self.inbox, self.store, self.cfg)

    def publish(self, force: bool = False) -> None:
        """The status the web page shows, at most once a second unless ``force``."""
        now = time.monotonic()
        if not force and now - self._published < 1.0:
            return
        self._published = now
        write_status(self.cfg.database, {
            "state": self.state, "roots": [os.fsdecode(r) for r in self.roots], "started": self.started,
            "done": self.progress[0], "total": self.progress[1], "waiting": self.debouncer.pending,
            "analysed": sum(self.stats.analysed.values()), "written": sum(self.stats.written.values()),
            "failed": len(self.stats.failed), "moved": self.stats.moved, "removed": self.stats.removed,
            "reconciliations": self.stats.reconciliations, "batches": self.stats.batches,
            "models": [m.card.analyser for m in self.models]})

    def _on_sighup(self, *_: object) -> None:
        """SIGHUP: reload the configuration at the worker's next turn."""
        self.reload_event.set()
        self.debouncer.wake()

    def _reload(self) -> None:
        # Heads trained or removed by `tagger train` take effect at the next reconciliation, which decides
        # the affected files again from their stored vectors (nothing is decoded).
        self.reconcile_soon = True
        self._drop_scanner()
        if self.config_path is None and self.cfg.source == "defaults":
            log.info("SIGHUP: no configuration file to reload")
            return
        try:
            new = load_config(self.config_path)
        except Exception as exc:
            log.error("SIGHUP: configuration not reloaded: %s", exc)
            return
        changed = schema.needs_reload(self.cfg, new)  # models, device, threads, precision, memory, models_dir
        if changed:
            log.info("SIGHUP: %s changed: loading the model set again", ", ".join(changed))
            try:
                self.models = load_models(new)
            except TaggerError as exc:  # a typo must not kill a running daemon: keep the models it has
                log.error("SIGHUP: configuration not reloaded, the new model set cannot be loaded: %s; "
                          "still running with %s", exc, ", ".join(m.card.analyser for m in self.models))
                return
        self.cfg = new
        self.debouncer.settle = new.settle_seconds
        log.info("SIGHUP: configuration reloaded from %s", new.source)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self.start_observers()
        self.worker = threading.Thread(target=self.work, name="tagger-worker")
        self.worker.start()
        self.ready.wait()

    def stop(self) -> None:
        self.stop_event.set()
        self.debouncer.wake()

    def shutdown(self) -> None:
        self.stop()
        notify("STOPPING=1")
        self.stop_observers()
        if self.worker is not None:
            self.worker.join()

    def supervise_once(self) -> None:
        for obs in list(self.observers):
            if not obs.is_alive() and not self.stop_event.is_set():
                log.error("file observer stopped unexpectedly; restarting it and rescanning")
                self.stop_observers()
                self.start_observers()
                self._last_rescan = 0.0  # events may have been lost
                self.debouncer.wake()
                break

    def idle_for(self) -> float:
        last = max([self.heartbeat, *(e.heartbeat for e in self.engines)])
        return time.monotonic() - last

    def progressing(self, stall: float = 60.0) -> bool:
        """Whether the worker did real work recently: an idle loop turn, a decoded block, an inference batch or
        a finished file. A live thread alone proves nothing (a blocked decoder is alive too)."""
        return self.idle_for() < stall

    def run(self) -> None:
        """Main thread: signals, supervision, systemd notifications. Returns when stopped cleanly; a worker that
        failed is raised here, after shutdown (the command line turns it into the exit code)."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, self._on_sighup)
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1` dumps every thread's stack
        if self.stop_event.is_set():  # asked to stop while still starting up
            return
        self.start()
        if self.worker_error is None:
            notify("READY=1\nSTATUS=reconciling")
            log.info("watching %s (%s)", ", ".join(map(str, self.roots)),
                     "polling" if self.cfg.polling else "inotify")
        keepalive = watchdog_interval()
        try:
            while not self.stop_event.wait(min(keepalive or 1.0, 1.0)):
                self.supervise_once()
                if keepalive and self.worker is not None and self.worker.is_alive():
                    if self.progressing(stall=max(2 * keepalive, STALL_SECONDS)):
                        notify("WATCHDOG=1")
                    else:  # no keep-alive: systemd restarts a daemon that is alive but stuck
                        log.error("no progress for %.0f s: withholding the watchdog keep-alive", self.idle_for())
        finally:
            self.shutdown()
        if isinstance(self.worker_error, TaggerError):
            raise self.worker_error
        if self.worker_error is not None:
            raise TaggerError("watch", f"the worker stopped: {type(self.worker_error).__name__}: "
                                       f"{self.worker_error}") from self.worker_error
        log.info("stopped cleanly")


def _read_sysctl(name: str) -> str:
    try:
        return Path("/proc/sys/" + name.replace(".", "/")).read_text().strip()
    except OSError:
        return "unknown"


__all__ = ["Daemon", "Debouncer", "LibraryEventHandler", "Op", "scan"]
