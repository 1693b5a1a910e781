"""Write test audio in every supported format: pedalboard for wav/aiff/flac/ogg/mp3, PyAV for the rest."""
from __future__ import annotations

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
