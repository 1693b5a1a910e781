"""Album and folder mates: what the user's own tags say about a track's neighbours.

Users tag by album far more often than by track, and libraries are filed one album per folder. When
the tracks a user did tag in a track's album (or folder) agree on a value, that agreement is strong
evidence for the untagged rest. A trained head uses it only when ``tagger train`` measured, on the
library itself with each tagged track held out in turn, that the vote meets the precision target; the
card then lists the scopes in ``context``. Mixed folders (downloads, compilations) rarely reach the
required agreement, so they vote nothing.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

SCOPES = ("album", "folder")
MIN_MATES = 2
AGREEMENT = 0.8


_IGNORED = str.maketrans("", "", " \t\n\r\f\v-_&")


def normalise(value: str) -> str:
    """One key for spellings of one value that differ only in case, spacing, hyphens or '&' ("Dub  techno" is
    "Dub Techno", "hip hop" is "Hip-Hop", "R & B" is "R&B"): how a listener compares genres, and how a user's
    value is matched with the tool's, with album and folder mates' and with a head's labels."""
    return value.casefold().translate(_IGNORED)


def scope_keys(path: str, album: str | None) -> list[tuple[str, str]]:
    keys = [("folder", os.path.dirname(path))]
    if album and album.strip():
        keys.append(("album", normalise(album)))
    return keys


@dataclass(frozen=True)
class Vote:
    value: str
    agree: int
    mates: int
    scope: str

    @property
    def reason(self) -> str:
        return f"{self.agree} of {self.mates} tagged tracks in the same {self.scope} say {self.value}"


class LibraryContext:
    """The user's own values per album and per folder, for one field."""

    def __init__(self, field: str) -> None:
        self.field = field
        self._by_key: dict[tuple[str, str], dict[str, list[str]]] = {}
        self._spelling: dict[str, Counter] = {}

    @classmethod
    def from_records(cls, field: str, records: Iterable[dict]) -> "LibraryContext":
        ctx = cls(field)
        for r in records:
            ctx.add(r["path"], r.get("album"), (r.get("user") or {}).get(field) or [])
        return ctx

    def add(self, path: str, album: str | None, values: list[str]) -> None:
        """Record (or replace) a track's own values; a track without values is removed."""
        keys = [normalise(v) for v in values if v.strip()]
        for v in values:
            if v.strip():
                self._spelling.setdefault(normalise(v), Counter())[" ".join(v.split())] += 1
        for key in scope_keys(path, album):
            mates = self._by_key.setdefault(key, {})
            if keys:
                mates[path] = keys
            else:
                mates.pop(path, None)

    def vote(self, path: str, album: str | None, scopes: Iterable[str] = SCOPES) -> Vote | None:
        """The value the track's tagged mates (itself excluded) agree on, asking the album first (the
        narrower scope) and then the folder; None when neither has enough mates that agree."""
        wanted = set(scopes)
        for scope, key in sorted(scope_keys(path, album), key=lambda sk: SCOPES.index(sk[0])):
            if scope not in wanted:
                continue
            mates = [v for p, v in self._by_key.get((scope, key), {}).items() if p != path]
            if len(mates) < MIN_MATES:
                continue
            counts = Counter(v for values in mates for v in dict.fromkeys(values))
            value, agree = counts.most_common(1)[0]
            if agree >= AGREEMENT * len(mates):
                return Vote(self._spelling[value].most_common(1)[0][0], agree, len(mates), scope)
        return None
