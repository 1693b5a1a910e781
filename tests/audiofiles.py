"""Write test audio in every supported format: pedalboard for wav/aiff/flac/ogg/mp3, PyAV for the rest."""
from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np

PEDALBOARD = {".wav": {}, ".aiff": {}, ".flac": {}, ".ogg": {"quality": "192 kbps"}, ".mp3": {"quality": "V2"}}
PYAV = {".opus": ("ogg", "libopus", 48000, "flt"), ".m4a": ("mp4", "aac", None, "fltp"),
        ".alac.m4a": ("mp4", "alac", None, "s16p"), ".wma": ("asf", "wmav2", None, "fltp")}
ALL_FORMATS = [*PEDALBOARD, *PYAV]
# Near-transparent settings, for tests that compare against a reference: re-encoding already lossy
# clips at everyday bitrates moves song-level tags by up to ~0.03 (generation loss, measured).
HIGH_QUALITY = {".ogg": {"quality": "500 kbps"}, ".mp3": {"quality": "V0"}, ".opus": 256_000, ".m4a": 320_000}


def write_audio(path: Path, audio: np.ndarray, rate: int, fmt: str | None = None, high_quality: bool = False) -> Path:
    """``audio`` is (channels, n) float32 in [-1, 1]; ``fmt`` is one of ALL_FORMATS (default: the suffix)."""
    if fmt is None:
        fmt = ".alac.m4a" if path.name.endswith(".alac.m4a") else path.suffix
    if fmt in PEDALBOARD:
        from pedalboard.io import AudioFile

        if path.suffix != fmt:
            raise ValueError(f"pedalboard picks the format from the name: {path} is not {fmt}")
        opts = HIGH_QUALITY.get(fmt, PEDALBOARD[fmt]) if high_quality else PEDALBOARD[fmt]
        with AudioFile(str(path), "w", rate, audio.shape[0], **opts) as f:
            f.write(audio)
        return path
    container_fmt, codec, forced_rate, sample_fmt = PYAV[fmt]
    import av

    out_rate = forced_rate or rate
    if out_rate != rate:
        import soxr

        audio = soxr.resample(audio.T, rate, out_rate, "HQ").T.astype(np.float32)
    layout = {1: "mono", 2: "stereo"}.get(audio.shape[0], f"{audio.shape[0]}c")
    with av.open(str(path), "w", format=container_fmt) as box:
        stream = box.add_stream(codec, rate=out_rate, layout=layout)
        if codec == "wmav2":
            stream.bit_rate = 128000
        if high_quality and fmt in HIGH_QUALITY:
            stream.bit_rate = HIGH_QUALITY[fmt]
        frame_len = 1024
        pts = 0
        for start in range(0, audio.shape[1], frame_len):
            chunk = np.ascontiguousarray(audio[:, start:start + frame_len])
            if sample_fmt == "s16p":
                chunk = np.clip(chunk * 32767, -32768, 32767).astype(np.int16)
            if sample_fmt == "flt":  # packed
                frame = av.AudioFrame.from_ndarray(chunk.T.reshape(1, -1).copy(), format="flt", layout=layout)
            else:
                frame = av.AudioFrame.from_ndarray(chunk, format=sample_fmt, layout=layout)
            frame.sample_rate = out_rate
            frame.pts = pts
            frame.time_base = Fraction(1, out_rate)
            pts += chunk.shape[1]
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode(None):
            box.mux(packet)
    return path


def music_like(seconds: float, rate: int = 44100, channels: int = 2, seed: int = 0) -> np.ndarray:
    """Chords with a beat and a little noise: enough structure for codecs and the model to chew on."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    notes = rng.choice([220.0, 261.6, 329.6, 392.0, 440.0], size=3, replace=False)
    tone = sum(np.sin(2 * np.pi * f * t) for f in notes) / 3
    beat = (np.sin(2 * np.pi * 2 * t) > 0.95) * rng.standard_normal(len(t)) * 0.5
    mono = 0.4 * tone * (0.6 + 0.4 * np.sin(2 * np.pi * 0.25 * t)) + 0.2 * beat + 0.01 * rng.standard_normal(len(t))
    return np.stack([mono * (1.0 - 0.15 * c) for c in range(channels)]).astype(np.float32)


# -- files as users have them: their own tags, a library with good and broken files ----------------------
USER = {"ARTIST": "Some Artist", "TITLE": "A Title", "ALBUM": "An Album"}
RG, MBID = "-6.20 dB", "a1b2c3d4-0000-4000-8000-123456789abc"


def with_user_tags(tmp: Path, case: str) -> Path:
    fmt = case.split("-")[0]
    path = write_audio(tmp / f"song{fmt}", music_like(3.0, 44100, 2), 44100)
    if fmt in (".mp3", ".aiff", ".wav"):
        from mutagen.aiff import AIFF
        from mutagen.id3 import TALB, TIT2, TPE1, TXXX, UFID
        from mutagen.mp3 import MP3
        from mutagen.wave import WAVE

        f = {".mp3": MP3, ".aiff": AIFF, ".wav": WAVE}[fmt](path)
        f.add_tags()
        f.tags.add(TPE1(encoding=1, text=[USER["ARTIST"]]))
        f.tags.add(TIT2(encoding=1, text=[USER["TITLE"]]))
        f.tags.add(TALB(encoding=1, text=[USER["ALBUM"]]))
        f.tags.add(TXXX(encoding=1, desc="replaygain_track_gain", text=[RG]))
        f.tags.add(UFID(owner="http://musicbrainz.org", data=MBID.encode()))
        f.save(v2_version=3 if case.endswith("v23") else 4)
    elif fmt == ".m4a":
        from mutagen.mp4 import MP4, MP4FreeForm

        f = MP4(path)
        f["\xa9ART"], f["\xa9nam"], f["\xa9alb"] = [USER["ARTIST"]], [USER["TITLE"]], [USER["ALBUM"]]
        f["----:com.apple.iTunes:replaygain_track_gain"] = [MP4FreeForm(RG.encode())]
        f["----:com.apple.iTunes:MusicBrainz Track Id"] = [MP4FreeForm(MBID.encode())]
        f.save()
    else:
        import mutagen

        f = mutagen.File(path)
        for k, v in USER.items():
            f[k] = [v]
        f["REPLAYGAIN_TRACK_GAIN"], f["MUSICBRAINZ_TRACKID"] = [RG], [MBID]
        f.save()
    return path


def good_and_bad(lib: Path) -> tuple[list[Path], list[Path]]:
    good, bad = [], []
    music = music_like(8.0, 44100, 2)
    for fmt in (".mp3", ".flac", ".ogg", ".opus", ".m4a", ".wav", ".aiff"):
        good.append(write_audio(lib / f"song{fmt}", music, 44100))
    good.append(write_audio(lib / "short.flac", music_like(0.5, 44100, 2, seed=2), 44100))
    good.append(write_audio(lib / "silence.flac", np.zeros((1, 44100 * 600), np.float32), 44100))
    good.append(write_audio(lib / "lowrate.wav", music_like(4.0, 8000, 1, seed=3), 8000))
    good.append(write_audio(lib / "surround.flac", music_like(4.0, 96000, 6, seed=4), 96000))
    weird = os.path.join(os.fsencode(lib), b"caf\xe9-\xff.flac")
    shutil.copy(good[1], weird)
    good.append(Path(os.fsdecode(weird)))
    (lib / "empty.mp3").write_bytes(b"")
    (lib / "noise.mp3").write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    (lib / "noise.flac").write_bytes(np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    (lib / "image.mp3").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2000))
    bad += [lib / n for n in ("empty.mp3", "noise.mp3", "noise.flac", "image.mp3")]
    for fmt in (".flac", ".mp3", ".wav"):
        src = (lib / f"song{fmt}").read_bytes()
        for pct in (1, 50, 99):
            p = lib / f"cut{pct}{fmt}"
            p.write_bytes(src[: len(src) * pct // 100])
            bad.append(p)
    return good, bad


def native_audio(path):
    """A Vorbis file's audio at its own rate, as the decoder delivers it: (channels, n), rate."""
    from tagger.analysis.decode import StreamInfo, _pedalboard_blocks

    info = StreamInfo()
    audio = np.concatenate(list(_pedalboard_blocks(path, info)), axis=1)
    return audio, info.source_rate
