"""Keeping the database in step with the folders: moves, deletions and the unmounted-disk rule.

One module for the one-shot scan and the daemon, so their safety rules cannot drift apart:

- a root that holds no audio while the database has records under it looks unmounted or emptied, and
  nothing under it is removed (:func:`looks_unmounted`);
- a file moved or renamed keeps its records (track id, analyses, vectors) when its size and mtime are
  unchanged; moved *and* changed, it is analysed again;
- records go only when their file is really gone (``lexists``), never under a folder that could not be
  listed.

The scan finds moves by matching vanished records with new files (:func:`carry_moves`); the daemon is told
them by the file system (:func:`apply_moves`). Both prune with the same rule.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tagger.fsutil import path_key
from tagger.library.files import holds_audio
from tagger.library.records import RecordStore

log = logging.getLogger(__name__)


@dataclass
class Reconciled:
    """What one reconciling step did to the database."""

    removed: int = 0  # files whose records were dropped
    moved: int = 0  # files whose records followed them to a new path
    kept_roots: list[str] = field(default_factory=list)  # roots that looked unmounted: nothing pruned
    reanalyse: list[str] = field(default_factory=list)  # new paths to analyse (moved and changed, or unknown)


@dataclass(frozen=True)
class Move:
    """A path that moved: ``src`` to ``dest``; a folder moves every record under it."""

    src: str
    dest: str
    is_dir: bool = False


def is_under(path: str, root: Path | str) -> bool:
    return path.startswith(str(root).rstrip(os.sep) + os.sep)


def looks_unmounted(root: Path | str, has_audio: bool, records_under: int) -> bool:
    """The one unmounted-or-emptied rule: records under a root that holds no audio are never removed."""
    if records_under and not has_audio:
        log.warning("%s holds no audio files but the database has %d records under it; it looks unmounted or "
                    "emptied, so none are removed", root, records_under)
        return True
    return False


def _drop_gone(store: RecordStore, paths_models: Iterable[tuple[str, str]], done: Reconciled,
               keep: frozenset[str] = frozenset()) -> None:
    gone: set[str] = set()
    for p, m in paths_models:
        if p not in keep and (p in gone or not os.path.lexists(os.fsencode(p))):
            store.remove(p, m)
            if p not in gone:
                done.removed += 1
            gone.add(p)


def prune(store: RecordStore, roots: Iterable[Path], found: Sequence[Path], unreadable: Iterable[str] = ()) -> Reconciled:
    """Drop records of files that are gone, after a full listing of the roots (``found``)."""
    done = Reconciled()
    present = frozenset(path_key(p) for p in found)
    blind = tuple(path_key(u).rstrip(os.sep) + os.sep for u in unreadable if u)
    for root in roots:
        if not Path(root).is_dir():
            continue
        root_key = path_key(root)
        under = [r for r in store.records() if is_under(r["path"], root_key)]
        if looks_unmounted(root_key, any(is_under(k, root_key) for k in present), len(under)):
            done.kept_roots.append(root_key)
            continue
        _drop_gone(store, ((r["path"], r["model"]) for r in under if not (blind and r["path"].startswith(blind))),
                   done, keep=present)
    return done


def carry_moves(store: RecordStore, model_id: str, roots: Iterable[Path], found: Sequence[Path]) -> Reconciled:
    """Files moved or renamed while nobody watched: a new path whose size and mtime equal those of a record
    whose file is gone takes over that record instead of being analysed again. A move keeps size and
    mtime; an ambiguous match (several candidates) is left alone."""
    done = Reconciled()
    prefixes = tuple(path_key(r).rstrip(os.sep) + os.sep for r in roots)
    records = list(store.records(model_id))
    known = {r["path"] for r in records}
    new = [p for p in found if path_key(p) not in known]
    if not new:
        return done
    present = {path_key(p) for p in found}
    gone: dict[tuple[int | None, int | None], list[str]] = {}
    for r in records:
        if r["path"].startswith(prefixes) and r["path"] not in present and not os.path.lexists(os.fsencode(r["path"])):
            gone.setdefault((r.get("size"), r.get("mtime_ns")), []).append(r["path"])
    if not gone:
        return done
    by_stat: dict[tuple[int | None, int | None], list[Path]] = {}
    for p in new:
        try:
            st = os.stat(p)
        except OSError:
            continue
        by_stat.setdefault((st.st_size, st.st_mtime_ns), []).append(p)
    for key, olds in gone.items():
        news = by_stat.get(key, [])
        if len(olds) == 1 and len(news) == 1:
            store.rename(olds[0], news[0])
            done.moved += 1
            log.info("moved: %s -> %s (analyses kept)", olds[0], os.fsdecode(news[0]))
    return done


def apply_moves(store: RecordStore, model_ids: Sequence[str], roots: Sequence[Path], moves: Iterable[Move]) -> Reconciled:
    """Moves the file system reported: records follow unchanged files; a file moved out of the library is
    forgotten; a moved and changed (or unknown) file is listed in ``reanalyse``."""
    done = Reconciled()
    for op in moves:
        src_prefix = op.src.rstrip(os.sep) + os.sep
        pairs = (sorted({(r["path"], op.dest + r["path"][len(op.src):]) for r in store.records()
                         if r["path"].startswith(src_prefix)}) if op.is_dir else [(op.src, op.dest)])
        inside = any(is_under(op.dest, root) for root in roots)
        for old, new in pairs:
            recs = [r for r in (store.get(old, m) for m in model_ids) if r is not None]
            if not recs:
                if inside and not op.is_dir:
                    done.reanalyse.append(new)
                continue
            if not inside:
                for r in recs:
                    store.remove(old, r["model"])
                done.removed += 1
                continue
            try:
                st = os.stat(new)
            except OSError:
                continue
            if (st.st_size, st.st_mtime_ns) == (recs[0].get("size"), recs[0].get("mtime_ns")):
                store.rename(old, new)
                done.moved += 1
            else:  # moved and changed: analyse the new one
                for r in recs:
                    store.remove(old, r["model"])
                done.reanalyse.append(new)
    return done


def apply_deletes(store: RecordStore, roots: Sequence[Path], extensions: frozenset[str],
                  deleted: Sequence[Move]) -> Reconciled:
    """Deletions the file system reported (``dest`` unused), judged together per root: a root that holds no
    audio any more looks unmounted and keeps its records."""
    done = Reconciled()
    for root in roots:
        mine = [op for op in deleted if is_under(op.src, root)]
        if not mine:
            continue
        under = sum(1 for r in store.records() if is_under(r["path"], root))
        if looks_unmounted(root, holds_audio(root, extensions), under):
            done.kept_roots.append(path_key(root))
            continue
        for op in mine:
            prefix = op.src.rstrip(os.sep) + os.sep
            _drop_gone(store, sorted({(r["path"], r["model"]) for r in store.records()
                                      if r["path"] == op.src or (op.is_dir and r["path"].startswith(prefix))}), done)
    return done
