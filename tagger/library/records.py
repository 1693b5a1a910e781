"""The stored record's schema: the fields and what each must hold, checked once when the database opens."""
from __future__ import annotations

import json
from typing import Any


def _str_lists(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(x, list) and all(isinstance(s, str) for s in x) for x in v.values())


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# The record's fields and what each must hold (absent is always fine): checked once when the database opens,
# so a damaged or hand-edited record is refused there, naming the file and the field, instead of failing
# deep inside a lookup.
RECORD_FIELDS: dict[str, tuple[str, Any]] = {
    "path": ("text", lambda v: isinstance(v, str)),
    "model": ("text", lambda v: isinstance(v, str)),
    "slot": ("a row number or null", lambda v: v is None or (_is_int(v) and v >= 0)),
    "size": ("an integer", _is_int),
    "mtime_ns": ("an integer", _is_int),
    "windows": ("an integer", _is_int),
    "duration": ("a number", lambda v: (_is_int(v) or isinstance(v, float)) and v == v),
    "status": ("ok or failed", lambda v: v in ("ok", "failed")),
    "analyser": ("text", lambda v: isinstance(v, str)),
    "analysed_at": ("text", lambda v: isinstance(v, str)),
    "reason": ("text", lambda v: isinstance(v, str)),
    "fingerprint": ("text or null", lambda v: v is None or isinstance(v, str)),
    "format": ("text", lambda v: isinstance(v, str)),
    "track_id": ("text", lambda v: isinstance(v, str)),
    "artist": ("text", lambda v: isinstance(v, str)),
    "album": ("text", lambda v: isinstance(v, str)),
    "title": ("text", lambda v: isinstance(v, str)),
    "write_error": ("text or null", lambda v: v is None or isinstance(v, str)),
    "applied": ("true or false", lambda v: isinstance(v, bool)),
    "heads": ("a list of text", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "locked": ("a list of text", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "user": ("a mapping of lists of text", _str_lists),
    "decided": ("a mapping of lists of text", _str_lists),
    "written": ("a mapping of lists of text", _str_lists),
}


def record_problem(doc: Any) -> str | None:
    """What is wrong with a stored record (None when it is well formed)."""
    if not isinstance(doc, dict):
        return f"is {type(doc).__name__}, not a record"
    for name in ("path", "model"):
        if name not in doc:
            return f"has no {name}"
    for name, (want, ok) in RECORD_FIELDS.items():
        if name in doc and not ok(doc[name]):
            return f"field {name!r} must be {want}, got {json.dumps(doc[name])[:40]}"
    return None


def valid_doc(doc: Any) -> bool:
    return record_problem(doc) is None
