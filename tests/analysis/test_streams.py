"""Several inference streams: different models' batches run at once, each model's in window order, and the
results are those of one stream (up to the float rounding of a different thread count)."""
from __future__ import annotations

import numpy as np
import pytest
from audiofiles import music_like, write_audio
from conftest import TRUMPET

from tagger.analysis.engine import Engine, TrackFailure, TrackResult
from tagger.models.session import load_model


@pytest.fixture(scope="module")
def trio():
    return [load_model(n, device="cpu", threads=1) for n in ("musicnn-msd", "fcn-jamendo", "musicnn-jamendo")]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    lib = tmp_path_factory.mktemp("streams")
    out = [TRUMPET]
    for i, (seconds, fmt) in enumerate(((70.0, ".flac"), (9.0, ".mp3"), (35.0, ".ogg"))):
        out.append(write_audio(lib / f"t{i}{fmt}", music_like(seconds, 44100, 2, seed=i), 44100))
    bad = lib / "broken.mp3"
    bad.write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 40)  # a header, then no audio
    out.insert(2, bad)
    return out


def _run(models, files, streams: int) -> dict:
    engine = Engine(models, max_batch=4, decode_workers=2, keep_window_tags=True, max_windows=8, streams=streams)
    assert engine.streams == streams
    return {r.path: r for r in engine.analyse(files)}


def test_two_streams_give_one_streams_results_in_window_order(trio, files):
    one, two = _run(trio, files, 1), _run(trio, files, 2)
    assert one.keys() == two.keys() == set(files)
    bad = files[2]
    assert isinstance(one[bad], TrackFailure) and isinstance(two[bad], TrackFailure)
    assert str(bad) in one[bad].reason or bad.name in str(one[bad].error)
    for path in files:
        if path == bad:
            continue
        a, b = one[path], two[path]
        assert isinstance(a, TrackResult) and isinstance(b, TrackResult)
        assert list(a.models) == list(b.models) == [m.card.id for m in trio]
        for mid in a.models:
            ma, mb = a.models[mid], b.models[mid]
            assert ma.n_windows == mb.n_windows > 0
            assert ma.window_tags is not None and mb.window_tags is not None
            # window order kept: each window's tags match the same window's, not just the song-level mean
            assert np.allclose(ma.window_tags, mb.window_tags, atol=1e-4)
            assert np.allclose(ma.tags, mb.tags, atol=1e-4)
            assert np.allclose(ma.embedding, mb.embedding, atol=1e-3)


def test_a_model_failing_in_one_stream_fails_its_files_and_the_run_goes_on(trio, files, monkeypatch):
    broken = load_model("musicnn-jamendo", device="cpu", threads=1)

    def boom(windows):
        raise RuntimeError("no memory left for this batch")

    monkeypatch.setattr(broken, "run_all", boom)
    results = _run([trio[0], broken], files[:2], 2)
    for path in files[:2]:
        r = results[path]
        assert isinstance(r, TrackFailure) and "no memory left" in r.reason
