"""Keep the order of an MP3's ID3v2 frames through a save, so an undo gives back the exact bytes.

mutagen writes frames sorted by its own priority (title, artist, track, album, disc, date, genre, then by
size), whatever order the file had them in. Files tagged by FFmpeg, foobar2000 or most other taggers keep
their own order, so after a write and an undo the tag held the same frames in another order. Frames are
self-contained byte records (a 10-byte header and a body), so they can be put back in the file's order
after mutagen has saved: frames the file had before, byte for byte, go back to their old places; a changed
frame takes the place of the first frame of its kind; new frames follow in mutagen's order. A tag with
tag-level unsynchronisation, an extended header or a footer is left as mutagen wrote it.
"""
from __future__ import annotations

from pathlib import Path

HEADER = 10


def _size(raw: bytes, synchsafe: bool) -> int:
    if synchsafe:
        return raw[0] << 21 | raw[1] << 14 | raw[2] << 7 | raw[3]
    return int.from_bytes(raw, "big")


def read_frames(data: bytes) -> tuple[int, int, list[bytes]] | None:
    """(major version, tag size, frames as raw records) of the ID3v2 tag at the start of ``data``, or None
    when there is none or it is laid out in a way this module does not reorder."""
    if len(data) < HEADER or data[:3] != b"ID3" or data[3] not in (3, 4) or data[5] & 0xD0:
        return None  # no tag, v2.2, unsynchronised, extended header or footer
    version, size = data[3], _size(data[6:10], True)
    end = min(HEADER + size, len(data))
    frames, pos = [], HEADER
    while pos + HEADER <= end and data[pos] != 0:
        length = _size(data[pos + 4:pos + 8], version == 4)
        if pos + HEADER + length > end:
            return None
        frames.append(data[pos:pos + HEADER + length])
        pos += HEADER + length
    return version, size, frames


def _kind(frame: bytes) -> bytes:
    """Frame id plus, for frames that may repeat with a description (TXXX, COMM, ...), the start of the body:
    enough to tell ``TXXX:MOOD`` from ``TXXX:TAGGER_MODEL`` for placing a changed frame."""
    return frame[:4] + (frame[HEADER:HEADER + 24] if frame[:4] in (b"TXXX", b"COMM", b"WXXX", b"PRIV", b"UFID") else b"")


def head_of(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(HEADER)
        if len(head) < HEADER or head[:3] != b"ID3":
            return b""
        return head + f.read(_size(head[6:10], True))


def restore_order(path: Path, before: bytes) -> None:
    """Reorder the frames of the tag now at the start of ``path`` to follow ``before`` (the tag's bytes as
    they were before the save, from :func:`head_of`)."""
    old = read_frames(before)
    new_head = head_of(path)
    new = read_frames(new_head)
    if old is None or new is None or old[0] != new[0]:
        return
    place: dict[bytes, int] = {}
    kind_place: dict[bytes, int] = {}
    for i, frame in enumerate(old[2]):
        place.setdefault(frame, i)
        kind_place.setdefault(_kind(frame), i)
    last = len(old[2])

    def key(item: tuple[int, bytes]) -> tuple[int, int, int]:
        index, frame = item
        if frame in place:
            return place[frame], 0, index
        return kind_place.get(_kind(frame), last), 1, index

    ordered = [f for _, f in sorted(enumerate(new[2]), key=key)]
    if ordered == new[2]:
        return
    body = b"".join(ordered)
    with open(path, "r+b") as f:
        f.seek(HEADER)
        f.write(body)  # same frames, same total length: the padding after them is untouched
