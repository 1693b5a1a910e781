"""Audio previews: a track's file streamed by its record id, with HTTP range requests.

The path always comes from the database record, never from the request. Browsers seek and start playback
with ``Range: bytes=a-b`` requests; one range is supported (what players send), several are answered with
the whole file, which RFC 9110 allows.
"""
from __future__ import annotations

import re
from pathlib import Path

from tagger.analysis.formats import FORMATS

# by file name suffix: the format table's, plus formats the tool does not decode but a library may hold
MIME = {suffix: f.mime for f in FORMATS.values() for suffix in f.suffixes} | {"aac": "audio/aac", "wv": "audio/x-wavpack"}
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


def cover_art(path: Path | str) -> tuple[bytes, str] | None:
    """The picture embedded in a file (the front cover when it says which), as (bytes, MIME type), or None.

    Read with mutagen from where each format keeps it: ID3 APIC frames (MP3, AIFF, WAV), FLAC picture blocks,
    METADATA_BLOCK_PICTURE in Vorbis comments (Ogg Vorbis, Opus), ``covr`` atoms (MP4)."""
    import base64

    import mutagen
    from mutagen.flac import FLAC, Picture
    from mutagen.id3 import ID3
    from mutagen.mp4 import MP4, MP4Cover
    from mutagen.oggopus import OggOpus
    from mutagen.oggvorbis import OggVorbis

    try:
        audio = mutagen.File(str(path))
    except Exception:  # noqa: BLE001  an unreadable tag means no cover, never an error page
        return None
    if audio is None or audio.tags is None and not isinstance(audio, FLAC):
        return None
    found: list[tuple[int, bytes, str]] = []  # (picture type, data, mime)
    if isinstance(audio, FLAC):
        found += [(p.type, p.data, p.mime) for p in audio.pictures]
    elif isinstance(audio.tags, ID3):
        found += [(int(f.type), f.data, f.mime) for f in audio.tags.getall("APIC")]
    elif isinstance(audio, (OggVorbis, OggOpus)):
        for raw in audio.tags.get("metadata_block_picture", []):
            try:
                p = Picture(base64.b64decode(raw))
            except Exception:  # noqa: BLE001  a damaged picture block is skipped
                continue
            found.append((p.type, p.data, p.mime))
    elif isinstance(audio, MP4):
        found += [(3, bytes(c), "image/png" if c.imageformat == MP4Cover.FORMAT_PNG else "image/jpeg")
                  for c in audio.tags.get("covr", [])]
    found = [f for f in found if f[1]]
    if not found:
        return None
    _, data, mime = min(found, key=lambda f: (f[0] != 3, f[0]))  # type 3: the front cover
    if mime not in ("image/jpeg", "image/png", "image/gif", "image/webp"):
        mime = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
    return data, mime
