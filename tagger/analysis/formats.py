"""The audio formats, declared once: what the header says, which decoder reads it, whether it seeks to the
exact sample, its tag family and its MIME type. Decoders, the tag writer and the web server all read this table."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tagger.analysis.mp3frames import audio_start
from tagger.errors import DecodeError


@dataclass(frozen=True)
class Format:
    """One audio format as :func:`sniff` names it from the file header."""

    name: str
    decoder: str  # what decodes a whole file: "pedalboard" (libsndfile, libvorbis) or "pyav" (FFmpeg)
    regions: str | None  # what reads a stretch alone, seeking to the exact sample (RegionReader); None: no region reads
    tags: str | None  # tag family the writer speaks ("id3", "vorbis", "mp4"); None: not tagged by this tool
    mime: str
    suffixes: tuple[str, ...]


# FLAC goes through FFmpeg: pedalboard fills a truncated FLAC with silence up to the declared length,
# FFmpeg stops where the data stops, so the shortfall against STREAMINFO's sample count is visible.
# MP3 goes through FFmpeg because it decodes it twice as fast as pedalboard (12 full-length 44.1-kHz tracks:
# the default scan 10 % faster, no decision changed) and trims the encoder delay and padding itself; FFmpeg
# seeks MP3 to a frame near the time asked, not to the sample, so an MP3 is always decoded whole. FFmpeg's
# Vorbis decoder is faster too on its own, but the scan was not (same CPU time within noise on the same 12
# tracks as Vorbis), so Vorbis stays with pedalboard, whose libvorbis also seeks to the exact sample.
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("wav", "pedalboard", "pedalboard", "id3", "audio/wav", ("wav",)),
    Format("aiff", "pedalboard", "pedalboard", "id3", "audio/aiff", ("aif", "aiff", "aifc")),
    Format("vorbis", "pedalboard", "pedalboard", "vorbis", "audio/ogg", ("ogg", "oga")),
    Format("mp3", "pyav", None, "id3", "audio/mpeg", ("mp3",)),
    Format("flac", "pyav", "pyav", "vorbis", "audio/flac", ("flac",)),
    Format("mp4", "pyav", None, "mp4", "audio/mp4", ("m4a", "mp4", "m4b")),
    Format("opus", "pyav", None, "vorbis", "audio/ogg", ("opus",)),
    Format("asf", "pyav", None, None, "audio/x-ms-wma", ("wma",)),
    Format("ogg-other", "pyav", None, None, "audio/ogg", ()),
)}
PEDALBOARD_FORMATS = frozenset(n for n, f in FORMATS.items() if f.decoder == "pedalboard")
PYAV_FORMATS = frozenset(n for n, f in FORMATS.items() if f.decoder == "pyav")
REGION_FORMATS = frozenset(n for n, f in FORMATS.items() if f.regions is not None)


def sniff(path: str | Path) -> str:
    """Name the container/codec family from the file header; raise DecodeError for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise DecodeError(path, f"cannot read file: {exc.strerror or exc}") from exc
    if not head:
        raise DecodeError(path, "file is empty (0 bytes)")
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        if b"OpusHead" in head[:200]:
            return "opus"
        if b"\x01vorbis" in head[:200]:
            return "vorbis"
        return "ogg-other"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:16] == bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"):
        return "asf"
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE6 == 0xE2):
        # An ID3 tag or a frame sync (layer III) says MP3; a run of whole frames must follow, or random bytes
        # that happen to begin like one would be "decoded" into a fraction of a second of noise.
        if audio_start(str(path)) is None:
            raise DecodeError(path, "not audio: begins like an MP3 but holds no run of MPEG audio frames")
        return "mp3"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        raise DecodeError(path, "not audio: this is a PNG image")
    raise DecodeError(path, "not a recognised audio format (unknown file header)")
