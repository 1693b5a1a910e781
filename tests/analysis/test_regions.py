"""Region decoding: with a bounded number of windows, only the stretches holding them are decoded, and the
windows come out as a full decode cuts them."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from audiofiles import write_audio

from tagger.analysis.cut import decode_windows
from tagger.analysis.decode import RegionReader, StreamInfo
from tagger.analysis.formats import REGION_FORMATS, sniff
from tagger.analysis.windows import MAX_FRACTION, Windower, plan_regions, window_bound
from tagger.errors import DecodeError
from tagger.models.card import Card, Output

RATE = 44100


def _card(cid: str, window: float, hop: float, tail: str = "drop", pad: int = 0) -> Card:
    return Card(id=cid, version="1", sample_rate=16000, window=int(window * 16000), hop=int(hop * 16000),
                outputs=(Output("tags", "sigmoid", ("a",)), Output("embedding", "embedding", dim=1)),
                pad_start=pad, pad_end=pad, short_input="repeat", partial_tail=tail).validate()


# A 3-s model with centring pads and a 10-s model with an end-aligned tail window, like the bundled set.
CARDS = [_card("short", 3.0, 2.992, pad=256), _card("long", 10.0, 10.0, tail="end")]


def _track(seconds: float, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = np.sin(2 * np.pi * (220 + 40 * np.sin(t / 7)) * t) * 0.3
    noise = rng.standard_normal(len(t)) * 0.05
    left = (tone + noise).astype(np.float32)
    return np.stack([left, np.roll(left, 17) * 0.8]).astype(np.float32)


@pytest.fixture(scope="module")
def long_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("regions")
    audio = _track(153.0)
    return {ext: write_audio(folder / f"long{ext}", audio, RATE) for ext in (".wav", ".aiff", ".ogg", ".mp3", ".flac",
                                                                                ".m4a")}


def _windows(path, max_windows, regions, wanted=(0, 1)):
    got: dict[int, list[np.ndarray]] = {i: [] for i in wanted}
    d = decode_windows(path, CARDS, list(wanted), max_windows, lambda i, w: got[i].append(w), regions=regions)
    return got, d


@pytest.mark.parametrize("ext", [".wav", ".aiff", ".ogg", ".flac"])
def test_region_windows_match_a_full_decode(long_files, ext):
    path = long_files[ext]
    assert sniff(path) in REGION_FORMATS
    full, df = _windows(path, 4, regions=False)
    part, dp = _windows(path, 4, regions=True)
    assert dp.fingerprint.startswith("pkt:") and not df.fingerprint.startswith("pkt:")
    # 4 spread 3-s windows; as many 10-s windows as hear at least as much (2), plus the long model's tail window
    assert window_bound(CARDS[1], 4) == 2
    assert dp.counts == df.counts == {0: 4, 1: 3}
    assert dp.duration == pytest.approx(df.duration, abs=1e-9)
    for i in (0, 1):
        for a, b in zip(full[i], part[i]):
            assert a.shape == b.shape
            # Same source samples, same resampling phase: only the resampler's float rounding differs.
            assert float(np.abs(a - b).max()) < 1e-5


def test_region_decoding_reads_a_fraction_of_the_track(long_files):
    info = StreamInfo()
    reader = RegionReader.open(long_files[".ogg"], info)
    try:
        plan = plan_regions(CARDS, [0, 1], 4, info.source_rate, reader.frames)
    finally:
        reader.close()
    assert plan is not None
    assert plan.frames < 0.45 * reader.frames
    assert plan == plan_regions(CARDS, [0, 1], 4, info.source_rate, reader.frames)  # deterministic
    starts = [a for a, _ in plan.spans]
    assert all(a % 441 == 0 for a in starts)  # 44.1 kHz and 16 kHz meet every 441 source frames
    assert all(b1 < a2 for (_, b1), (a2, _) in zip(plan.spans, plan.spans[1:]))
    assert plan.spans[-1][1] == reader.frames


def test_no_regions_when_windows_cover_most_of_the_track():
    frames = 150 * RATE
    assert plan_regions(CARDS, [0, 1], 0, RATE, frames) is None  # unbounded
    assert plan_regions(CARDS, [1], 50, RATE, frames) is None  # 150 s of 3-s windows: the long model keeps all 15
    assert plan_regions(CARDS, [0], 45, RATE, frames) is None  # 135 of 150 s: over MAX_FRACTION
    plan = plan_regions(CARDS, [0], 10, RATE, frames)
    assert plan is not None and plan.frames <= MAX_FRACTION * frames


@pytest.mark.parametrize("ext", [".m4a", ".mp3"])
def test_formats_that_cannot_seek_exactly_are_decoded_whole(long_files, ext):
    # AAC: priming samples; MP3 through FFmpeg: it seeks to a frame near the time asked, not to the sample.
    _, d = _windows(long_files[ext], 4, regions=True)
    assert not d.fingerprint.startswith("pkt:")


def test_a_truncated_flac_is_refused_by_regions_as_by_a_full_decode(long_files, tmp_path):
    data = long_files[".flac"].read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) * 2 // 3])  # STREAMINFO still declares the whole track
    for regions in (False, True):
        with pytest.raises(DecodeError, match="truncated or damaged|cannot decode flac"):
            _windows(cut, 4, regions=regions)


def test_packet_fingerprint_ignores_tags_but_not_audio(long_files, tmp_path):
    from mutagen.oggvorbis import OggVorbis

    tagged = shutil.copy(long_files[".ogg"], tmp_path / "tagged.ogg")
    f = OggVorbis(tagged)
    f["title"] = ["x" * 5000]  # a long comment moves every audio page
    f.save()
    other = write_audio(tmp_path / "other.ogg", _track(153.0, seed=4), RATE)
    base = _windows(long_files[".ogg"], 4, regions=True)[1].fingerprint
    assert _windows(tagged, 4, regions=True)[1].fingerprint == base
    assert _windows(other, 4, regions=True)[1].fingerprint != base


def test_skipping_keeps_window_indices_and_refuses_to_cut_across_a_gap():
    card = _card("w", 1.0, 1.0)
    x = np.arange(16000 * 10, dtype=np.float32)
    keep = frozenset({1, 6})
    cut = Windower(card, keep)
    out = cut.push(x[:32000])
    cut.skip(16000 * 4)  # windows 2..5 never decoded
    out += cut.push(x[96000:])
    out += cut.finish()
    assert [int(w[0]) for w in out] == [16000, 96000]
    with pytest.raises(ValueError, match="skipped"):
        Windower(card, frozenset({2})).skip(16000 * 3)
    bad = Windower(card, frozenset({2}))
    bad.push(x[:40000])
    bad.skip(100)  # window 2 (32000..48000) now holds a gap at 40000..40100
    with pytest.raises(ValueError, match="skipped"):
        bad.push(x[40100:])
