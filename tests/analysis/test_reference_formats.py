"""The shared clips, converted to every writable format, still give the reference song-level tags."""
from __future__ import annotations

import numpy as np
from audiofiles import native_audio, write_audio
from conftest import REFERENCE, needs_shared, reference_clips

from tagger.analysis.engine import Engine

# The clips already are Ogg Vorbis, so the originals stand for that format: a Vorbis-to-Vorbis re-encode
# (pedalboard caps 22 kHz mono Vorbis near 320 kbps) measures generation loss (up to 0.013), not the tagger.
FORMATS = [".wav", ".flac", ".mp3", ".aiff", ".opus", ".m4a"]


@needs_shared
def test_song_level_tags_in_every_format_match_the_reference(msd_model, tmp_path):
    clips = reference_clips()
    files = {}
    for clip in clips:
        audio, rate = native_audio(clip)
        for fmt in FORMATS:
            files[(clip.stem, fmt)] = write_audio(tmp_path / f"{clip.stem}{fmt}", audio, rate, high_quality=True)
        files[(clip.stem, ".ogg")] = clip
    by_path = {r.path: r for r in Engine(msd_model).analyse(files.values())}
    tags = {key: by_path[p].tags for key, p in files.items()}
    worst = {}
    for (stem, fmt), vec in tags.items():
        ref = np.load(REFERENCE / "MSD_musicnn" / f"{stem}.npz")["taggram"].mean(axis=0)
        worst[fmt] = max(worst.get(fmt, 0.0), float(np.abs(vec - ref).max()))
    assert all(v <= 0.01 for v in worst.values()), sorted(worst.items())
    for clip in clips:  # an MP3 tags like its lossless source
        assert np.abs(tags[(clip.stem, ".mp3")] - tags[(clip.stem, ".flac")]).max() <= 0.01
