"""The JSON API's bounds and its OpenAPI description (served at /openapi.json)."""
from __future__ import annotations

from typing import Any

MAX_N = 500


def bounded_int(query: dict[str, list[str]], name: str, default: int, lo: int = 1, hi: int = MAX_N) -> int:
    """A query integer within [lo, hi]; ValueError (a 400) for anything else, never a silent clamp below lo."""
    raw = query.get(name, [str(default)])[0]
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def openapi(labels: tuple[str, ...]) -> dict[str, Any]:
    track = {"type": "object", "properties": {"id": {"type": "integer"}, "path": {"type": "string"},
                                              "score": {"type": "number"}, "artist": {"type": "string"},
                                              "title": {"type": "string"}, "duration": {"type": "number"}}}
    err = {"description": "error", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}}}}}}
    idp = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
    listing = {"description": "tracks, best first", "content": {"application/json": {"schema": {
        "type": "array", "items": track}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "tagger", "version": "1", "description": "Read-only access to tagger's analysis."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}, {}],
        "paths": {
            "/health": {"get": {"summary": "liveness and library size", "responses": {"200": {"description": "ok"}}}},
            "/tracks": {"get": {
                "summary": "search by tags: tracks carrying every given label, best first",
                "parameters": [{"name": "tag", "in": "query", "required": True, "explode": True,
                                "schema": {"type": "array", "items": {"type": "string", "enum": list(labels)}}},
                               {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_N}}],
                "responses": {"200": listing, "400": err, "401": err, "403": err}}},
            "/tracks/{id}": {"get": {
                "summary": "one track: record and every label's song-level probability", "parameters": [idp],
                "responses": {"200": {"description": "the track"}, "404": err, "401": err, "403": err}}},
            "/tracks/{id}/similar": {"get": {
                "summary": "nearest tracks by embedding cosine (seed and duplicates left out by default)",
                "parameters": [idp, {"name": "n", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_N}},
                               {"name": "include_duplicates", "in": "query", "schema": {"type": "boolean"}}],
                "responses": {"200": listing, "404": err, "401": err, "403": err}}},
        },
    }
