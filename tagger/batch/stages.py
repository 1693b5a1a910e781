"""The batch job's two stages as plain functions (no Ray here): a CPU stage that decodes one track and cuts
every model's windows into fixed-shape arrays, and an inference stage that runs the model set over those
arrays and aggregates each model's song-level outputs.

Both are built from the engine's own pieces (``decode_windows`` and ``Accumulator``), so a track analysed
here gets the same windows, the same inference and the same aggregation as in ``tagger scan``; results agree
to float rounding (checked to 1e-5 in the tests). Ray (``job.py``) only moves rows between the stages.

Windows travel as float32 by default. float16 halves the object store's traffic but moves song-level tags by
up to 0.009 on the shared clips (the log-mel front ends amplify the rounding of quiet passages), which is
beyond the 1e-5 agreement with a scan, so it is an option (``--window-dtype float16``), not the default.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from tagger.analysis.cut import decode_windows
from tagger.analysis.engine import batch_sizes
from tagger.analysis.results import Accumulator
from tagger.errors import TaggerError
from tagger.fsutil import path_key
from tagger.models.card import Card
from tagger.models.session import Model

WINDOW_DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass(frozen=True)
class Item:
    """One track to analyse: a stable id and a local path or URI."""

    id: str
    path: str


def default_id(path: str) -> str:
    """A stable id from the path (the same path always gets the same id, so reruns find their rows)."""
    return hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def localize(path: str) -> tuple[Path, Path | None]:
    """(a local file to decode, a temp folder to remove afterwards or None). Plain paths and file:// URIs are
    read in place; other URIs (s3://, gs://, hdfs://...) are copied through pyarrow's filesystems, which
    need their credentials in the environment as usual."""
    scheme = urlsplit(path).scheme
    if not scheme or len(scheme) == 1:  # a plain path (or a Windows drive letter)
        return Path(path), None
    if scheme == "file":
        return Path(urlsplit(path).path), None
    from pyarrow import fs

    filesystem, inner = fs.FileSystem.from_uri(path)
    tmp = Path(tempfile.mkdtemp(prefix="tagger-batch-"))
    local = tmp / (Path(inner).name or "audio")
    with filesystem.open_input_stream(inner) as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return local, tmp


def prepare(item: Item, cards: Sequence[Card], max_windows: int, dtype: str = "float32") -> dict[str, Any]:
    """Decode one track; its metadata and, per model i, ``w{i}``: an (n, window) array. Never raises: a bad
    file becomes a row with status ``failed`` and the reason."""
    row: dict[str, Any] = {"id": item.id, "path": item.path, "status": "ok", "reason": "", "duration": 0.0,
                           "fingerprint": "", "size": -1, "mtime_ns": -1, "format": ""}
    windows: dict[int, list[np.ndarray]] = {i: [] for i in range(len(cards))}
    tmp = None
    try:
        local, tmp = localize(item.path)
        if tmp is None:
            st = os.stat(local)
            row.update(path=path_key(local), size=st.st_size, mtime_ns=st.st_mtime_ns)
        d = decode_windows(local, cards, range(len(cards)), max_windows, lambda i, w: windows[i].append(w))
        row.update(duration=round(d.duration, 2), fingerprint=d.fingerprint, format=d.info.format)
    except TaggerError as exc:
        row.update(status="failed", reason=exc.reason)
    except OSError as exc:  # missing, unreadable, or a URI that cannot be fetched
        row.update(status="failed", reason=f"cannot read: {exc.strerror or exc}")
    except Exception as exc:  # anything else is still this file's failure, never the job's
        row.update(status="failed", reason=f"unexpected error while decoding: {type(exc).__name__}: {exc}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    np_dtype = WINDOW_DTYPES[dtype]
    for i, card in enumerate(cards):
        got = windows[i] if row["status"] == "ok" else []
        row[f"w{i}"] = np.stack(got).astype(np_dtype, copy=False) if got else np.zeros((0, card.window), np_dtype)
    return row


def infer(models: Sequence[Model], row: dict[str, Any], max_batch: int = 4) -> list[dict[str, Any]]:
    """One result row per model: song-level tags (the card's main label output), every label output by name
    (``outputs``: a multi-output card's genre and mood heads each), and the embedding; or the reason it failed."""
    meta = {k: row[k] for k in ("id", "path", "duration", "fingerprint", "size", "mtime_ns", "format")}
    out = []
    for i, (model, per_call) in enumerate(zip(models, batch_sizes(models, max_batch))):
        card = model.card
        base = {**meta, "model": card.id, "analyser": card.analyser, "windows": 0}
        if row["status"] != "ok":
            out.append({**base, "status": "failed", "reason": row["reason"], "tags": [], "embedding": [],
                        "outputs": []})
            continue
        w = np.asarray(row[f"w{i}"], dtype=np.float32)
        acc = Accumulator()
        try:
            for start in range(0, len(w), per_call):
                outs = model.run_all(np.ascontiguousarray(w[start:start + per_call]))
                for r in range(len(outs[card.tags.name])):
                    acc.add(outs, r, card.tags.name)
            if acc.done == 0:
                raise ValueError("no windows")
            res = acc.result(card)
        except Exception as exc:  # inference failure: this track and model fail, the job goes on
            out.append({**base, "status": "failed", "reason": f"inference failed: {type(exc).__name__}: {exc}",
                        "tags": [], "embedding": [], "outputs": []})
            continue
        heads = [(o.name, res.outputs[o.name].astype(np.float32).tolist()) for o in card.outputs
                 if o.kind != "embedding" and o.name in res.outputs]
        out.append({**base, "status": "ok", "reason": "", "windows": res.n_windows, "outputs": heads,
                    "tags": res.tags.astype(np.float32).tolist(), "embedding": res.embedding.astype(np.float32).tolist()})
    return out
