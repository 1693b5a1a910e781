"""Every URL the server answers, declared once: method, path pattern, handler, and the older URL it replaces.

The JSON API lives under one versioned prefix, ``/api/v1/``. The URLs of the previous release (the API at
``/health``, ``/tracks``...; the web app's ``/api/tracks/{id}/view``...) are answered for this release too, by
the same handler, with ``Deprecation: true`` and a ``Link`` to the new URL (RFC 9745, RFC 8288), so clients
have a release to move. A track id is one named pattern (``{id}``), not a regular expression per route.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

API = "/api/v1"
# {id}: a track's record id (1 to 12 digits, no leading zero); {name}: a static file's name
PARAMS = {"id": r"(?P<id>[1-9][0-9]{0,11})", "name": r"(?P<name>[A-Za-z0-9_.-]{1,64})"}


@dataclass(frozen=True)
class Route:
    method: str  # GET (HEAD follows it) or POST
    path: str  # with {id} / {name}
    handler: str  # the request handler's method that answers it
    kind: str  # api (JSON) | page (HTML) | media (files, playlists)
    old: tuple[str, ...] = ()  # URLs of the previous release still answered (deprecated)

    def regex(self, path: str) -> re.Pattern[str]:
        return re.compile(re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], re.escape(path).replace(r"\{", "{")
                                 .replace(r"\}", "}")))


ROUTES: tuple[Route, ...] = (
    Route("GET", "/", "page_library", "page"),
    Route("GET", "/track/{id}", "page_track", "page"),
    Route("GET", "/playlist", "page_playlist", "page"),
    Route("GET", "/status", "page_status", "page"),
    Route("GET", "/static/{name}", "static_file", "media"),
    Route("GET", "/playlist.m3u8", "playlist_m3u", "media"),
    Route("GET", "/audio/{id}", "audio", "media"),
    Route("GET", "/cover/{id}", "cover", "media"),
    Route("GET", f"{API}/health", "api_health", "api", old=("/health",)),
    Route("GET", f"{API}/openapi.json", "api_openapi", "api", old=("/openapi.json",)),
    Route("GET", f"{API}/status", "api_status", "api", old=("/api/status",)),
    Route("GET", f"{API}/tracks", "api_search", "api", old=("/tracks",)),
    Route("GET", f"{API}/tracks/{{id}}", "api_track", "api", old=("/tracks/{id}",)),
    Route("GET", f"{API}/tracks/{{id}}/similar", "api_similar", "api", old=("/tracks/{id}/similar",)),
    Route("GET", f"{API}/tracks/{{id}}/view", "api_view", "api", old=("/api/tracks/{id}/view",)),
    Route("GET", f"{API}/tracks/{{id}}/taggram", "api_taggram", "api", old=("/api/tracks/{id}/taggram",)),
    Route("POST", f"{API}/tracks/{{id}}/correct", "api_correct", "api", old=("/api/tracks/{id}/correct",)),
    # tagger as a similarity provider (tagger/serving/provider.py)
    Route("GET", f"{API}/tracks/lookup", "api_lookup", "api"),
    Route("POST", f"{API}/sonic/similar", "sonic_similar", "api"),
    Route("POST", f"{API}/sonic/path", "sonic_path", "api"),
    Route("GET", "/api/similar_tracks", "audiomuse_similar", "api"),
    Route("GET", "/api/search_tracks", "audiomuse_search", "api"),
)

_COMPILED = [(r, r.regex(p), p != r.path) for r in ROUTES for p in (r.path, *r.old)]


@dataclass(frozen=True)
class Match:
    route: Route
    params: dict[str, str]
    deprecated: bool  # answered at an old URL

    @property
    def successor(self) -> str:
        """The route's current URL for these parameters."""
        return self.route.path.format(**self.params)


def match(method: str, path: str) -> Match | None:
    """The route answering ``method path`` (HEAD as GET); None when there is none for that method."""
    method = "GET" if method == "HEAD" else method
    for route, rx, old in _COMPILED:
        if route.method == method and (m := rx.fullmatch(path)):
            return Match(route, m.groupdict(), old)
    return None


def methods(path: str) -> list[str]:
    """The methods some route answers at ``path`` (for 405 and its Allow header)."""
    out = {r.method for r, rx, _ in _COMPILED if rx.fullmatch(path)}
    return sorted(out | ({"HEAD"} if "GET" in out else set()))
