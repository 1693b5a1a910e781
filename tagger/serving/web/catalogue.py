"""The library page's index: every track once, with its facets, searchable, sortable and paged.

Built from the database records in one pass whenever the database changes (about a second per 100,000
tracks), then every query is array work: a facet is stored as (track row, value code) pairs, so filtering is
one ``isin`` and one scatter per chosen facet, counting is one ``bincount`` per facet, and each sort order is
computed once and then only masked. A first page or a filtered page of 100,000 tracks takes milliseconds
(bench/bench_web.py).

A track's genre and mood are what its file carries as far as the database knows: the user's own values when
it has any (or the field is locked), else what the tool decided. Instruments, vocals and eras come from the
decided descriptors, sorted by the group their labels have in the model cards.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tagger import fields as field_registry


def facet_names() -> tuple[str, ...]:
    """The facets, in page order: the registry's facet fields, the descriptor groups, then model and folder."""
    return (*field_registry.facets(), *field_registry.GROUP_FACETS, "model", "folder")


SORTS = ("title", "artist", "album", "genre", "duration", "added", "path")
PAGE_SIZES = (25, 50, 100, 200)


@dataclass
class Query:
    text: str = ""
    chosen: dict[str, tuple[str, ...]] = field(default_factory=dict)  # facet -> values (any of them)
    sort: str = "artist"
    descending: bool = False
    page: int = 1
    per_page: int = 50

    @classmethod
    def parse(cls, params: Mapping[str, list[str]]) -> "Query":
        """From URL query parameters; ValueError (a 400) names the parameter that is wrong."""
        def one(name: str, default: str) -> str:
            return params.get(name, [default])[0]

        sort = one("sort", "artist")
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
        order = one("order", "asc")
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be asc or desc, got {order!r}")
        try:
            page, per_page = int(one("page", "1")), int(one("per_page", "50"))
        except ValueError as exc:
            raise ValueError("page and per_page must be integers") from exc
        if page < 1 or page > 10**7:
            raise ValueError(f"page must be between 1 and 10000000, got {page}")
        if per_page not in PAGE_SIZES:
            raise ValueError(f"per_page must be one of {PAGE_SIZES}, got {per_page}")
        chosen = {f: tuple(v for v in params[f] if v) for f in facet_names() if params.get(f)}
        return cls(one("q", "").strip()[:200], {f: v for f, v in chosen.items() if v}, sort, order == "desc",
                   page, per_page)


@dataclass
class Result:
    rows: list[dict[str, Any]]
    total: int
    facets: dict[str, list[tuple[str, int]]]  # facet -> (value, count among the matching tracks), most first
    pages: int


def descriptor_groups(cards: Iterable[Any], vocabulary: Mapping[str, Mapping[str, Sequence[str]]]) -> dict[str, str]:
    """Descriptor value -> facet (instrument, vocals, era), from the groups of the labels behind it."""
    groups: dict[str, str] = {}
    for card in cards:
        for out in card.outputs:
            for label, group in out.groups.items():
                groups.setdefault(label.lower(), group)
    facet_of = {"instrument": "instrument", "vocals": "vocals", "era": "era"}
    facets: dict[str, str] = {}
    for value, labels in vocabulary.get("descriptors", {}).items():
        for label in labels:
            g = groups.get(str(label).split(":")[-1].lower())
            if g in facet_of:
                facets[value] = facet_of[g]
                break
    return facets


class _Facet:
    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.names: list[str] = []
        self.rows: list[int] = []
        self.vals: list[int] = []

    def add(self, row: int, value: str) -> None:
        code = self.codes.get(value)
        if code is None:
            code = self.codes[value] = len(self.names)
            self.names.append(value)
        self.rows.append(row)
        self.vals.append(code)

    def freeze(self) -> None:
        self.row_arr = np.asarray(self.rows, np.int64)
        self.val_arr = np.asarray(self.vals, np.int64)
        del self.rows, self.vals


def _folder(path: str, roots: Sequence[str]) -> str:
    for root in roots:
        prefix = root.rstrip(os.sep) + os.sep
        if path.startswith(prefix):
            rest = path[len(prefix):]
            return rest.split(os.sep, 1)[0] if os.sep in rest else "(top)"
    return os.path.basename(os.path.dirname(path)) or "/"


class Catalogue:
    """Tracks of the library (one per file, addressed by the lookup model's record id)."""

    def __init__(self, tracks: list[dict[str, Any]], *, groups: Mapping[str, str] | None = None,
                 roots: Sequence[str] = ()) -> None:
        """``tracks``: one dict per file with at least ``id`` and ``path``, plus any of title, artist, album,
        duration, analysed_at, user, decided, locked and ``models`` (analysers that analysed it)."""
        self.tracks = tracks
        groups = groups or {}
        self.facets = {f: _Facet() for f in facet_names()}
        own = [f.name for f in field_registry.all_fields() if not f.facet and set(f.groups) & set(field_registry.GROUP_FACETS)]
        hay = []
        for i, t in enumerate(tracks):
            user, decided = t.get("user") or {}, t.get("decided") or {}
            locked = {x.lower() for x in t.get("locked") or ()}
            for fld in field_registry.facets():
                vals = user.get(fld) or ([] if fld in locked else decided.get(fld) or [])
                t[f"_{fld}"] = vals
                for v in vals:
                    self.facets[fld].add(i, v)
            for v in (v for fld in own for v in decided.get(fld) or ()):  # descriptors: faceted by their group
                self.facets[groups.get(v, field_registry.GROUP_FACETS[0])].add(i, v)
            for m in t.get("models") or ():  # "musicnn-msd@0.1.0+tagger.1": people choose by name, not version
                self.facets["model"].add(i, str(m).partition("@")[0])
            self.facets["folder"].add(i, _folder(t["path"], roots))
            hay.append(" ".join(str(t.get(k) or "") for k in ("title", "artist", "album", "path")).casefold())
        for f in self.facets.values():
            f.freeze()
        self.hay = hay
        self.n = len(tracks)
        self._orders: dict[str, np.ndarray] = {}

    def _order(self, key: str) -> np.ndarray:
        order = self._orders.get(key)
        if order is None:
            def k(i: int) -> tuple:
                t = self.tracks[i]
                if key == "duration":
                    return (float(t.get("duration") or 0.0), t["path"])
                if key == "genre":
                    return ((t["_genre"] or ["\uffff"])[0].casefold(), t["path"])
                if key == "added":
                    return (str(t.get("analysed_at") or ""), t["path"])
                if key == "path":
                    return (t["path"],)
                v = str(t.get(key) or "")
                # Untitled tracks sort last, by file name.
                return (v.casefold() if v else "\uffff", os.path.basename(t["path"]).casefold(), t["path"])
            order = self._orders[key] = np.asarray(sorted(range(self.n), key=k), np.int64)
        return order

    def query(self, q: Query) -> Result:
        mask = np.ones(self.n, bool)
        if q.text:
            needle = q.text.casefold()
            mask &= np.fromiter((needle in h for h in self.hay), bool, self.n)
        for name, values in q.chosen.items():
            facet = self.facets[name]
            codes = [facet.codes[v] for v in values if v in facet.codes]
            hit = np.zeros(self.n, bool)
            hit[facet.row_arr[np.isin(facet.val_arr, codes)]] = True
            mask &= hit
        counts: dict[str, list[tuple[str, int]]] = {}
        for name, facet in self.facets.items():
            c = np.bincount(facet.val_arr[mask[facet.row_arr]], minlength=len(facet.names))
            nz = np.nonzero(c)[0]
            ranked = sorted(nz.tolist(), key=lambda code: (-int(c[code]), facet.names[code].casefold()))
            counts[name] = [(facet.names[code], int(c[code])) for code in ranked]
            for v in q.chosen.get(name, ()):  # a chosen value stays visible (to unselect it) even at 0
                if v not in {n for n, _ in counts[name]}:
                    counts[name].append((v, 0))
        order = self._order(q.sort)
        if q.descending:
            order = order[::-1]
        matching = order[mask[order]]
        total = int(len(matching))
        pages = max(1, -(-total // q.per_page))
        start = (min(q.page, pages) - 1) * q.per_page
        rows = [self.tracks[i] for i in matching[start:start + q.per_page].tolist()]
        return Result(rows, total, counts, pages)
