"""Trained heads: the user's own genre/mood models (ONNX files beside the database), found, loaded and
removed. The decision that uses them lives in :mod:`tagger.decision.track`."""
from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tagger.errors import ModelError
from tagger.models.card import Card

log = logging.getLogger(__name__)

# model id -> (analyser "id@version", song-level tags, song-level embedding)
Vectors = Mapping[str, tuple[str, np.ndarray, np.ndarray]]


HEADS_DIR = "heads"


def heads_dir(database: Path) -> Path:
    return Path(database) / HEADS_DIR


def remove_heads(database: Path, fields: tuple[str, ...] | None = None) -> list[Path]:
    """Delete trained heads (all, or those of ``fields``) and their reports; returns what was removed."""
    folder = heads_dir(database)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.glob("*.onnx")):
        if fields is None or path.stem in fields:
            path.unlink()
            removed.append(path)
            report = folder / f"{path.stem}-report"
            if report.is_dir():
                shutil.rmtree(report)
    return removed


class Head:
    """One trained head: its card and a small CPU session (a head is a single matrix product)."""

    def __init__(self, path: Path) -> None:
        from tagger.models.session import Model

        self.path = Path(path)
        self.model = Model(self.path, device="cpu", threads=1)
        self.card: Card = self.model.card
        if not self.card.is_head:
            raise ModelError(path, "not a head (its card reads no stored vectors); audio models go in `models:`")

    @property
    def field(self) -> str:
        return self.card.decides

    @property
    def analyser(self) -> str:
        return self.card.analyser

    def missing_sources(self, analysers: Mapping[str, str]) -> list[str]:
        """The input blocks the model set cannot provide (``analysers``: model id -> id@version in the set)."""
        return [s.analyser for s in self.card.reads if analysers.get(s.model) != s.analyser]

    def features(self, vectors: Vectors) -> np.ndarray | None:
        """The head's input row for one track, or None when a block is missing or from another model version."""
        parts = []
        for src in self.card.reads:
            got = vectors.get(src.model)
            if got is None or got[0] != src.analyser:
                return None
            block = got[1] if src.part == "tags" else got[2]
            if len(block) != src.dim:
                return None
            parts.append(np.asarray(block, np.float32))
        return np.concatenate(parts)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Label scores (N, labels) for feature rows (N, input width)."""
        out = self.model.run_all(np.atleast_2d(rows).astype(np.float32))
        return out[self.card.tags.name]


def load_heads(database: Path | None, analysers: Mapping[str, str]) -> list[Head]:
    """The library's trained heads that the model set can feed, one per field (sorted by file name).

    ``analysers``: model id -> id@version of the configured set. A head that cannot be fed, cannot be
    loaded, or is a second head for a field is skipped with a log line that names the file and the reason.
    """
    if database is None:
        return []
    folder = heads_dir(database)
    if not folder.is_dir():
        return []
    heads: list[Head] = []
    seen: set[str] = set()
    for path in sorted(folder.glob("*.onnx")):
        try:
            head = Head(path)
        except ModelError as exc:  # a damaged head must not stop every scan (or the daemon): its field falls back
            log.error("%s; not used: the model set decides its field (run `tagger train` again, or "
                      "`tagger train --remove`)", exc)
            continue
        missing = head.missing_sources(analysers)
        if missing:
            log.warning("head %s (field %s) reads %s, which the model set does not provide; not used "
                        "(run `tagger train` again)", path, head.field, ", ".join(missing))
            continue
        if head.field in seen:
            log.error("%s: a second head for field %r; not used (remove one from %s)", path, head.field, folder)
            continue
        seen.add(head.field)
        heads.append(head)
    return heads
