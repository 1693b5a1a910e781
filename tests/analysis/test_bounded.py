"""Bounded analysis: N windows spread evenly over a track, chosen from the header's length, deterministic."""
from __future__ import annotations

import numpy as np
from conftest import EXPORTER_DATA

from tagger.analysis.engine import Engine, TrackResult
from tagger.analysis.windows import REFERENCE_RATE, REFERENCE_WINDOW, Windower, expected_windows, spread, window_bound
from tagger.models.card import Card, Output


def _card(window=100, hop=100, tail="drop") -> Card:
    return Card(id="t", version="1", sample_rate=1000, window=window, hop=hop, partial_tail=tail,
                outputs=(Output("tags", "sigmoid", ("a",)),))


def test_spread_picks_evenly_and_keeps_the_first_and_last():
    card = _card()
    assert expected_windows(card, 1050) == 10
    keep = spread(card, 1050, 4)
    assert keep == frozenset({0, 3, 6, 9})
    assert spread(card, 1050, 10) is None and spread(card, 1050, 0) is None and spread(card, 0, 4) is None


def test_models_with_long_windows_hear_at_least_as_much_audio_as_the_3_s_models():
    def card(seconds: float, rate: int = 16000, cap: int = 0) -> Card:
        return Card(id="t", version="1", sample_rate=rate, window=int(seconds * rate), hop=int(seconds * rate),
                    outputs=(Output("tags", "sigmoid", ("a",)),), max_windows=cap)

    three = REFERENCE_WINDOW / REFERENCE_RATE
    assert window_bound(card(three), 32) == 32 and window_bound(card(three), 0) == 0
    assert window_bound(card(29.0), 32) == 4  # 116 s: the fewest 29-s windows that cover 32 x 3 s
    assert window_bound(card(29.0), 1) == 1 and window_bound(card(29.0), 10) == 2
    assert window_bound(card(10.0, 32000), 32) == 10 and window_bound(card(10.0, 32000, cap=8), 32) == 8
    assert window_bound(card(1.0), 32) == 32  # shorter windows never get more than the bound
    for seconds in (3.0, 5.0, 10.0, 29.0, 60.0):
        for bound in (1, 4, 16, 32):
            n = window_bound(card(seconds), bound)
            assert 1 <= n <= bound and (n * seconds >= bound * three - 1e-6 or n == bound)


def test_windower_emits_only_the_kept_windows_with_the_right_audio():
    card = _card(tail="end")
    audio = np.arange(1050, dtype=np.float32)
    cutter = Windower(card, spread(card, len(audio), 4))
    out = []
    for block in np.array_split(audio, 7):
        out += cutter.push(block)
    out += cutter.finish()
    starts = [int(w[0]) for w in out]
    assert starts == [0, 300, 600, 900, 950]  # four spread windows, then the end-aligned tail window
    assert all(len(w) == 100 for w in out)


BRAHMS = next(EXPORTER_DATA.glob("Hungarian*.ogg"))


def test_engine_bounded_analysis_is_deterministic_and_close_to_full(msd_model):
    def run(n, regions=True):
        (res,) = list(Engine(msd_model, max_batch=4, max_windows=n, regions=regions).analyse([BRAHMS]))
        assert isinstance(res, TrackResult)
        return res

    full, a, b, whole = run(0), run(4), run(4), run(4, regions=False)
    assert a.n_windows == 4 < full.n_windows
    # Same windows every time; only float rounding may differ with how windows happened to be batched.
    assert np.allclose(a.tags, b.tags, atol=1e-6) and np.allclose(a.embedding, b.embedding, atol=1e-5)
    assert np.abs(a.tags - full.tags).max() < 0.1  # four of its windows already say much the same
    # Four 3-s windows of a two-minute Vorbis file: only their stretches are decoded, and the identity comes
    # from the stored packets; decoding the whole file gives the same windows and the decoded identity.
    assert a.fingerprint == b.fingerprint and a.fingerprint.startswith("pkt:")
    assert whole.fingerprint == full.fingerprint
    assert np.allclose(whole.tags, a.tags, atol=1e-5) and np.allclose(whole.embedding, a.embedding, atol=1e-4)


def _hour_of_music(path) -> float:
    """One hour of real music (the Brahms clip over and over) as FLAC, written in pieces."""
    from pedalboard.io import AudioFile

    from tagger.analysis.decode import decode

    rate = 22050
    clip = decode(BRAHMS, rate).samples.astype(np.float32)
    seconds = 0.0
    with AudioFile(str(path), "w", rate, 1) as f:
        while seconds < 3600:
            f.write(clip[None])
            seconds += len(clip) / rate
    return seconds


def test_memory_stays_bounded_on_a_one_hour_file(tmp_path):
    """A real `tagger scan` of a one-hour file with the default model set, every window analysed (the
    longest a track can keep the engine busy), in its own process: peak resident memory stays under a
    generous 700 MB (measured 221-241 MB; the target for the default set is 500 MB, see bench/)."""
    import json
    import os
    import subprocess
    import sys

    lib = tmp_path / "lib"
    lib.mkdir()
    seconds = _hour_of_music(lib / "hour.flac")
    assert seconds >= 3600
    # VmHWM, not ru_maxrss: Linux carries a forked parent's resident size into the child's ru_maxrss across
    # exec, so after a large test (Ray, torch) the child would report the pytest process's memory.
    code = ("import re, sys; from tagger.cli import main; rc = main(sys.argv[1:]); "
            "print('PEAK', re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, "scan", str(lib), "--no-write", "--json", "--max-windows", "0",
                          "--database", str(tmp_path / "db")], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(EXPORTER_DATA.parent.parent)})
    assert out.returncode == 0, out.stderr[-2000:]
    peak_mb = int(out.stdout.rsplit("PEAK", 1)[1]) / 1024
    report = json.loads(out.stdout.rsplit("PEAK", 1)[0])
    assert report["analysed"] == 1, report
    assert peak_mb < 700, f"peak RSS {peak_mb:.0f} MB"
