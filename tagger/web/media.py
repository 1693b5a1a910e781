"""Audio previews: a track's file streamed by its record id, with HTTP range requests.

The path always comes from the database record, never from the request. Browsers seek and start playback
with ``Range: bytes=a-b`` requests; one range is supported (what players send), several are answered with
the whole file, which RFC 9110 allows.
"""
from __future__ import annotations

import re
from pathlib import Path

MIME = {
    "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg", "oga": "audio/ogg", "opus": "audio/ogg",
    "wav": "audio/wav", "m4a": "audio/mp4", "mp4": "audio/mp4", "aac": "audio/aac", "aif": "audio/aiff",
    "aiff": "audio/aiff", "wma": "audio/x-ms-wma", "wv": "audio/x-wavpack",
}
CHUNK = 1 << 16


def mime_type(path: Path | str) -> str:
    return MIME.get(Path(path).suffix.lower().lstrip("."), "application/octet-stream")


class RangeError(ValueError):
    """The range cannot be satisfied (a 416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first byte, last byte) inclusive for a single ``bytes=`` range, None for the whole file.

    Malformed or multi-range headers mean the whole file (servers may ignore Range); a well-formed range
    that starts past the end raises RangeError.
    """
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # the last N bytes
        n = int(last)
        if n == 0:
            raise RangeError("empty suffix range")
        return max(size - n, 0), size - 1
    a = int(first)
    if a >= size:
        raise RangeError(f"range starts at {a}, the file has {size} bytes")
    b = int(last) if last else size - 1
    if b < a:
        return None
    return a, min(b, size - 1)
