"""One-shot library scan: discover -> skip unchanged -> analyse (model set) -> decide -> write tags -> store.

Incremental per model: a file is analysed by a model again only when its size or mtime changed, the
model's version changed, the model has no record for it yet (a model added to the set), or with
``force``; the decision then uses every model's song-level scores, fresh or stored. Failed files keep
their verdict until one of those changes. Records of files that disappeared are dropped, but only under
a library root that exists and still holds audio, so an unmounted or emptied disk never wipes the
database.
"""
from __future__ import annotations

import logging
import os
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from tagger.analysis.engine import Engine, TrackFailure, TrackResult
from tagger.config import Config
from tagger.decision.decide import Decision
from tagger.decision.track import Decider
from tagger.errors import TagWriteError
from tagger.fields import INFO_FIELDS
from tagger.fsutil import path_key
from tagger.library import reconcile
from tagger.library.files import discover
from tagger.library.records import Status, new_track_id
from tagger.library.store import Store
from tagger.library.vectors import stored_vectors
from tagger.models.card import Card
from tagger.models.heads import Head
from tagger.models.session import Model
from tagger.tagging.plan import (
    PROVENANCE,
    Change,
    all_tags,
    locked_fields,
    plan_changes,
    user_values,
)
from tagger.tagging.writer import read_fields, write_changes

log = logging.getLogger(__name__)


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
    decision: Decision | None = None


@dataclass
class ScanReport:
    analysed: int = 0
    redecided: int = 0  # not re-analysed, decided again from stored vectors (a head was added or removed)
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    written: int = 0
    write_failed: list[tuple[str, str]] = field(default_factory=list)
    removed: int = 0
    moved: int = 0
    missing_roots: list[str] = field(default_factory=list)
    kept_roots: list[str] = field(default_factory=list)  # roots that looked unmounted: nothing pruned
    outcomes: list[FileOutcome] = field(default_factory=list)
    not_regular: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    audio_seconds: float = 0.0

    def to_json(self) -> dict:
        return {"analysed": self.analysed, "redecided": self.redecided, "skipped": self.skipped, "written": self.written, "removed": self.removed,
                "moved": self.moved,
                "failed": [{"path": p, "reason": r} for p, r in self.failed],
                "write_failed": [{"path": p, "reason": r} for p, r in self.write_failed],
                "missing_roots": self.missing_roots, "unmounted_roots_kept": self.kept_roots,
                "seconds": round(self.seconds, 3), "audio_seconds": round(self.audio_seconds, 1),
                "files": [{"path": os.fsdecode(o.path), "status": o.status, "reason": o.reason or None,
                           "write_error": o.write_error or None,
                           "decision": ({name: {"values": fd.written, "reason": fd.reason}
                                         for name, fd in o.decision.fields.items()} if o.decision else None),
                           "changes": [{"field": c.field, "before": c.before, "after": c.after} for c in o.changes]}
                          for o in self.outcomes]}


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def load_models(cfg: Config) -> list[Model]:
    """The configured model set, each loaded once (one session per model for the whole run)."""
    from tagger.models.session import auto_threads, load_model

    threads = cfg.threads or auto_threads(len(cfg.models), cfg.device)
    models = [load_model(name, models_dir=cfg.models_dir, device=cfg.device, threads=threads,
                         memory=cfg.memory, precision=cfg.precision)
              for name in cfg.models]
    ids = [m.card.id for m in models]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        from tagger.errors import ModelError

        raise ModelError(", ".join(cfg.models), f"the model set names model id(s) {dup} twice")
    return models


def engine_for(cfg: Config, models: Sequence[Model], **overrides: Any) -> Engine:
    """The engine a command runs for ``cfg``: its batch size, decoders, window bound and streams (the one place
    the pipeline settings are read from the config; ``overrides`` for what a caller fixes itself)."""
    settings: dict[str, Any] = dict(max_batch=cfg.batch_size, decode_workers=cfg.decode_workers,
                                    max_windows=cfg.max_windows, decode_processes=cfg.decode_processes,
                                    streams=cfg.streams)
    return Engine(models, **{**settings, **overrides})


class Scanner:
    """Drives one analysis pass over a model set; the daemon reuses it for its batches."""

    def __init__(self, cfg: Config, models: Model | list[Model], store: Store | None, *, pretend: bool = False,
                 write: bool | None = None, roots: Iterable[Path] | None = None) -> None:
        self.models = [models] if isinstance(models, Model) else list(models)
        self.cfg, self.store, self.pretend = cfg, store, pretend
        self.roots: list[Path] = list(roots) if roots is not None else list(cfg.library)  # the write boundary
        self.write = cfg.write_enabled if write is None else write
        self.cards: dict[str, Card] = {m.card.id: m.card for m in self.models}
        self.engine = engine_for(cfg, self.models)
        self.decider = Decider(self.cards, cfg.fields, cfg.vocabulary, store.root if store is not None else None,
                               (lambda: list(store.records(next(iter(self.cards))))) if store is not None else None)
        self.heads: list[Head] = self.decider.heads
        if store is not None and not pretend and store.writer:
            for m in self.models:
                store.describe(m.card.id, m.card.to_json())
        self.on_result: Callable[[FileOutcome], None] | None = None

    @property
    def analysers(self) -> list[str]:
        return [c.analyser for c in self.cards.values()]

    def prune(self, roots: Iterable[Path], found: list[Path], report: ScanReport,
              unreadable: Iterable[str] = ()) -> None:
        """Drop records of files that are gone (:func:`tagger.library.reconcile.prune`)."""
        if self.store is None or self.pretend:
            return
        done = reconcile.prune(self.store, roots, found, unreadable)
        report.removed += done.removed
        report.kept_roots += done.kept_roots

    def carry_moves(self, roots: Iterable[Path], found: list[Path], report: ScanReport) -> None:
        """Records follow files moved while no daemon watched (:func:`tagger.library.reconcile.carry_moves`)."""
        if self.store is None or self.pretend:
            return
        report.moved += reconcile.carry_moves(self.store, next(iter(self.cards)), roots, found).moved

    def stale_models(self, path: Path | str, st: os.stat_result, force: bool) -> list[str]:
        """Model ids of the set that must (re-)analyse this file."""
        out = []
        for mid, card in self.cards.items():
            rec = self.store.get(path, mid) if self.store is not None else None
            if needs_analysis(rec, st, card.analyser, force) or (
                    rec is not None and self.store is not None and rec.get("status") == Status.OK
                    and not self.store.has_vectors(rec)):
                out.append(mid)
        return out

    @property
    def head_analysers(self) -> list[str]:
        return self.decider.head_analysers

    def needs_decision(self, path: Path | str) -> bool:
        """An analysed, unchanged file whose decision was made with other heads (one trained or removed
        since, or before the user's own values were recorded), or was never applied to the file (scanned
        with --no-write, now writing): decide again from the stored vectors."""
        if self.store is None:
            return False
        rec = self.store.get(path, next(iter(self.cards)))
        if rec is None or rec.get("status") != Status.OK:
            return False
        return rec.get("heads") != self.head_analysers or (self.write and rec.get("applied") is False)

    def select(self, files: list[Path], force: bool,
               report: ScanReport) -> list[tuple[Path, os.stat_result, list[str]]]:
        """Files to analyse, each with the model ids that must run on it; an empty list means "decide
        again from stored vectors, no decoding" (see :meth:`needs_decision`)."""
        todo = []
        for p in files:
            try:
                st = os.stat(p)
            except OSError as exc:
                report.failed.append((os.fsdecode(p), f"cannot stat: {exc.strerror}"))
                continue
            stale = self.stale_models(p, st, force)
            if stale or self.needs_decision(p):
                todo.append((p, st, stale))
            else:
                report.skipped += 1
        return todo

    def run(self, todo: Iterable[tuple[Path, os.stat_result] | tuple[Path, os.stat_result, list[str]]],
            report: ScanReport, progress: Callable[[int, int, Path], None] | None = None,
            should_stop: Callable[[], bool] | None = None, total: int | None = None) -> None:
        """Analyse ``todo`` (consumed lazily, so the daemon can keep feeding it) and store the results.

        ``should_stop`` is checked after each file: the file in hand is finished and committed, the rest
        is left for next time.
        """
        stats: dict[str, deque[os.stat_result]] = defaultdict(deque)
        redecide: list[tuple[Path, os.stat_result]] = []

        def items() -> Iterator[tuple[Path, list[str] | None]]:
            for entry in todo:
                p, st = entry[0], entry[1]
                wanted = list(entry[2]) if len(entry) > 2 else (self.stale_models(p, st, False) or list(self.cards))
                if not wanted:
                    redecide.append((p, st))
                    continue
                stats[os.fsdecode(p)].append(st)
                yield p, wanted

        if total is None and isinstance(todo, list):
            total = len(todo)
        last_commit = time.monotonic()
        done = 0
        t0 = time.monotonic()
        results = self.engine.analyse(items())

        def finished(outcome: FileOutcome) -> bool:
            nonlocal done, last_commit
            done += 1
            report.outcomes.append(outcome)
            if self.on_result is not None:
                self.on_result(outcome)
            if progress:
                progress(done, total or done, outcome.path)
            if self.store is not None and not self.pretend and (
                    self.store.pending >= self.cfg.commit_every
                    or time.monotonic() - last_commit >= self.cfg.commit_seconds):
                self.store.commit()
                last_commit = time.monotonic()
            return should_stop is not None and should_stop()

        try:
            stopped = False
            for res in results:
                queued = stats.get(os.fsdecode(res.path))
                st = queued.popleft() if queued else os.stat(res.path)  # a path queued twice: results in order
                if queued is not None and not queued:
                    stats.pop(os.fsdecode(res.path), None)
                if finished(self._handle(res, st, report)):
                    stopped = True
                    break
            for p, st in ([] if stopped else redecide):
                if finished(self.redecide(p, st, report)):
                    break
        finally:
            results.close()  # stops decoding the rest
            if self.store is not None and not self.pretend:
                self.store.commit()
            report.seconds += time.monotonic() - t0

    def track_id(self, path: Path) -> str:
        """The track's stable id: kept from any existing record of the file (renames and moves carry it,
        re-analysis keeps it), else a new random one."""
        assert self.store is not None
        return new_track_id(self.store.get(path, mid) for mid in self.cards)

    def track_vectors(self, path: Path, fresh: TrackResult | None = None) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
        """Every model's song-level (analyser, tags, embedding) for the track: fresh from this pass, else
        from the database."""
        fresh_ids = set(fresh.models) if fresh is not None else set()
        out = stored_vectors(self.store, path, {m: c for m, c in self.cards.items() if m not in fresh_ids}) \
            if self.store is not None else {}
        for mid in fresh_ids & set(self.cards):
            assert fresh is not None
            out[mid] = (self.cards[mid].analyser, fresh.models[mid].tags, fresh.models[mid].embedding)
        return {mid: out[mid] for mid in self.cards if mid in out}  # in the set's order, as before

    def decision(self, vectors: dict[str, tuple[str, np.ndarray, np.ndarray]], path: str = "",
                 album: str | None = None) -> Decision:
        return self.decider.decide(vectors, path, album)

    def _handle(self, res: TrackResult | TrackFailure, st: os.stat_result, report: ScanReport) -> FileOutcome:
        now = now_iso()
        base = {"path": res.path, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "analysed_at": now}
        if isinstance(res, TrackFailure):
            report.failed.append((os.fsdecode(res.path), res.reason))
            if self.store is not None and not self.pretend:
                for mid, card in self.cards.items():
                    rec = self.store.get(res.path, mid)
                    if rec is None or needs_analysis(rec, st, card.analyser, False) or rec.get("status") != Status.OK:
                        self.store.put({**base, "model": mid, "analyser": card.analyser, "status": Status.FAILED.value,
                                        "reason": res.reason})
            return FileOutcome(res.path, "failed", res.reason)
        report.analysed += 1
        report.audio_seconds += res.duration
        outcome, track, stale = self._decide_and_write(res.path, st, self.track_vectors(res.path, res), report,
                                                       now=now)
        if self.store is not None and not self.pretend and not stale:
            # Kept small on purpose: every field of every record is parsed when the database opens.
            track.update(fingerprint=res.fingerprint, duration=round(res.duration, 2), format=res.info.format)
            base.update(size=track.pop("size"), mtime_ns=track.pop("mtime_ns"))
            for mid, mres in res.models.items():
                record = {**base, **track, "model": mid, "analyser": self.cards[mid].analyser, "status": Status.OK.value,
                          "windows": mres.n_windows}
                self.store.put(record, mres.tags, mres.embedding)
            for mid in self.cards:
                if mid not in res.models:  # analysed earlier: keep its vectors, refresh what the file looks like now
                    self.store.update(res.path, mid, {**track, "size": base["size"], "mtime_ns": base["mtime_ns"]})
        return outcome

    def redecide(self, path: Path, st: os.stat_result, report: ScanReport) -> FileOutcome:
        """Decide and write again from the stored vectors, without decoding (the write still verifies the audio)."""
        report.redecided += 1
        outcome, track, stale = self._decide_and_write(path, st, self.track_vectors(path), report, now=now_iso())
        if self.store is not None and not self.pretend and not stale:
            for mid in self.cards:
                self.store.update(path, mid, track)
        return outcome

    def _decide_and_write(self, path: Path, st: os.stat_result, vectors: dict[str, tuple[str, np.ndarray, np.ndarray]],
                          report: ScanReport, *, now: str) -> tuple[FileOutcome, dict, bool]:
        """Decide every field, read what the file holds, write the change; returns (outcome, the record
        fields that describe the file now, whether the file changed under us)."""
        track: dict = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "heads": self.head_analysers}
        written: dict[str, list[str]] = {}
        write_error = ""
        stale = False  # the file changed under us: this analysis describes audio that is gone
        try:
            current = read_fields(path, id3_version=self.cfg.id3_version, v23_sep=self.cfg.id3v23_separator,
                                  names=(*all_tags(), *INFO_FIELDS))
            track.update({name.lower(): current[name][0] for name in INFO_FIELDS if current.get(name)})
            track["user"] = user_values(current)
            track["locked"] = sorted(locked_fields(current))
        except TagWriteError as exc:  # tags unreadable (e.g. WMA): analysis still counts, nothing is written
            current = None
            write_error = exc.reason
        decision = self.decision(vectors, path_key(path), track.get("album"))
        self.decider.learn(path_key(path), track.get("album"), track.get("user", {}))
        outcome = FileOutcome(path, "ok", decision=decision)
        if current is None and self.write:
            report.write_failed.append((os.fsdecode(path), write_error))
            outcome.write_error = write_error
        if self.write and current is not None:
            try:
                changes = plan_changes(current, decision.selection(), self.cfg, analyser=self.analysers,
                                       scores=decision.scores(), now=now)
                outcome.changes = changes
                if changes and not self.pretend:
                    new_st = write_changes(path, changes, expect=(st.st_size, st.st_mtime_ns), roots=self.roots,
                                           id3_version=self.cfg.id3_version, v23_sep=self.cfg.id3v23_separator)
                    track.update(size=new_st.st_size, mtime_ns=new_st.st_mtime_ns)
                    report.written += 1
                written = {c.field: c.after for c in changes if c.field not in PROVENANCE}
            except TagWriteError as exc:
                write_error = exc.reason
                stale = exc.file_changed
                report.write_failed.append((os.fsdecode(path), exc.reason))
                outcome.write_error = exc.reason
        if stale:
            log.info("%s changed while it was analysed: analysis dropped, the next scan redoes it", os.fsdecode(path))
        if written:
            track["written"] = written
        if self.write:
            track["write_error"] = write_error or None
        # False only when writing was off (--no-write): a later writing scan then applies the decision. A write
        # that failed is not retried until the file changes (as before), so unwritable files never loop.
        track["applied"] = bool(self.write and not self.pretend)
        track["decided"] = {name: fd.written for name, fd in decision.fields.items() if fd.written}
        if self.store is not None:
            track["track_id"] = self.track_id(path)
        return outcome, track, stale


def scan(roots: list[Path], cfg: Config, models: Model | list[Model], store: Store | None, *, force: bool = False,
         pretend: bool = False, progress: Callable[[int, int, Path], None] | None = None) -> ScanReport:
    report = ScanReport()
    leftovers: list[Path] = []
    unreadable: list[tuple[str, str]] = []
    files, missing = discover(roots, cfg.extensions, leftovers, unreadable)
    report.failed.extend(unreadable)
    if store is not None and not pretend:  # we hold the database lock: no other tagger is writing these
        for tmp in leftovers:
            log.info("removing temp copy left by an interrupted tag write: %s", tmp)
            tmp.unlink(missing_ok=True)
    report.missing_roots = [os.fsdecode(m) for m in missing]
    scanner = Scanner(cfg, models, store, pretend=pretend, roots=[Path(os.path.abspath(r)) for r in roots])
    scanner.carry_moves([r for r in roots if Path(r).is_dir()], files, report)
    scanner.prune([r for r in roots if Path(r).is_dir()], files, report, [u for u, _ in unreadable])
    todo = scanner.select(files, force, report)
    try:
        scanner.run(todo, report, progress)
    finally:
        scanner.engine.close()  # decoder processes, when the configuration asks for them
    return report

