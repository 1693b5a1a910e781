"""A way back from the cluster: batch results into a library database.

Each ok row becomes the same record and vectors a scan would have stored (model card described, track id kept,
size and mtime as seen by the job), marked as not yet applied, so `tagger serve` can show the catalogue at once
and the next writing `tagger scan` of the files decides and writes their tags through the safe write without
decoding them again (a file whose size or mtime differs from the job's is analysed afresh). Failed rows become
failed records with their reasons.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagger.batch.results import latest_rows, read_cards
from tagger.library.records import Status, new_track_id
from tagger.library.store import Store
from tagger.pipeline.scanner import now_iso


@dataclass
class ImportReport:
    ok: int = 0
    failed: int = 0
    models: tuple[str, ...] = ()


def import_results(folder: Path, store: Store, progress: Callable[[int], None] | None = None) -> ImportReport:
    cards = read_cards(folder)
    for mid, card in cards.items():
        store.describe(mid, card.to_json())
    report = ImportReport(models=tuple(sorted(cards)))
    now = now_iso()
    ids: dict[str, str] = {}  # path -> track id: every model's row of a file gets the same one
    for n, row in enumerate(latest_rows(folder), start=1):
        track_id = ids.get(row["path"]) or ids.setdefault(
            row["path"], new_track_id(store.get(row["path"], m) for m in store.models()))
        base = {"path": row["path"], "model": row["model"], "analyser": row["analyser"], "size": row["size"],
                "mtime_ns": row["mtime_ns"], "analysed_at": now, "track_id": track_id, "source_id": str(row["id"])}
        if row["status"] == Status.OK:
            store.put({**base, "status": Status.OK.value, "windows": row["windows"], "duration": row["duration"],
                       "fingerprint": row["fingerprint"], "format": row["format"], "applied": False},
                      np.asarray(row["tags"], np.float32), np.asarray(row["embedding"], np.float32))
            report.ok += 1
        else:
            store.put({**base, "status": Status.FAILED.value, "reason": row["reason"]})
            report.failed += 1
        if n % 5000 == 0:
            store.commit()
            if progress:
                progress(n)
    store.commit()
    return report
