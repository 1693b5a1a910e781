"""Content digests of a file's audio: decoded (native rate, or the 16 kHz fingerprint) and of the stored packets, so a tag write is told apart from a re-encode."""
from __future__ import annotations

import hashlib
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from tagger.analysis.decode import (
    StreamInfo,
    _pedalboard_blocks,
    _pyav_blocks,
    _utf8_name,
    check_complete,
)
from tagger.analysis.formats import PEDALBOARD_FORMATS, sniff
from tagger.errors import DecodeError


class NativeHash:
    """Digest of decoded audio, one running hash per channel: independent of how the stream was cut
    into blocks, and no interleaving copy is needed."""

    def __init__(self) -> None:
        self._per_channel: list[Any] = []  # one blake2b per channel

    def update(self, block: np.ndarray) -> None:
        block = block.reshape(1, -1) if block.ndim == 1 else block
        while len(self._per_channel) < block.shape[0]:
            self._per_channel.append(hashlib.blake2b(digest_size=20))
        for h, channel in zip(self._per_channel, block):
            h.update(np.ascontiguousarray(channel, dtype=np.float32).data)

    def hexdigest(self, rate: int, channels: int) -> str:
        top = hashlib.blake2b(f"{rate}:{channels}".encode(), digest_size=20)
        for h in self._per_channel:
            top.update(h.digest())
        return top.hexdigest()


class Fingerprint:
    """Content hash of the decoded audio, independent of tags and container bytes.

    Samples are quantised to 16 bits before hashing so that harmless float noise between decoder
    builds does not change it; a tag write leaves it unchanged, a re-encode changes it.
    """

    def __init__(self) -> None:
        self._h = hashlib.blake2b(digest_size=16)

    def update(self, block: np.ndarray) -> None:
        self._h.update(np.clip(np.round(block * 32767.0), -32768, 32767).astype("<i2").tobytes())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def native_digest(path: str | Path) -> str:
    """Hash of every decoded sample at the file's own rate and channel count.

    The tag write's audio proof for files whose packets cannot be compared (see packet_digest): the copy
    must decode to exactly the same samples as the original. Not taken during analysis: hashing every
    native sample cost ~0.1 s per 5-minute track, for a fallback almost no file needs.
    """
    path = Path(path)
    fmt = sniff(path)
    info = StreamInfo(format=fmt)
    digest = NativeHash()
    placeholder_size = check_complete(path, fmt)
    blocks = (_pedalboard_blocks(path, info) if fmt in PEDALBOARD_FORMATS and not placeholder_size
              else _pyav_blocks(path, info))
    try:
        for block in blocks:
            digest.update(block)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(path, f"cannot decode {fmt}: {str(exc).strip() or type(exc).__name__}") from exc
    return digest.hexdigest(info.source_rate, info.channels)


def _xiph_packets(extradata: bytes) -> list[bytes]:
    """Split Xiph-laced codec extradata (how FFmpeg keeps Vorbis's three header packets) into packets."""
    if not extradata:
        return []
    count, pos, sizes = extradata[0] + 1, 1, []
    for _ in range(count - 1):
        size = 0
        while pos < len(extradata):
            byte = extradata[pos]
            pos += 1
            size += byte
            if byte < 255:
                break
        sizes.append(size)
    out = []
    for size in sizes:
        out.append(extradata[pos:pos + size])
        pos += size
    out.append(extradata[pos:])
    return out


def packet_digest(path: str | Path) -> str:
    """Hash of the audio stream as stored: codec parameters and every demuxed packet (bytes, timestamps),
    without decoding.

    Equal packet digests mean the decoder receives the same input, so the decoded audio is the same: this
    proves a tag write left the audio alone at a fraction of the cost of decoding both files. Tags are not
    packets (ID3, Vorbis comments, MP4 atoms, RIFF chunks); for Vorbis, whose comment header FFmpeg keeps
    in the codec's extradata beside the identification and setup headers, the comment header is left out
    and the other two are hashed. Raises DecodeError when the file cannot be demuxed.
    """
    import av

    path = Path(path)
    h = hashlib.sha256()
    name = _utf8_name(path)
    try:
        with (open(path, "rb") if name is None else nullcontext()) as handle, av.open(name if name is not None else handle, "r") as box:
            if not box.streams.audio:
                raise DecodeError(path, "container has no audio stream")
            stream = box.streams.audio[0]
            cc = stream.codec_context
            h.update(f"{cc.name}|{cc.sample_rate}|{cc.channels}|{stream.time_base}|".encode())
            extra = bytes(cc.extradata or b"")
            if cc.name == "vorbis":
                extra = b"".join(p for i, p in enumerate(_xiph_packets(extra)) if i != 1)
            h.update(len(extra).to_bytes(8, "little") + extra)
            count = 0
            for packet in box.demux(stream):
                if packet.size == 0:
                    continue  # the demuxer's end-of-stream marker
                h.update(f"{packet.pts}|{packet.duration}|{packet.size}|".encode())
                h.update(bytes(packet))
                count += 1
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(path, f"cannot demux: {str(exc).strip() or type(exc).__name__}") from exc
    if count == 0:
        raise DecodeError(path, "no audio packets")
    return h.hexdigest()
