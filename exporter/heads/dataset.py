"""The training set for one field, read from the store: no audio is decoded.

Features per track are the stored song-level rows of every model in the set, in set order (each row is
the model's tag probabilities followed by its embedding), so a head reads exactly what a scan already
keeps. Targets are the user's own values of the field (``user`` in the records: what the file held
minus what the tool wrote). Spellings that differ only in case or spacing are one value; values carried
by fewer than ``min_tracks`` tracks are left out (and listed), because no honest threshold can be set
for them.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from tagger.decision.context import normalise
from tagger.library.store import Store
from tagger.models.card import Card, Source


@dataclass
class Dataset:
    field: str
    sources: tuple[Source, ...]
    X: np.ndarray  # (labelled tracks, features)
    Y: np.ndarray  # (labelled tracks, labels): each track's target mass, summing to 1
    labels: list[str]
    records: list[dict]  # one record per row (the first model's)
    unlabelled: int  # analysed tracks without a usable value: the ones the head will tag
    left_out: dict[str, int] = field(default_factory=dict)  # rare value -> tracks

    @property
    def primary(self) -> np.ndarray:
        return self.Y.argmax(axis=1)


def sources_of(cards: list[Card]) -> tuple[Source, ...]:
    out = []
    for card in cards:
        out.append(Source(card.id, card.version, "tags", len(card.labels)))
        if card.embedding_dim:
            out.append(Source(card.id, card.version, "embedding", card.embedding_dim))
    return tuple(out)


def collect(store: Store, cards: list[Card], field_name: str, min_tracks: int = 5) -> Dataset:
    """Every track analysed ok by every model of the set at its current version, with its user values."""
    per_model: list[dict[str, int]] = []
    first: dict[str, dict] = {}
    for i, card in enumerate(cards):
        slots, recs = store.slots(card.id)
        ok = {r["path"]: int(s) for s, r in zip(slots, recs)
              if r.get("status") == "ok" and r.get("analyser") == card.analyser}
        per_model.append(ok)
        if i == 0:
            first = {r["path"]: r for r in recs if r["path"] in ok}
    paths = sorted(set.intersection(*(set(m) for m in per_model))) if per_model else []
    spelled: dict[str, Counter] = {}
    values_of: dict[str, list[str]] = {}
    for p in paths:
        own = (first[p].get("user") or {}).get(field_name) or []
        keys = list(dict.fromkeys(normalise(v) for v in own if v.strip()))
        values_of[p] = keys
        for v in own:
            spelled.setdefault(normalise(v), Counter())[" ".join(v.split())] += 1
    counts = Counter(k for keys in values_of.values() for k in keys)
    kept = sorted((k for k, n in counts.items() if n >= min_tracks), key=lambda k: (-counts[k], k))
    left_out = {spelled[k].most_common(1)[0][0]: n for k, n in counts.items() if n < min_tracks}
    index = {k: j for j, k in enumerate(kept)}
    rows = [p for p in paths if any(k in index for k in values_of[p])]
    Y = np.zeros((len(rows), len(kept)), np.float32)
    for i, p in enumerate(rows):
        ks = [index[k] for k in values_of[p] if k in index]
        Y[i, ks] = 1.0 / len(ks)
    blocks = []
    for card, ok in zip(cards, per_model):
        vm = store.matrix(card.id)
        blocks.append(vm.rows(np.array([ok[p] for p in rows], dtype=np.int64)) if rows
                      else np.zeros((0, vm.width), np.float32))
    X = np.concatenate(blocks, axis=1).astype(np.float32) if blocks else np.zeros((0, 0), np.float32)
    labels = [spelled[k].most_common(1)[0][0] for k in kept]
    return Dataset(field_name, sources_of(cards), X, Y, labels, [first[p] for p in rows],
                   unlabelled=len(paths) - len(rows), left_out=left_out)
