"""Taggrams: a model's labels over time, from its per-window outputs.

The database keeps song-level vectors only (per-window outputs of a whole library would be hundreds of times
larger), so a taggram is computed when a page asks for it: the file is decoded and every window analysed by
the lookup model, one track at a time (memory stays that of one scan), and the answer is kept in a small
in-memory cache keyed by the file's size and mtime and the model's version.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from tagger.analysis.engine import Engine, TrackFailure
from tagger.errors import DecodeError
from tagger.models.session import Model

CACHED = 32
LABELS_SHOWN = 12


class Taggrams:
    def __init__(self, model: Model) -> None:
        self.model = model
        self.lock = threading.Lock()  # one analysis at a time: bounded memory and CPU for a page server
        self.cache: OrderedDict[tuple, dict[str, Any]] = OrderedDict()

    def get(self, path: Path) -> dict[str, Any]:
        """{labels, hop_s, window_s, values (labels x windows, 0-1, 3 decimals)}; DecodeError names the file."""
        try:
            st = os.stat(path)
        except OSError as exc:
            raise DecodeError(path, f"cannot read the file: {exc.strerror}") from exc
        key = (os.fsdecode(path), st.st_size, st.st_mtime_ns, self.model.card.analyser)
        with self.lock:
            hit = self.cache.get(key)
            if hit is not None:
                self.cache.move_to_end(key)
                return hit
            (res,) = list(Engine(self.model, max_batch=4, decode_workers=1, keep_window_tags=True,
                                 max_windows=0).analyse([path]))
            if isinstance(res, TrackFailure):
                raise DecodeError(path, res.reason)
            wt = np.asarray(res.window_tags, np.float32)  # windows x labels
            card = self.model.card
            top = np.argsort(-wt.mean(axis=0), kind="stable")[:LABELS_SHOWN]
            out = {"model": card.analyser, "labels": [card.labels[i] for i in top.tolist()],
                   "hop_s": card.hop / card.sample_rate, "window_s": card.window / card.sample_rate,
                   "values": np.round(wt[:, top].T.astype(np.float64), 3).tolist()}
            self.cache[key] = out
            while len(self.cache) > CACHED:
                self.cache.popitem(last=False)
            return out
