"""tagger as a similarity provider for music servers: look-ups by what a server knows of a track, and the
request and response shapes of the two published contracts it answers.

- **Navidrome's sonic-similarity plugin capability** (Navidrome 0.62, plugins PDK `sonicsimilarity`), the
  server side of the OpenSubsonic ``sonicSimilarity`` extension (``getSonicSimilarTracks``, ``findSonicPath``):
  ``POST /api/v1/sonic/similar`` takes ``{"song": SongRef, "count": n}``, ``POST /api/v1/sonic/path`` takes
  ``{"startSong": SongRef, "endSong": SongRef, "count": n}``; both answer ``{"matches": [{"song": SongRef,
  "similarity": s}]}`` with ``s`` in [0, 1], 1 the same sound. A SongRef is matched by MusicBrainz recording id,
  then artist and name (album and duration break ties); the SongRefs answered carry name, artist, album,
  MusicBrainz id and duration, which the server resolves to its own tracks.
- **AudioMuse-AI's track endpoints** (as its Navidrome and Jellyfin plugins call them): ``GET
  /api/similar_tracks?item_id=ID&n=N`` (or ``title`` and ``artist``) answers ``[{"item_id", "title", "author",
  "album", "distance"}]``, nearest first, ``distance`` = 1 - cosine; ``GET /api/search_tracks?search_query=Q``
  answers ``[{"item_id", "title", "author", "album"}]``. ``item_id`` is tagger's track id.
- ``GET /api/v1/tracks/lookup?path=P`` | ``mbid=M`` | ``artist=A&title=T``: tagger's own look-up.
"""
from __future__ import annotations

import json
from typing import Any

from tagger.library.store import Store
from tagger.lookup.query import bounded, find_tracks, similarity, sonic_path
from tagger.lookup.similar import Library

MAX_BODY = 64 * 1024


def song_ref(rec: dict[str, Any]) -> dict[str, Any]:
    """A Navidrome SongRef for a record: the keys a server matches its own tracks by."""
    out: dict[str, Any] = {"name": rec.get("title") or rec["path"].rsplit("/", 1)[-1].rsplit(".", 1)[0]}
    for key, field in (("artist", "artist"), ("album", "album"), ("mbid", "musicbrainz_trackid")):
        if rec.get(field):
            out[key] = rec[field]
    if rec.get("duration"):
        out["duration"] = round(float(rec["duration"]), 3)
    return out


def _resolve(lib: Library, ref: Any) -> list[dict[str, Any]]:
    if not isinstance(ref, dict):
        raise ValueError("a song must be an object (a SongRef: name, artist, mbid...)")
    artists = ref.get("artists") or []
    artist = ref.get("artist") or (artists[0].get("name") if artists and isinstance(artists[0], dict) else None)
    return find_tracks(lib, mbid=ref.get("mbid"), artist=artist, title=ref.get("name"), album=ref.get("album"),
                       duration=ref.get("duration"))


class ProviderRoutes:
    """Handlers of the provider routes, mixed into the server's request handler (its ``_send``, ``state``)."""

    state: Any
    headers: Any
    rfile: Any

    def _send(self, code: int, body: Any, extra: dict[str, str] | None = None) -> None:  # provided by the handler
        raise NotImplementedError

    def _read_json(self) -> Any:
        """The request's JSON body; None after answering 411/413/415/400 for a body that is not one."""
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            return self._send(415, {"error": "send application/json"})
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            return self._send(411, {"error": "Content-Length required"})
        if not 0 < length <= MAX_BODY:
            return self._send(413, {"error": f"body must be 1 to {MAX_BODY} bytes"})
        try:
            return json.loads(self.rfile.read(length))
        except ValueError:
            return self._send(400, {"error": "body is not JSON"})

    def _library(self) -> tuple[Store, Library] | None:
        store, lib = self.state.current()
        if store is None or lib is None:
            self._send(404, {"error": "no such track (the database is empty)"})
            return None
        return store, lib

    def api_lookup(self, query: dict[str, list[str]]) -> None:
        found = self._library()
        if found is None:
            return
        store, lib = found
        one = {k: query[k][0] for k in ("path", "mbid", "artist", "title", "album") if query.get(k)}
        if not ({"path", "mbid"} & set(one) or {"artist", "title"} <= set(one)):
            return self._send(400, {"error": "give path=, mbid=, or artist= and title="})
        recs = find_tracks(lib, path=one.get("path"), mbid=one.get("mbid"), artist=one.get("artist"),
                           title=one.get("title"), album=one.get("album"))
        self._send(200, [{"id": store.doc_id(r["path"], lib.model), "path": r["path"], **song_ref(r)} for r in recs])

    def _sonic_request(self, shape: str) -> tuple[Library, dict[str, Any], int] | None:
        """(library, body, count) of a sonic-similarity request; None once an error is answered."""
        body = self._read_json()
        if body is None:
            return None
        found = self._library()
        if found is None:
            return None
        if not isinstance(body, dict):
            self._send(400, {"error": f"the body must be {shape}"})
            return None
        return found[1], body, bounded("n", body.get("count") or None, 10)

    def sonic_similar(self, query: dict[str, list[str]]) -> None:
        req = self._sonic_request('{"song": SongRef, "count": n}')
        if req is None:
            return
        lib, body, count = req
        seeds = _resolve(lib, body.get("song"))
        if not seeds:
            return self._send(404, {"error": "the song is not in tagger's database"})
        hits = lib.similar(lib.embedding_of(seeds[0]), seeds[0], count)
        self._send(200, {"matches": [{"song": song_ref(h.record), "similarity": similarity(h.score)} for h in hits]})

    def sonic_path(self, query: dict[str, list[str]]) -> None:
        req = self._sonic_request('{"startSong": SongRef, "endSong": SongRef, "count": n}')
        if req is None:
            return
        lib, body, count = req
        start, end = _resolve(lib, body.get("startSong")), _resolve(lib, body.get("endSong"))
        if not start or not end:
            return self._send(404, {"error": f"the {'start' if not start else 'end'} song is not in tagger's database"})
        steps = sonic_path(lib, start[0], end[0], max(count, 2))
        self._send(200, {"matches": [{"song": song_ref(r), "similarity": s} for r, s in steps]})

    def audiomuse_similar(self, query: dict[str, list[str]]) -> None:
        found = self._library()
        if found is None:
            return
        store, lib = found
        n = bounded("n", query.get("n", [None])[0], 10)
        item = query.get("item_id", [""])[0]
        if item:
            rec = store.by_id(int(item)) if item.isdigit() else None
            seeds = [lib.by_path[rec["path"]]] if rec is not None and rec["path"] in lib.by_path else []
        elif query.get("title") and query.get("artist"):
            seeds = find_tracks(lib, artist=query["artist"][0], title=query["title"][0])
        else:
            return self._send(400, {"error": "give item_id, or title and artist"})
        if not seeds:
            return self._send(404, {"error": "no such track"})
        hits = lib.similar(lib.embedding_of(seeds[0]), seeds[0], n)
        self._send(200, [{"item_id": str(store.doc_id(h.record["path"], lib.model)), "title": h.record.get("title", ""),
                          "author": h.record.get("artist", ""), "album": h.record.get("album", ""),
                          "distance": round(1.0 - float(h.score), 6)} for h in hits])

    def audiomuse_search(self, query: dict[str, list[str]]) -> None:
        found = self._library()
        if found is None:
            return
        store, lib = found
        text = " ".join(query.get("search_query", [""])[0].casefold().split())
        if not text:
            return self._send(400, {"error": "give search_query"})
        limit = bounded("limit", query.get("limit", [None])[0], 50)
        hits = [r for r in lib.records
                if text in " ".join(str(r.get(k) or "") for k in ("title", "artist", "album")).casefold()][:limit]
        self._send(200, [{"item_id": str(store.doc_id(r["path"], lib.model)), "title": r.get("title", ""),
                          "author": r.get("artist", ""), "album": r.get("album", "")} for r in hits])
