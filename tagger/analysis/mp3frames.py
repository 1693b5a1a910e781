"""MP3 frame headers, read without decoding: the Xing/Info header's declared length (to refuse a truncated
file before decoding) and chains of whole frames (to tell MP3 from random bytes by the header alone).

Gapless trimming (encoder delay and padding from the LAME tag) is FFmpeg's: it decodes MP3 since
2026-12-05 and trims both, so an MP3 lines up sample for sample with its lossless source
(``tests/analysis/test_decode.py``), and decodes it twice as fast as pedalboard did.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class XingHeader:
    start: int  # offset of the first frame (after any ID3v2 tag)
    frames: int | None  # frames the header declares (the header frame itself not counted), when it says
    stream_bytes: int | None  # length of the frames in bytes it declares, when it says


def xing_header(path: str, max_scan: int = 1 << 16) -> XingHeader | None:
    """What the Xing/Info header of the first frame declares, or None when the file has none."""
    found = _xing(path, max_scan)
    if found is None:
        return None
    start, buf, xing = found
    flags = int.from_bytes(buf[xing + 4:xing + 8], "big")
    frames = int.from_bytes(buf[xing + 8:xing + 12], "big") if flags & 1 else None
    off = xing + 8 + (4 if flags & 1 else 0)
    stream_bytes = int.from_bytes(buf[off:off + 4], "big") if flags & 2 else None
    return XingHeader(start, frames, stream_bytes)


def _skip_id3v2(head: bytes) -> int:
    if len(head) >= 10 and head[:3] == b"ID3":
        size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
        footer = 10 if head[5] & 0x10 else 0
        return 10 + size + footer
    return 0


def _xing(path: str, max_scan: int) -> tuple[int, bytes, int] | None:
    """(tag-free start offset, bytes from there, offset of the Xing/Info tag in them) or None."""
    with open(path, "rb") as f:
        head = f.read(10)
        start = _skip_id3v2(head)
        f.seek(start)
        buf = f.read(max_scan)
    # The first frame sync after the tag; the Xing/Info tag lives inside that frame.
    for pos in range(0, len(buf) - 4):
        if buf[pos] == 0xFF and buf[pos + 1] & 0xE0 == 0xE0:
            break
    else:
        return None
    b1, b3 = buf[pos + 1], buf[pos + 3]
    version_bits = (b1 >> 3) & 3  # 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5
    layer_bits = (b1 >> 1) & 3  # 1 = Layer III
    if layer_bits != 1 or version_bits == 1:
        return None
    mono = (b3 >> 6) == 3
    if version_bits == 3:
        side = 17 if mono else 32
    else:
        side = 9 if mono else 17
    xing = pos + 4 + side
    if buf[xing:xing + 4] not in (b"Xing", b"Info"):
        return None
    return start + pos, buf, xing


# MPEG audio Layer III: kbit/s per bitrate index and Hz per sample-rate index, by version bits
# (3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5). Index 0 is free format (no fixed length), 15 is invalid.
_L3_KBPS = {3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
            2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
CHAIN = 3  # consecutive frames that prove a stream is MPEG audio (a chance chain in random bytes: ~1e-10)


def frame_at(buf: bytes, pos: int) -> tuple[int, int, int] | None:
    """(frame length in bytes, samples in it, sample rate) of a Layer III frame header at ``pos``, or None."""
    if pos + 4 > len(buf) or buf[pos] != 0xFF or buf[pos + 1] & 0xE0 != 0xE0:
        return None
    b1, b2 = buf[pos + 1], buf[pos + 2]
    version, layer, rate_i, br_i = (b1 >> 3) & 3, (b1 >> 1) & 3, (b2 >> 2) & 3, b2 >> 4
    if version == 1 or layer != 1 or rate_i == 3 or br_i in (0, 15):
        return None
    rate = _RATES[version][rate_i]
    kbps = _L3_KBPS[3 if version == 3 else 2][br_i]
    per = 1152 if version == 3 else 576
    return per // 8 * kbps * 1000 // rate + ((b2 >> 1) & 1), per, rate


def _chain(buf: bytes, pos: int, n: int = CHAIN) -> bool:
    rate = None
    for _ in range(n):
        fr = frame_at(buf, pos)
        if fr is None or (rate is not None and fr[2] != rate):
            return False
        rate = fr[2]
        pos += fr[0]
    return True


def first_frame(buf: bytes, start: int = 0, limit: int = 1 << 16) -> int | None:
    """Offset of the first frame from ``start`` (within ``limit`` bytes) that begins a chain of CHAIN frames."""
    end = min(len(buf), start + limit)
    pos = start
    while pos < end:
        pos = buf.find(b"\xff", pos, end)
        if pos < 0:
            return None
        if _chain(buf, pos):
            return pos
        pos += 1
    return None


def audio_start(path: str) -> int | None:
    """Offset of the first MPEG audio frame after any ID3v2 tag, or None when no run of frames starts in the
    first 64 KB after it: then the file is not MP3 audio, whatever its first bytes look like."""
    with open(path, "rb") as f:
        head = f.read(10)
        start = _skip_id3v2(head)
        f.seek(start)
        buf = f.read(1 << 16)
    found = first_frame(buf)
    return None if found is None else start + found


def count_frames(data: bytes, start: int) -> int:
    """Frames the file really holds from ``start``: walks the frame headers, resynchronising after damage
    (a damaged frame must not make a real file look short); stops at trailing tags."""
    n, pos, size = 0, start, len(data)
    while pos < size:
        fr = frame_at(data, pos)
        if fr is not None:
            n += 1
            pos += fr[0]
            continue
        nxt = first_frame(data, pos + 1, size)
        if nxt is None:
            break
        pos = nxt
    return n
