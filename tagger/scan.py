"""One-shot library scan: discover -> skip unchanged -> analyse -> write tags -> store.

Incremental: a file is analysed again only when its size, mtime or the analyser (model id and version)
changed, or with ``force``. Failed files keep their verdict until one of those changes. Records of files
that disappeared are dropped, but only under a library root that exists and still holds audio, so an
unmounted or emptied disk never wipes the database.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .config import Config
from .engine import Engine, TrackFailure, TrackResult
from .errors import TagWriteError
from .model import Model
from .store import Store, path_key
from .tags import ALL_FIELDS, PROVENANCE, Change, plan_changes, select_labels
from .writer import INFO_FIELDS, TEMP_MARK, read_fields, write_changes

log = logging.getLogger(__name__)


def is_ignored_name(name: str) -> bool:
    """Hidden files, partial downloads, sync tools' temp files and this tool's own temp copies."""
    return (name.startswith(".") or name.startswith("~syncthing~") or TEMP_MARK in name
            or name.endswith((".part", ".tmp", ".crdownload", ".partial", ".!qB")))


def discover(roots: Iterable[Path], extensions: frozenset[str],
             leftovers: list[Path] | None = None) -> tuple[list[Path], list[Path]]:
    """(audio files under the roots, sorted; roots that are missing or not folders).

    Temp copies this tool left behind when killed mid-write are appended to ``leftovers``.
    """
    files: list[Path] = []
    missing: list[Path] = []
    for root in roots:
        root = Path(os.path.abspath(root))
        if root.is_file():
            files.append(root)
            continue
        if not root.is_dir():
            missing.append(root)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if leftovers is not None and name.startswith(".") and TEMP_MARK in name and name.endswith(".tmp"):
                    leftovers.append(Path(dirpath) / name)
                if not is_ignored_name(name) and os.path.splitext(name)[1].lower() in extensions:
                    files.append(Path(dirpath) / name)
    return sorted(set(files)), missing


def holds_audio(root: Path, extensions: frozenset[str]) -> bool:
    """Whether a folder holds at least one audio file; stops at the first (an unmount check, not a listing)."""
    for _, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(not is_ignored_name(n) and os.path.splitext(n)[1].lower() in extensions for n in filenames):
            return True
    return False


def needs_analysis(record: dict | None, st: os.stat_result, analyser: str, force: bool) -> bool:
    if force or record is None:
        return True
    return (record.get("size"), record.get("mtime_ns"), record.get("analyser")) != (st.st_size, st.st_mtime_ns, analyser)


@dataclass
class FileOutcome:
    path: Path
    status: str  # ok | failed
    reason: str = ""
    changes: list[Change] = field(default_factory=list)
    write_error: str = ""


@dataclass
class ScanReport:
    analysed: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    written: int = 0
    write_failed: list[tuple[str, str]] = field(default_factory=list)
    removed: int = 0
    missing_roots: list[str] = field(default_factory=list)
    kept_roots: list[str] = field(default_factory=list)  # roots that looked unmounted: nothing pruned
    outcomes: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0
    audio_seconds: float = 0.0

    def to_json(self) -> dict:
        return {"analysed": self.analysed, "skipped": self.skipped, "written": self.written, "removed": self.removed,
                "failed": [{"path": p, "reason": r} for p, r in self.failed],
                "write_failed": [{"path": p, "reason": r} for p, r in self.write_failed],
                "missing_roots": self.missing_roots, "unmounted_roots_kept": self.kept_roots,
                "seconds": round(self.seconds, 3), "audio_seconds": round(self.audio_seconds, 1),
                "files": [{"path": os.fsdecode(o.path), "status": o.status, "reason": o.reason or None,
                           "write_error": o.write_error or None,
                           "changes": [{"field": c.field, "before": c.before, "after": c.after} for c in o.changes]}
                          for o in self.outcomes]}


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class Scanner:
    """Drives one analysis pass; the daemon reuses it for its batches."""

    def __init__(self, cfg: Config, model: Model, store: Store | None, *, pretend: bool = False,
                 write: bool | None = None) -> None:
        self.cfg, self.model, self.store, self.pretend = cfg, model, store, pretend
        self.write = cfg.write_enabled if write is None else write
        self.spec = model.spec
        self.engine = Engine(model, max_batch=cfg.batch_size, decode_workers=cfg.decode_workers)
        self.rules = cfg.labels.get(self.spec.id, {})
        self.on_result: Callable[[FileOutcome], None] | None = None
        if self.write and not self.rules:
            log.warning("config has no label table for model %s: nothing will be written to files", self.spec.id)

    def prune(self, roots: Iterable[Path], found: list[Path], report: ScanReport) -> None:
        if self.store is None or self.pretend:
            return
        present = {path_key(p) for p in found}
        for root in roots:
            root_key = path_key(root)
            if not Path(root).is_dir():
                continue
            prefix = root_key.rstrip(os.sep) + os.sep
            under = [r for r in self.store.records(self.spec.id) if r["path"].startswith(prefix)]
            if under and not any(k.startswith(prefix) for k in present):
                report.kept_roots.append(root_key)
                log.warning("%s holds no audio files but the database has %d records under it; it looks "
                            "unmounted or emptied, so none are removed", root_key, len(under))
                continue
            for r in under:
                if r["path"] not in present and not os.path.lexists(os.fsencode(r["path"])):
                    self.store.remove(r["path"], self.spec.id)
                    report.removed += 1

    def select(self, files: list[Path], force: bool, report: ScanReport) -> list[tuple[Path, os.stat_result]]:
        todo = []
        for p in files:
            try:
                st = os.stat(p)
            except OSError as exc:
                report.failed.append((os.fsdecode(p), f"cannot stat: {exc.strerror}"))
                continue
            rec = self.store.get(p, self.spec.id) if self.store is not None else None
            if needs_analysis(rec, st, self.spec.analyser, force):
                todo.append((p, st))
            else:
                report.skipped += 1
        return todo

    def run(self, todo: Iterable[tuple[Path, os.stat_result]], report: ScanReport,
            progress: Callable[[int, int, Path], None] | None = None,
            should_stop: Callable[[], bool] | None = None, total: int | None = None) -> None:
        """Analyse ``todo`` (consumed lazily, so the daemon can keep feeding it) and store the results.

        ``should_stop`` is checked after each file: the file in hand is finished and committed, the rest
        is left for next time.
        """
        stats: dict[str, os.stat_result] = {}

        def paths() -> Iterator[Path]:
            for p, st in todo:
                stats[os.fsdecode(p)] = st
                yield p

        if total is None and isinstance(todo, list):
            total = len(todo)
        last_commit = time.monotonic()
        done = 0
        t0 = time.monotonic()
        results = self.engine.analyse(paths())
        try:
            for res in results:
                done += 1
                outcome = self._handle(res, stats.pop(os.fsdecode(res.path)), report)
                report.outcomes.append(outcome)
                if self.on_result is not None:
                    self.on_result(outcome)
                if progress:
                    progress(done, total or done, res.path)
                if self.store is not None and not self.pretend and (
                        self.store.pending >= self.cfg.commit_every
                        or time.monotonic() - last_commit >= self.cfg.commit_seconds):
                    self.store.commit()
                    last_commit = time.monotonic()
                if should_stop is not None and should_stop():
                    break
        finally:
            results.close()  # stops decoding the rest
            if self.store is not None and not self.pretend:
                self.store.commit()
            report.seconds += time.monotonic() - t0

    def _handle(self, res: TrackResult | TrackFailure, st: os.stat_result, report: ScanReport) -> FileOutcome:
        base = {"path": res.path, "model": self.spec.id, "analyser": self.spec.analyser, "size": st.st_size,
                "mtime_ns": st.st_mtime_ns, "analysed_at": now_iso()}
        if isinstance(res, TrackFailure):
            report.failed.append((os.fsdecode(res.path), res.reason))
            if self.store is not None and not self.pretend:
                self.store.put({**base, "status": "failed", "reason": res.reason})
            return FileOutcome(res.path, "failed", res.reason)
        report.analysed += 1
        report.audio_seconds += res.duration
        scores = dict(zip(self.spec.labels, map(float, res.tags)))
        selection = select_labels(self.spec.labels, res.tags, self.rules, self.cfg.fields)
        outcome = FileOutcome(res.path, "ok")
        written: dict[str, list[str]] = {}
        write_error = ""
        info: dict[str, str] = {}
        try:
            current = read_fields(res.path, id3_version=self.cfg.id3_version, v23_sep=self.cfg.id3v23_separator,
                                  names=(*ALL_FIELDS, *INFO_FIELDS))
            info = {name.lower(): current[name][0] for name in INFO_FIELDS if current.get(name)}
        except TagWriteError as exc:  # tags unreadable (e.g. WMA): analysis still counts, nothing is written
            current = None
            write_error = exc.reason
            if self.write:
                report.write_failed.append((os.fsdecode(res.path), exc.reason))
                outcome.write_error = exc.reason
        if self.write and current is not None:
            try:
                changes = plan_changes(current, selection, self.cfg, analyser=self.spec.analyser, scores=scores,
                                       now=base["analysed_at"])
                outcome.changes = changes
                if changes and not self.pretend:
                    new_st = write_changes(res.path, changes, expect=(st.st_size, st.st_mtime_ns),
                                           id3_version=self.cfg.id3_version, v23_sep=self.cfg.id3v23_separator,
                                           audio_digest=res.info.native_digest())
                    base["size"], base["mtime_ns"] = new_st.st_size, new_st.st_mtime_ns
                    report.written += 1
                written = {c.field: c.after for c in changes if c.field not in PROVENANCE}
            except TagWriteError as exc:
                write_error = exc.reason
                report.write_failed.append((os.fsdecode(res.path), exc.reason))
                outcome.write_error = exc.reason
        if self.store is not None and not self.pretend:
            # Kept small on purpose: every field of every record is parsed when the database opens.
            record = {**base, "status": "ok", "fingerprint": res.fingerprint, "duration": round(res.duration, 2),
                      "format": res.info.format}
            if written:
                record["written"] = written
            if write_error and self.write:
                record["write_error"] = write_error
            record.update(info)
            self.store.put(record, res.tags, res.embedding)
        return outcome


def scan(roots: list[Path], cfg: Config, model: Model, store: Store | None, *, force: bool = False,
         pretend: bool = False, progress: Callable[[int, int, Path], None] | None = None) -> ScanReport:
    report = ScanReport()
    leftovers: list[Path] = []
    files, missing = discover(roots, cfg.extensions, leftovers)
    if store is not None and not pretend:  # we hold the database lock: no other tagger is writing these
        for tmp in leftovers:
            log.info("removing temp copy left by an interrupted tag write: %s", tmp)
            tmp.unlink(missing_ok=True)
    report.missing_roots = [os.fsdecode(m) for m in missing]
    scanner = Scanner(cfg, model, store, pretend=pretend)
    scanner.prune([r for r in roots if Path(r).is_dir()], files, report)
    todo = scanner.select(files, force, report)
    scanner.run(todo, report, progress)
    return report

