"""Vorbis comment writes that keep the encoder's page layout, so an undo gives back the exact bytes.

libvorbis (through libogg's ``ogg_stream_flush``) puts the comment header and the setup header on the same
page, cutting pages only where 255 lacing values are used up. mutagen repaginates a changed comment packet
with its own rule (about 4 KB pages, the comment alone on its page): after a write and an undo, the comment
packet has its original bytes again but sits on a page of its own, and the file is 27 bytes (one page
header) longer than before. Here the header packets are paged as the file paged them: when the comment's
last page also carries the setup header's start, they are paged libogg's way on every write, so the layout a
write changes is the layout undo restores. Files paged otherwise keep mutagen's own rule.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mutagen import PaddingInfo
from mutagen.ogg import OggPage

MAX_SEGMENTS = 255  # lacing values per page (the Ogg format's limit)
SEGMENT = 255


def _libogg_pages(packets: list[bytes]) -> list[OggPage]:
    """Pages for consecutive packets as ``ogg_stream_flush`` cuts them: as many lacing values as fit in one page,
    a packet that does not fit continued on the next; granule position 0 where a packet ends, -1 elsewhere."""
    pages: list[OggPage] = []
    page, used = OggPage(), 0
    for index, packet in enumerate(packets):
        more = index < len(packets) - 1
        n_segments = len(packet) // SEGMENT + 1  # a final segment shorter than 255 (possibly empty) ends it
        pos = 0
        while n_segments:
            take = min(n_segments, MAX_SEGMENTS - used)
            ends = take == n_segments
            chunk = packet[pos:] if ends else packet[pos:pos + take * SEGMENT]
            page.packets.append(chunk)
            page.complete = ends
            pos += len(chunk)
            used += take
            n_segments -= take
            if used == MAX_SEGMENTS and (n_segments or more):
                pages.append(page)
                page, used = OggPage(), 0
                page.continued = bool(n_segments)
    if page.packets:
        pages.append(page)
    for p in pages:
        p.position = 0 if p.complete or len(p.packets) > 1 else -1
    return pages


def _segments(page: OggPage) -> int:
    """Lacing values the page uses: 255-byte segments, plus a short one for each packet that ends on it."""
    n = sum(len(chunk) // SEGMENT + 1 for chunk in page.packets)
    return n - 1 if not page.complete and len(page.packets[-1]) % SEGMENT == 0 else n


def save_vorbis_comment(path: Path, comment: bytes, padding: Callable[[PaddingInfo], int] | None) -> bool:
    """Write ``comment`` (a Vorbis comment without its packet prefix) into an Ogg Vorbis file whose comment and
    setup headers share a page, keeping that layout. Returns False (nothing written) for any other layout,
    which the caller then saves the usual way."""
    with open(path, "rb+") as f:
        page = OggPage(f)
        while not page.packets[0].startswith(b"\x03vorbis"):
            page = OggPage(f)
        old_pages = [page]
        while not (old_pages[-1].complete or len(old_pages[-1].packets) > 1):
            page = OggPage(f)
            if page.serial == old_pages[0].serial:
                old_pages.append(page)
        last = old_pages[-1]
        if len(last.packets) != 2 or not last.complete or any(_segments(p) != MAX_SEGMENTS for p in old_pages[:-1]):
            return False  # comment alone on its page(s), setup continuing past it, or smaller pages: not libogg's
        packets = OggPage.to_packets(old_pages, strict=False)
        data = b"\x03vorbis" + comment
        f.seek(0, 2)
        info = PaddingInfo(len(packets[0]) - len(data), f.tell() - len(packets[0]))
        extra = padding(info) if padding is not None else info.get_default_padding()
        packets[0] = data + b"\x00" * max(int(extra), 0)
        OggPage.replace(f, old_pages, _libogg_pages(packets))
    return True
