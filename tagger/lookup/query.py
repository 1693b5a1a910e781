"""The one query layer: what the command line, the JSON API and the web pages ask of the library.

A track's view (every model's labels and the decision a scan would make), the bounds of every count a
request may ask for, and tag validation (:func:`tagger.lookup.similar.resolve_tags`) live here once, so
`tagger show`, ``/api/v1/tracks/{id}/view`` and the track page cannot disagree. Drivers only format.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tagger.decision.decide import Decision
from tagger.fsutil import path_key
from tagger.library.records import Status
from tagger.library.store import Store
from tagger.lookup.similar import Library, TagQuery, is_duplicate, resolve_tags
from tagger.models.card import Card, CardError
from tagger.models.heads import Vectors

__all__ = ["LIMITS", "ModelView", "TagQuery", "TrackView", "bounded", "find_tracks", "resolve_tags", "similarity",
           "sonic_path", "stored_cards", "track_view"]

# Every count a request may ask for, with its bounds: similar tracks (n), search results (limit), playlist
# length (n). The API, the web pages and the command line all check against these.
LIMITS: dict[str, tuple[int, int]] = {"n": (1, 500), "limit": (1, 500)}


def bounded(name: str, raw: str | int | None, default: int) -> int:
    """``raw`` as an integer within ``LIMITS[name]`` (``default`` when absent); ValueError naming ``name``
    otherwise, never a silent clamp."""
    lo, hi = LIMITS[name]
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


@dataclass
class ModelView:
    """One model's record of a track, with its labels best first when its vectors are there."""

    record: dict[str, Any]  # the stored record without its vector row number
    labels: list[tuple[str, float]] | None = None  # None: failed, or no card to name the scores
    scores: list[float] | None = None  # the raw scores when the card cannot name them
    problem: str = ""

    @property
    def model(self) -> str:
        return str(self.record["model"])

    @property
    def analyser(self) -> str:
        return str(self.record.get("analyser"))


@dataclass
class TrackView:
    path: str
    album: str | None
    models: list[ModelView] = field(default_factory=list)
    vectors: dict[str, tuple[str, np.ndarray, np.ndarray]] = field(default_factory=dict)
    decision: dict[str, dict[str, Any]] = field(default_factory=dict)  # field -> {values, reason}


def stored_cards(store: Store) -> dict[str, Card]:
    """The model cards the database keeps, by model id (a card that no longer parses is left out)."""
    out = {}
    for mid in store.models():
        text = store.card_json(mid)
        if text:
            try:
                out[mid] = Card.from_json(text)
            except CardError:
                continue
    return out


def track_view(store: Store, path: str, cards: Mapping[str, Card],
               decide: Callable[[Vectors, str, str | None], Decision] | None) -> TrackView | None:
    """What the database holds for the file at ``path`` (None: nothing) and, with ``decide``, the decision a
    scan would make from it."""
    records = store.for_path(path)
    if not records:
        return None
    view = TrackView(records[0]["path"], records[0].get("album"))
    for rec in records:
        mv = ModelView({k: v for k, v in rec.items() if k != "slot"})
        if rec.get("status") == Status.OK and not store.has_vectors(rec):
            mv.problem = "its vectors are missing from the database; `tagger scan` re-analyses it"
        elif rec.get("status") == Status.OK:
            tags, emb = store.vectors(rec)
            card = cards.get(rec["model"])
            if card is not None and len(card.labels) == len(tags):
                view.vectors[rec["model"]] = (str(rec.get("analyser")), tags, emb)
                order = np.argsort(-tags, kind="stable")
                mv.labels = [(card.labels[i], float(tags[i])) for i in order.tolist()]
            else:
                mv.scores = [float(x) for x in tags]
        view.models.append(mv)
    if decide is not None and view.vectors:
        decision = decide(view.vectors, view.path, view.album)
        view.decision = {name: {"values": fd.written, "reason": fd.reason} for name, fd in decision.fields.items()}
    return view


# -- look-ups by what other programs know of a track: its path, MusicBrainz id, artist and title ------------

def _fold(text: Any) -> str:
    return " ".join(str(text or "").casefold().split())


def find_tracks(lib: Library, *, path: str | None = None, mbid: str | None = None, artist: str | None = None,
                title: str | None = None, album: str | None = None, duration: float | None = None) -> list[dict]:
    """The library's records matching, in this order of trust: the file path, the MusicBrainz recording id,
    artist and title (case and spacing ignored; album and duration, when given, break ties)."""
    if path:
        rec = lib.by_path.get(path_key(path))
        return [rec] if rec is not None else []
    if mbid:
        found = [r for r in lib.records if str(r.get("musicbrainz_trackid") or "").lower() == mbid.strip().lower()]
        if found:
            return found
    if artist and title:
        found = [r for r in lib.records if _fold(r.get("artist")) == _fold(artist) and _fold(r.get("title")) == _fold(title)]
        if album and len(found) > 1:
            found = [r for r in found if _fold(r.get("album")) == _fold(album)] or found
        if duration and len(found) > 1:
            found.sort(key=lambda r: abs(float(r.get("duration") or 0.0) - float(duration)))
        return found
    return []


def similarity(cosine: float) -> float:
    """Cosine of two unit embeddings (-1..1) as OpenSubsonic's similarity: 1.0 the same, 0.0 the most different."""
    return round(min(1.0, max(0.0, (1.0 + float(cosine)) / 2.0)), 6)


def sonic_path(lib: Library, start: dict, end: dict, count: int) -> list[tuple[dict, float]]:
    """``count`` tracks from ``start`` to ``end`` (both included), easing from one sound to the other: each
    step is the unused track nearest to the point that far along the line between the two embeddings; no
    copy of a recording twice. Each comes with its similarity to the track before it."""
    a, b = lib.embedding_of(start), lib.embedding_of(end)
    chosen = [start]
    used = {start["path"], end["path"]}
    for k in range(1, max(count - 1, 1)):
        t = k / (count - 1)
        target = (1 - t) * a + t * b
        target = target / max(float(np.linalg.norm(target)), 1e-12)
        step = next((h.record for h in lib.similar(target, None, 8 + len(used))
                     if h.record["path"] not in used
                     and not any(is_duplicate(c, h.record, float(lib.embedding_of(c) @ lib.embedding_of(h.record)))
                                 for c in chosen)), None)
        if step is None:
            break
        chosen.append(step)
        used.add(step["path"])
    chosen.append(end)
    out = [(chosen[0], 1.0)]
    for prev, cur in zip(chosen, chosen[1:]):
        out.append((cur, similarity(float(lib.embedding_of(prev) @ lib.embedding_of(cur)))))
    return out
