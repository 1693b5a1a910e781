"""The JSON API's OpenAPI description (served at /api/v1/openapi.json), generated from the route table: a
route of kind ``api`` with an entry in ``OPERATIONS`` is documented, under its current URL."""
from __future__ import annotations

from typing import Any

from tagger.lookup.query import LIMITS
from tagger.serving.routes import ROUTES


def _operations(labels: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Handler name -> its OpenAPI operation."""
    track = {"type": "object", "properties": {"id": {"type": "integer"}, "path": {"type": "string"},
                                              "score": {"type": "number"}, "artist": {"type": "string"},
                                              "title": {"type": "string"}, "duration": {"type": "number"}}}
    err = {"description": "error", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}}}}}}
    idp = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
    listing = {"description": "tracks, best first", "content": {"application/json": {"schema": {
        "type": "array", "items": track}}}}

    def count(name: str) -> dict[str, Any]:
        lo, hi = LIMITS[name]
        return {"name": name, "in": "query", "schema": {"type": "integer", "minimum": lo, "maximum": hi}}

    return {
        "api_health": {"summary": "liveness and library size", "responses": {"200": {"description": "ok"}}},
        "api_search": {
            "summary": "search by tags: tracks carrying every given label, best first",
            "parameters": [{"name": "tag", "in": "query", "required": True, "explode": True,
                            "schema": {"type": "array", "items": {"type": "string", "enum": list(labels)}}},
                           count("limit")],
            "responses": {"200": listing, "400": err, "401": err, "403": err}},
        "api_track": {
            "summary": "one track: record and every label's song-level probability", "parameters": [idp],
            "responses": {"200": {"description": "the track"}, "404": err, "401": err, "403": err}},
        "api_similar": {
            "summary": "nearest tracks by embedding cosine (seed and duplicates left out by default)",
            "parameters": [idp, count("n"), {"name": "include_duplicates", "in": "query", "schema": {"type": "boolean"}}],
            "responses": {"200": listing, "404": err, "401": err, "403": err}},
        "api_lookup": {
            "summary": "tracks by file path, MusicBrainz recording id, or artist and title",
            "parameters": [{"name": k, "in": "query", "schema": {"type": "string"}}
                           for k in ("path", "mbid", "artist", "title", "album")],
            "responses": {"200": {"description": "matching tracks: id, path, name, artist, album, mbid, duration"},
                          "400": err}},
        "api_view": {
            "summary": "what the web page shows of a track: every model's labels, the decision, the file's tags",
            "parameters": [idp], "responses": {"200": {"description": "the view"}, "404": err}},
    }


def openapi(labels: tuple[str, ...]) -> dict[str, Any]:
    ops = _operations(labels)
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        if r.kind == "api" and r.handler in ops:
            paths.setdefault(r.path, {})[r.method.lower()] = ops[r.handler]
    return {
        "openapi": "3.0.3",
        "info": {"title": "tagger", "version": "1", "description": "Read-only access to tagger's analysis. The "
                 "previous release's URLs (/health, /tracks...) are still answered, marked Deprecation: true."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}, {}],
        "paths": paths,
    }
