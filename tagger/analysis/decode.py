"""Decode any supported audio file to mono float32 at the model's sample rate.

The container format is decided from the file's first bytes, never from its extension. pedalboard
reads WAV, AIFF and Ogg Vorbis; PyAV (FFmpeg) reads the rest: FLAC, MP3, MP4/M4A (AAC, ALAC), Opus and
ASF/WMA (the table in :mod:`tagger.analysis.formats` says which, and why). Channels are averaged *before*
resampling and soxr 'HQ' resamples, which is what the reference models were evaluated with. Decoding
is streamed in blocks, so memory stays bounded however long the file is.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tagger.analysis.formats import FORMATS, PEDALBOARD_FORMATS, REGION_FORMATS, sniff
from tagger.analysis.mp3frames import count_frames, xing_header
from tagger.analysis.resample import RateConverter
from tagger.errors import DecodeError

BLOCK_SECONDS = 2.0  # small enough to stay in cache through downmix, resampling and windowing


@dataclass
class StreamInfo:
    """What the decoder learned about the source, filled in while streaming."""

    format: str = ""
    decoder: str = ""
    source_rate: int = 0
    channels: int = 0
    source_frames: int = 0
    declared_frames: int = 0  # the length the header announces (0: unknown), known before the first block


def _source(name: str | None, handle: Any) -> Any:
    """What the decoders open: the path as text, or an open binary file when the name is not UTF-8."""
    return name if name is not None else handle


def _utf8_name(path: Path) -> str | None:
    """The path as text the C++ decoders accept, or None when it is not valid UTF-8 on disk."""
    name = str(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return name


def _file_chunks(f, start: int, size: int, big_endian: bool) -> Iterator[tuple[bytes, int, int]]:
    """(id, data offset, declared length) of each RIFF/IFF chunk, seeking through the whole file."""
    order: Literal["big", "little"] = "big" if big_endian else "little"
    pos = start
    while pos + 8 <= size:
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8:
            return
        cid, length = head[:4], int.from_bytes(head[4:8], order)
        yield cid, pos + 8, length
        pos += 8 + length + (length & 1)


def check_complete(path: Path, fmt: str) -> bool:
    """Refuse files whose header promises more audio than the file holds.

    pedalboard zero-fills a truncated WAV or AIFF up to the length its header declares, which would be
    analysed as silence, and FFmpeg quietly stops where a cut MP3 stops; the declared sizes make the
    truncation visible before decoding. Every
    chunk is visited (a big JUNK or LIST chunk before the audio must not hide a cut). Returns True when
    the audio chunk's size is a placeholder (0 or 0xFFFFFFFF, as streaming writers leave it): then the
    real length is what the file holds, which only the FFmpeg path measures.
    """
    size = os.path.getsize(path)
    if fmt in ("wav", "aiff"):
        data_id = b"data" if fmt == "wav" else b"SSND"
        with open(path, "rb") as f:
            for cid, offset, length in _file_chunks(f, 12, size, big_endian=fmt == "aiff"):
                if cid == data_id:
                    if length in (0, 0xFFFFFFFF):
                        return True
                    if offset + length > size:
                        raise DecodeError(path, f"file is truncated: audio data needs {offset + length} bytes, "
                                                f"file has {size}")
                    break
    elif fmt == "mp3":
        xing = xing_header(str(path))
        if xing is not None and xing.stream_bytes is not None and xing.start + xing.stream_bytes > size:
            raise DecodeError(path, f"file is truncated: the MP3 header declares {xing.stream_bytes} bytes of "
                                    f"frames, the file holds {size - xing.start}")
        if xing is not None and xing.frames is not None:  # the decoder trusts this count, filling with silence
            held = count_frames(Path(path).read_bytes(), xing.start) - 1  # the Xing/Info frame holds no audio
            if xing.frames > held * MP3_FRAME_SLACK + 2:
                raise DecodeError(path, f"file is truncated or its header is wrong: the MP3 header declares "
                                        f"{xing.frames} frames, the file holds {held}")
    if fmt == "aiff":
        _check_aiff_frames(path, size)
    return False


MP3_FRAME_SLACK = 1.01  # encoders count a frame or two differently; a cut or a lie is far larger


def _check_aiff_frames(path: Path, size: int) -> None:
    """Refuse an AIFF whose COMM chunk declares more sample frames than its SSND chunk holds (the decoder
    would fill the difference with silence). Compressed AIFF-C is left to the decoder."""
    comm = ssnd = None
    with open(path, "rb") as f:
        form = f.read(12)[8:12]
        for cid, offset, length in _file_chunks(f, 12, size, big_endian=True):
            if cid == b"COMM" and length >= 18:
                f.seek(offset)
                comm = f.read(min(length, 24))
            elif cid == b"SSND" and length >= 8:
                f.seek(offset)
                ssnd = (length - 8 - int.from_bytes(f.read(4), "big"), offset)
    if comm is None or ssnd is None:
        return
    channels, frames, bits = int.from_bytes(comm[0:2], "big"), int.from_bytes(comm[2:6], "big"), \
        int.from_bytes(comm[6:8], "big")
    width = {b"fl32": 4, b"FL32": 4, b"fl64": 8, b"FL64": 8}.get(comm[18:22], (bits + 7) // 8) \
        if form == b"AIFC" else (bits + 7) // 8
    if form == b"AIFC" and comm[18:22] not in (b"NONE", b"sowt", b"twos", b"raw ", b"fl32", b"FL32", b"fl64", b"FL64"):
        return
    held = max(ssnd[0], 0) // max(channels * width, 1)
    if frames > held:
        raise DecodeError(path, f"file is truncated or its header is wrong: COMM declares {frames} sample frames, "
                                f"the sound data holds {held}")


def _flac_declared_frames(path: Path) -> int:
    from mutagen.flac import FLAC

    try:
        return int(FLAC(path).info.total_samples)
    except Exception:  # unreadable STREAMINFO: FFmpeg will say what is wrong
        return 0


def _pedalboard_info(f, info: StreamInfo) -> int:
    """Fill ``info`` from an open pedalboard file; its length in frames."""
    info.source_rate, info.channels = int(f.samplerate), int(f.num_channels)
    info.declared_frames = int(f.frames)
    return info.declared_frames


def _pedalboard_read(f, start: int, end: int, rate: int) -> Iterator[np.ndarray]:
    """(channels, n) blocks of an open pedalboard file from frame ``start`` to ``end``."""
    f.seek(start)
    block = max(1, int(BLOCK_SECONDS * rate))
    while f.tell() < end:
        chunk = f.read(min(block, end - f.tell()))
        if chunk.shape[1] == 0:
            break
        yield chunk


def _pedalboard_blocks(path: Path, info: StreamInfo) -> Iterator[np.ndarray]:
    from pedalboard.io import AudioFile

    name = _utf8_name(path)
    with (open(path, "rb") if name is None else nullcontext()) as handle, AudioFile(_source(name, handle)) as f:
        frames = _pedalboard_info(f, info)
        yield from _pedalboard_read(f, 0, frames, info.source_rate)


def _pyav_blocks(path: Path, info: StreamInfo) -> Iterator[np.ndarray]:
    import av

    name = _utf8_name(path)
    with (open(path, "rb") if name is None else nullcontext()) as handle, av.open(_source(name, handle), "r") as container:
        if not container.streams.audio:
            raise DecodeError(path, "container has no audio stream")
        stream = container.streams.audio[0]
        if stream.duration and stream.time_base and stream.rate:
            info.declared_frames = int(stream.duration * stream.time_base * stream.rate)
        elif container.duration and stream.rate:
            info.declared_frames = int(container.duration / 1_000_000 * stream.rate)
        converter: av.AudioResampler | None = None
        # Codec frames are short (20 ms for Opus, 23 ms for AAC, 3-23 ms for Vorbis): gathered into blocks of
        # BLOCK_SECONDS, so the per-block work downstream (downmix, resampling, every model's windower) runs a
        # hundred times less often.
        pending: list[np.ndarray] = []
        held = 0
        for frame in container.decode(stream):
            if not info.source_rate:  # the first frame
                info.source_rate, info.channels = int(frame.sample_rate), len(frame.layout.channels)
                block = max(1, int(BLOCK_SECONDS * info.source_rate))
            elif frame.sample_rate != info.source_rate:
                raise DecodeError(path, "sample rate changes mid-stream")
            if frame.format.name == "fltp" and len(frame.layout.channels) == info.channels:
                # planar float32 already (Vorbis, MP3, AAC, Opus): no conversion
                pending.append(frame.to_ndarray())
                held += frame.samples
            else:  # integer or packed samples (FLAC...), or a channel layout that changed: planar float32
                if converter is None:
                    converter = av.AudioResampler(format="fltp", layout=frame.layout, rate=frame.sample_rate)
                for out in converter.resample(frame):
                    pending.append(out.to_ndarray().astype(np.float32, copy=False))
                    held += pending[-1].shape[-1]
            if held >= block:
                yield pending[0] if len(pending) == 1 else np.concatenate(pending, axis=-1)
                pending, held = [], 0
        if converter is not None:
            for out in converter.resample(None):
                pending.append(out.to_ndarray().astype(np.float32, copy=False))
        if pending:
            yield pending[0] if len(pending) == 1 else np.concatenate(pending, axis=-1)


def _downmix(chunk: np.ndarray) -> np.ndarray:
    """(channels, n) -> the float32 average of the channels. Stereo, by far the commonest, as (L + R) * 0.5:
    the same bits as numpy's mean (halving is exact), in one pass without temporaries."""
    if chunk.shape[0] == 1:
        return chunk[0].astype(np.float32, copy=False)
    if chunk.shape[0] == 2 and chunk.dtype == np.float32:
        out = np.add(chunk[0], chunk[1])
        out *= np.float32(0.5)
        return out
    return chunk.mean(axis=0, dtype=np.float32)


def _checked_mono(path: Path, fmt: str, blocks: Iterator[np.ndarray], info: StreamInfo) -> Iterator[np.ndarray]:
    """Downmix each decoded block, refuse NaN/infinity, count the frames, and turn every third-party
    decoder error into a DecodeError naming the file: the one place both full and region decoding pass."""
    try:
        for chunk in blocks:
            if chunk.ndim != 2:
                chunk = chunk.reshape(1, -1)
            mono = _downmix(chunk)
            # NaN or infinity in any channel survives the average (inf - inf is NaN), so checking the mono
            # block checks them all at a fraction of the cost.
            if not np.isfinite(mono).all():
                raise DecodeError(path, "decoded samples contain NaN or infinity")
            info.source_frames += len(mono)
            if len(mono):
                yield mono
    except DecodeError:
        raise
    except Exception as exc:  # third-party decoders raise many types; name the file and the reason
        reason = str(exc).strip() or type(exc).__name__
        raise DecodeError(path, f"cannot decode {fmt}: {reason}") from exc


def stream_native_mono(path: str | Path, info: StreamInfo | None = None) -> Iterator[np.ndarray]:
    """Yield consecutive blocks of mono float32 audio at the file's own rate (``info.source_rate``).

    Channels are averaged before anything else, as the reference front-ends did. Every third-party
    decoder error becomes a DecodeError naming the file.
    """
    path = Path(path)
    info = info if info is not None else StreamInfo()
    fmt = sniff(path)
    info.format = fmt
    placeholder_size = check_complete(path, fmt)
    if fmt in PEDALBOARD_FORMATS and not placeholder_size:
        info.decoder, blocks = "pedalboard", _pedalboard_blocks(path, info)
    else:
        info.decoder, blocks = "pyav", _pyav_blocks(path, info)
    declared = _flac_declared_frames(path) if fmt == "flac" else 0
    yield from _checked_mono(path, fmt, blocks, info)
    check_declared_length(path, info.source_frames, declared)
    if info.source_frames == 0:
        raise DecodeError(path, f"no audio samples in this {fmt} file")


def check_declared_length(path: Path, decoded: int, declared: int) -> None:
    """Refuse a file that decodes to fewer samples than its header declares (FLAC's STREAMINFO)."""
    if declared and decoded < declared:
        raise DecodeError(path, f"file is truncated or damaged: decoded {decoded} of the "
                                f"{declared} samples its header declares")


class RegionReader:
    """Sample-exact reads of chosen stretches of a file, for analysing a few windows of a long track
    without decoding all of it.

    Only formats whose decoder seeks to the exact sample are offered (``REGION_FORMATS``: pedalboard's
    WAV, AIFF and Ogg Vorbis, and FLAC through FFmpeg, whose frames carry their first sample's number;
    ``tests/analysis/test_regions.py`` checks each against a full decode), and only when the header's length can be
    trusted (:func:`check_complete`); :meth:`open` returns None for anything else, and the caller decodes the
    whole file. Positions are frames at the file's own rate, as
    :func:`stream_native_mono` counts them. Call :meth:`check_end` after reading the last stretch: a FLAC
    that ends before its declared length is refused, as a full decode refuses it.
    """

    def __init__(self, path: Path, info: StreamInfo) -> None:
        self.path, self.info = path, info
        self._file: Any = None  # pedalboard's AudioFile, or PyAV's container for FLAC
        self._handle: Any = None
        self.frames = 0

    @classmethod
    def open(cls, path: Path, info: StreamInfo) -> "RegionReader | None":
        fmt = sniff(path)
        info.format = fmt
        if fmt not in REGION_FORMATS or check_complete(path, fmt):
            return None
        reader = cls(path, info)
        try:
            reader._open_pedalboard() if FORMATS[fmt].regions == "pedalboard" else reader._open_flac()
        except _NoRegions:
            reader.close()
            return None
        except DecodeError:
            reader.close()
            raise
        except Exception as exc:
            reader.close()
            raise DecodeError(path, f"cannot decode {fmt}: {str(exc).strip() or type(exc).__name__}") from exc
        return reader

    def _open_pedalboard(self) -> None:
        from pedalboard.io import AudioFile

        name = _utf8_name(self.path)
        if name is None:
            self._handle = open(self.path, "rb")
        self._file = AudioFile(_source(name, self._handle))
        self.info.decoder = "pedalboard"
        self.frames = _pedalboard_info(self._file, self.info)

    def _open_flac(self) -> None:
        import av

        name = _utf8_name(self.path)
        if name is None:
            self._handle = open(self.path, "rb")
        self._file = av.open(_source(name, self._handle), "r")
        if not self._file.streams.audio:
            raise DecodeError(self.path, "container has no audio stream")
        stream = self._file.streams.audio[0]
        info = self.info
        info.decoder = "pyav"
        info.source_rate, info.channels = int(stream.rate), int(stream.channels)
        self.frames = info.declared_frames = _flac_declared_frames(self.path)
        if self.frames <= 0 or stream.time_base != Fraction(1, stream.rate):
            raise _NoRegions  # no declared length, or timestamps not counted in samples: decode it whole

    def read(self, start: int, stop: int) -> Iterator[np.ndarray]:
        """Mono float32 blocks of frames ``start`` (inclusive) to ``stop`` (exclusive, clipped to the end)."""
        stop = min(stop, self.frames)
        if start >= stop:
            return iter(())
        pedalboard = self.info.decoder == "pedalboard"
        blocks = self._pedalboard_blocks(start, stop) if pedalboard else self._flac_blocks(start, stop)
        return _checked_mono(self.path, self.info.format, blocks, self.info)

    def _pedalboard_blocks(self, start: int, stop: int) -> Iterator[np.ndarray]:
        return _pedalboard_read(self._file, start, stop, self.info.source_rate)

    def _flac_blocks(self, start: int, stop: int) -> Iterator[np.ndarray]:
        import av

        box = self._file
        stream = box.streams.audio[0]
        box.seek(start, stream=stream, backward=True, any_frame=False)  # lands on the frame holding `start` or before
        converter = None
        for frame in box.decode(stream):
            if frame.pts is None:
                raise DecodeError(self.path, "FLAC frame without a timestamp")
            if converter is None:
                if frame.pts > start:
                    raise DecodeError(self.path, f"seeking to sample {start} landed after it, at {frame.pts}")
                converter = av.AudioResampler(format="fltp", layout=frame.layout, rate=frame.sample_rate)
            first = frame.pts
            for out in converter.resample(frame):  # same rate and layout: a format change only, sample for sample
                data = out.to_ndarray().astype(np.float32, copy=False)
                lo, hi = max(start - first, 0), min(stop - first, data.shape[1])
                if hi > lo:
                    yield data[:, lo:hi]
                first += data.shape[1]
            if frame.pts + frame.samples >= stop:
                return

    def check_end(self, end: int) -> None:
        """Called with the frame the last stretch reached: refuse a FLAC shorter than STREAMINFO says."""
        if self.info.format == "flac":
            check_declared_length(self.path, end, self.frames)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class _NoRegions(Exception):
    """This file cannot be read by regions after all; decode it whole."""


def stream_mono(path: str | Path, sample_rate: int, info: StreamInfo | None = None) -> Iterator[np.ndarray]:
    """Yield consecutive blocks of mono float32 audio at ``sample_rate`` (see :class:`RateConverter`)."""
    info = info if info is not None else StreamInfo()
    conv: RateConverter | None = None
    for mono in stream_native_mono(path, info):
        if conv is None:
            conv = RateConverter(info.source_rate, sample_rate)
        out = conv.push(mono)
        if len(out):
            yield out
    if conv is not None:
        tail = conv.finish()
        if len(tail):
            yield tail


@dataclass
class Audio:
    path: Path
    samples: np.ndarray
    sample_rate: int
    info: StreamInfo

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def decode(path: str | Path, sample_rate: int) -> Audio:
    """Whole-file convenience over :func:`stream_mono` (for short files, tests and the exporter)."""
    info = StreamInfo()
    blocks = list(stream_mono(path, sample_rate, info))
    samples = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    return Audio(Path(path), samples, sample_rate, info)


