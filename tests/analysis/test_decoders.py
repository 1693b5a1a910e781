"""Decoding in worker processes gives the thread path's results; a bad file fails alone; a decoder process
that dies takes only its file with it, and a fresh process decodes the next one."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from audiofiles import music_like, write_audio

from tagger.analysis.engine import Engine, TrackFailure
from tagger.analysis.workers import DecoderProcess


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("dec")
    out = [write_audio(root / f"t{i}{ext}", music_like(4.0 + i, 22050, 1, seed=i), 22050)
           for i, ext in enumerate([".flac", ".mp3", ".ogg", ".wav"])]
    bad = root / "bad.mp3"
    bad.write_bytes(b"not an mp3" * 100)
    fifo = root / "pipe.wav"
    os.mkfifo(fifo)
    return out, bad, fifo


def test_processes_give_the_thread_results(files, msd_model):
    good, bad, fifo = files
    items = [*good, bad, fifo]
    by_thread = {r.path: r for r in Engine(msd_model, max_batch=4).analyse(items)}
    engine = Engine(msd_model, max_batch=4, decode_processes=True)
    try:
        by_process = {r.path: r for r in engine.analyse(items)}
        again = {r.path: r for r in engine.analyse(good[:1])}  # the processes are reused
    finally:
        engine.close()
    assert set(by_process) == set(by_thread)
    for path, want in by_thread.items():
        got = by_process[path]
        assert type(got) is type(want), path
        if isinstance(want, TrackFailure):
            assert got.reason == want.reason
            continue
        np.testing.assert_allclose(got.tags, want.tags, atol=1e-6)
        np.testing.assert_allclose(got.embedding, want.embedding, atol=1e-6)
        assert (got.fingerprint, got.n_windows) == (want.fingerprint, want.n_windows)
    np.testing.assert_allclose(again[good[0]].tags, by_thread[good[0]].tags, atol=1e-6)


def test_a_dead_decoder_fails_its_file_only(files, msd_model, monkeypatch, tmp_path):
    good, _, _ = files
    long = write_audio(tmp_path / "long.wav", music_like(90.0, 22050, 1, seed=9), 22050)  # 30 windows: 5.8 MB
    real = DecoderProcess.decode
    killed: list[int] = []

    def dies_once(self, path, cards, wanted, max_windows, emit, stop, *rest):
        def emit_then_die(i, w):
            emit(i, w)
            if not killed and path == long:
                killed.append(self.proc.pid)
                os.kill(self.proc.pid, signal.SIGKILL)  # what a segfault in a native decoder looks like

        return real(self, path, cards, wanted, max_windows, emit_then_die, stop, *rest)

    monkeypatch.setattr(DecoderProcess, "decode", dies_once)
    engine = Engine(msd_model, max_batch=4, decode_workers=1, decode_processes=True)
    try:
        results = {r.path: r for r in engine.analyse([long, good[0], good[1]])}
    finally:
        engine.close()
    assert killed
    assert isinstance(results[long], TrackFailure) and "decoder process died" in results[long].reason
    assert not isinstance(results[good[0]], TrackFailure) and not isinstance(results[good[1]], TrackFailure)
