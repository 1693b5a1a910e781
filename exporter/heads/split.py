"""Folds for honest evaluation: tracks of one album (or artist, or folder) never sit on both sides.

A head that saw half an album in training recognises the album's production rather than the genre, so
held-out figures from a track-level split flatter it. Folds here are made of whole groups. A label
whose tracks all come from one group cannot be evaluated that way (holding its group out removes the
label from training); for those labels the caller falls back to a track-level split and the report
says so.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

import numpy as np


def group_key(record: dict) -> str:
    """The unit that must not be split: the album (with its artist), else the artist, else the folder."""
    album = str(record.get("album") or "").strip().casefold()
    artist = str(record.get("artist") or "").strip().casefold()
    if album:
        return f"album:{album}"
    if artist:
        return f"artist:{artist}"
    path = str(record.get("path", ""))
    return f"folder:{path.rsplit('/', 1)[0]}"


def stable_hash(text: str, seed: int) -> int:
    """A seeded 64-bit hash that is the same in every process (Python's hash() is salted per run)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:8], "big")


def group_folds(groups: Sequence[str], k: int, seed: int = 0) -> np.ndarray:
    """A fold number per row; every row of a group gets the same fold. Groups are dealt largest first to
    the currently smallest fold (ties broken by a seeded hash), so folds have similar sizes."""
    sizes = Counter(groups)
    order = sorted(sizes, key=lambda g: (-sizes[g], stable_hash(g, seed)))
    load = [0] * k
    fold_of: dict[str, int] = {}
    for g in order:
        f = min(range(k), key=lambda i: (load[i], i))
        fold_of[g] = f
        load[f] += sizes[g]
    return np.array([fold_of[g] for g in groups], dtype=np.int64)


def track_folds(primary: Sequence[int], k: int, seed: int = 0) -> np.ndarray:
    """A fold number per row, stratified by the primary label: each label's rows are dealt round-robin."""
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(primary), dtype=np.int64)
    primary = np.asarray(primary)
    for label in np.unique(primary):
        rows = np.flatnonzero(primary == label)
        rng.shuffle(rows)
        start = int(rng.integers(k))
        folds[rows] = (np.arange(len(rows)) + start) % k
    return folds


def groups_per_label(groups: Sequence[str], targets: np.ndarray) -> list[int]:
    """How many distinct groups carry each label (``targets``: rows x labels, > 0 where carried)."""
    groups = np.asarray(groups)
    return [len(set(groups[targets[:, j] > 0])) for j in range(targets.shape[1])]
