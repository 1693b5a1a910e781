"""Decoding every format, by header not by name; gapless MP3; windowing rules."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from audiofiles import ALL_FORMATS, music_like, write_audio

from tagger.analysis.decode import decode
from tagger.analysis.digests import native_digest
from tagger.analysis.formats import sniff
from tagger.analysis.windows import iter_windows
from tagger.errors import DecodeError
from tagger.models.card import Card, Output

DECODER = {".wav": "pedalboard", ".aiff": "pedalboard", ".flac": "pyav", ".ogg": "pedalboard",
           ".mp3": "pyav", ".opus": "pyav", ".m4a": "pyav", ".alac.m4a": "pyav", ".wma": "pyav"}


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    d = tmp_path_factory.mktemp("formats")
    audio = music_like(6.0, 44100, 2)
    return {fmt: write_audio(d / f"clip{fmt}", audio, 44100, fmt) for fmt in ALL_FORMATS}, audio


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_every_format_decodes_to_mono_16k_aligned_with_the_source(library, fmt):
    files, _ = library
    ref = decode(files[".wav"], 16000).samples
    got = decode(files[fmt], 16000)
    assert got.info.decoder == DECODER[fmt]
    assert got.samples.dtype == np.float32 and got.samples.ndim == 1
    assert abs(got.duration - 6.0) < 0.05
    if fmt == ".wma":  # WMA carries no gapless info FFmpeg can use: decoded, but shifted by the codec delay
        return
    # Same timing as the lossless source: no encoder delay left in (gapless), no shift.
    seg = ref[16000:32000]
    lags = np.arange(-300, 301)
    corr = [float(np.dot(got.samples[16000 + lag:32000 + lag], seg)) for lag in lags]
    assert lags[int(np.argmax(corr))] == 0
    lossy = fmt in (".ogg", ".mp3", ".opus", ".m4a", ".wma")
    err = np.abs(got.samples[16000:80000] - ref[16000:80000]).max()
    assert err < (0.2 if lossy else 1e-4)


def test_format_comes_from_the_header_not_the_name(library, tmp_path):
    files, _ = library
    disguised = tmp_path / "really-an-mp3.flac"
    shutil.copy(files[".mp3"], disguised)
    assert sniff(disguised) == "mp3"
    assert decode(disguised, 16000).info.format == "mp3"


@pytest.mark.parametrize("content,reason", [(b"", "empty"), (b"\x89PNG\r\n\x1a\n" + bytes(100), "PNG"),
                                            (bytes(range(256)) * 4, "not a recognised")])
def test_bad_headers_are_named(tmp_path, content, reason):
    p = tmp_path / "bad.mp3"
    p.write_bytes(content)
    with pytest.raises(DecodeError, match=reason) as info:
        decode(p, 16000)
    assert str(p) in str(info.value)


def test_native_digest_ignores_tags_but_not_audio(library, tmp_path):
    files, _ = library
    a = tmp_path / "a.flac"
    shutil.copy(files[".flac"], a)
    before = native_digest(a)
    from mutagen.flac import FLAC

    f = FLAC(a)
    f["GENRE"] = ["Test"]
    f.save()
    assert native_digest(a) == before
    write_audio(a, music_like(6.0, 44100, 2, seed=5), 44100)
    assert native_digest(a) != before


def _spec(**kw):
    base = dict(id="t", version="1", sample_rate=100, window=10, hop=8,
                outputs=(Output("tags", "sigmoid", ("a",)), Output("embedding", "embedding", dim=1)),
                pad_start=1, pad_end=1, short_input="repeat", partial_tail="drop")
    base.update(kw)
    return Card(**base).validate()


def _blocks(x, size):
    return [x[i:i + size] for i in range(0, len(x), size)]


@pytest.mark.parametrize("block", [1, 3, 7, 100])
def test_windows_follow_the_contract_whatever_the_block_size(block):
    x = np.arange(1, 30, dtype=np.float32)  # 29 samples; padded 31 -> windows at 0, 8, 16 (24+10 > 31)
    wins = list(iter_windows(_blocks(x, block), _spec()))
    padded = np.concatenate([[0], x, [0]]).astype(np.float32)
    assert len(wins) == 3
    for i, w in enumerate(wins):
        np.testing.assert_array_equal(w, padded[8 * i: 8 * i + 10])


@pytest.mark.parametrize("block", [1, 4, 100])
def test_a_hop_longer_than_the_window_skips_the_gap(block):
    x = np.arange(1, 50, dtype=np.float32)
    wins = list(iter_windows(_blocks(x, block), _spec(window=5, hop=12, pad_start=0, pad_end=0)))
    assert [w[0] for w in wins] == [1, 13, 25, 37]
    for w in wins:
        np.testing.assert_array_equal(w, np.arange(w[0], w[0] + 5, dtype=np.float32))


def test_short_track_is_repeat_padded():
    x = np.array([1, 2, 3], np.float32)
    (w,) = list(iter_windows(_blocks(x, 2), _spec()))
    np.testing.assert_array_equal(w, [1, 2, 3, 1, 2, 3, 1, 2, 3, 1])
    (z,) = list(iter_windows([x], _spec(short_input="zeros")))
    np.testing.assert_array_equal(z, [1, 2, 3, 0, 0, 0, 0, 0, 0, 0])


def test_partial_tail_can_be_padded_instead_of_dropped():
    x = np.arange(1, 30, dtype=np.float32)
    wins = list(iter_windows([x], _spec(partial_tail="pad")))
    assert len(wins) == 4 and wins[-1][-1] == 0


@pytest.mark.parametrize("block", [1, 4, 100])
def test_end_aligned_tail_hears_the_last_seconds(block):
    """29-s models: the audio after the last full window gets one more window, aligned to the track's end."""
    x = np.arange(1, 30, dtype=np.float32)  # 29 samples, no padding: windows at 0, 8, 16, then 19..29
    wins = list(iter_windows(_blocks(x, block), _spec(partial_tail="end", pad_start=0, pad_end=0)))
    assert len(wins) == 4
    np.testing.assert_array_equal(wins[-1], x[-10:])
    exact = np.arange(1, 27, dtype=np.float32)  # 26 samples: windows at 0, 8, 16 end at 26, nothing left
    assert len(list(iter_windows([exact], _spec(partial_tail="end", pad_start=0, pad_end=0)))) == 3


def test_empty_stream_gives_no_window():
    assert list(iter_windows([], _spec())) == []
