"""The user's corrections applied: a value set or cleared, the field locked or unlocked, the file rewritten and
the record updated. The inbox (:mod:`tagger.library.inbox`) only carries requests to the process that holds
the writer lock."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tagger.config import Config
from tagger.errors import StoreLockedError, TagWriteError
from tagger.fsutil import path_key
from tagger.library.inbox import Correction, Inbox
from tagger.library.store import Store
from tagger.tagging.plan import all_tags, locked_fields, plan_correction, user_values
from tagger.tagging.writer import read_fields, write_changes

log = logging.getLogger(__name__)


def apply_correction(store: Store, cfg: Config, c: Correction) -> dict[str, Any]:
    """Write one correction into its file (the verified safe write) and into every record of the file.

    The file's size and mtime are carried into a record only when the record described the file as it was
    just before: a file that changed since its analysis keeps its stale record, so the next scan analyses
    it again (and finds the lock in the file).
    """
    path = Path(c.path)
    records = store.for_path(path)
    if not records:
        raise TagWriteError(path, "not in the database (scan it first)")
    try:
        st = os.stat(path)
    except OSError as exc:
        raise TagWriteError(path, f"cannot read the file: {exc.strerror}") from exc
    current = read_fields(path, id3_version=cfg.id3_version, v23_sep=cfg.id3v23_separator, names=all_tags())
    changes = plan_correction(current, c.field, c.values)
    new_st = write_changes(path, changes, expect=(st.st_size, st.st_mtime_ns), id3_version=cfg.id3_version,
                           v23_sep=cfg.id3v23_separator)
    after = dict(current)
    after.update({ch.field: list(ch.after) for ch in changes})
    fields: dict[str, Any] = {"user": user_values(after), "locked": sorted(locked_fields(after))}
    for rec in records:
        update = dict(fields)
        if (rec.get("size"), rec.get("mtime_ns")) == (st.st_size, st.st_mtime_ns):
            update.update(size=new_st.st_size, mtime_ns=new_st.st_mtime_ns)
        store.update(path, rec["model"], update)
    store.commit()
    name = c.field.upper()
    log.info("%s: %s %s", os.fsdecode(path), c.field,
             "unlocked" if c.values is None else f"set to {after.get(name, [])} and locked")
    return {"ok": True, "path": os.fsdecode(path), "field": c.field, "values": after.get(name, []),
            "locked": fields["locked"], "changed": bool(changes)}


def apply_now(cfg: Config) -> bool:
    """Apply waiting requests if no other process holds the writer lock; False when one does (it will)."""
    inbox = Inbox(cfg.database)
    if not inbox.pending():
        return True
    try:
        store = Store(cfg.database, writer=True)
    except StoreLockedError:
        return False
    try:
        drain(inbox, store, cfg)
    finally:
        store.close()
    return True


def correct_files(cfg: Config, store: Store, paths: Sequence[Path], field: str,
                  values: Sequence[str] | None) -> list[dict[str, Any]]:
    """`tagger set`: the same correction the page makes, applied directly by a process holding the lock."""
    out = []
    for p in paths:
        try:
            out.append(apply_correction(store, cfg, Correction(path_key(p), field,
                                                               None if values is None else tuple(values))))
        except TagWriteError as exc:
            out.append({"ok": False, "path": os.fsdecode(p), "error": exc.reason})
        except ValueError as exc:  # a value the plan refuses: this file is left as it is
            out.append({"ok": False, "path": os.fsdecode(p), "error": str(exc)})
    return out


def drain(inbox: Inbox, store: Store, cfg: Config) -> int:
    """Apply every request waiting in ``inbox`` to ``store`` (the caller holds the writer lock)."""
    return inbox.drain(lambda c: apply_correction(store, cfg, c))
