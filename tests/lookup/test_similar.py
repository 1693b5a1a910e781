"""Songs like this one: exact search, duplicates, filters, playlists, and the vector store behind them."""
from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
from audiofiles import music_like, native_audio, write_audio
from conftest import AUDIO, needs_shared

from tagger.cli import main
from tagger.config import load_config
from tagger.library.store import Store
from tagger.lookup.similar import Library, playlist, top_k
from tagger.pipeline.scanner import scan


def test_top_k_is_exact_and_deterministic():
    rng = np.random.default_rng(0)
    unit = rng.standard_normal((5000, 32)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    unit[100] = unit[200]  # an exact tie
    valid = rng.random(5000) > 0.1
    q = unit[100].copy()
    idx, scores = top_k(unit, valid, q, 10)
    ref = np.where(valid, unit @ q, -np.inf)
    expected = sorted(range(5000), key=lambda i: (-ref[i], i))[:10]
    assert idx.tolist() == expected
    assert np.allclose(scores, ref[expected])


@pytest.fixture(scope="module")
def library(tmp_path_factory, msd_model):
    """The shared clips plus re-encodes of Vibe Ace: an MP3 at another bitrate and the 44.1 kHz stereo master."""
    if not AUDIO.is_dir():
        pytest.skip(f"shared audio not found at {AUDIO}")
    root = tmp_path_factory.mktemp("sim")
    lib = root / "lib"
    lib.mkdir()
    for clip in AUDIO.glob("*.ogg"):
        shutil.copy(clip, lib / clip.name)

    audio, rate = native_audio(AUDIO / "Kevin_MacLeod_-_Vibe_Ace.ogg")
    write_audio(lib / "vibe-ace-copy.mp3", audio, rate)  # V2 VBR, a different bitrate from the Vorbis original
    cfg = replace(load_config(None), database=root / "db", write_enabled=False)
    with Store(cfg.database) as store:
        report = scan([lib], cfg, msd_model, store)
    assert report.analysed == 7 and not report.failed
    return lib, cfg


VIBE_COPIES = {"Kevin_MacLeod_-_Vibe_Ace.hq.ogg", "vibe-ace-copy.mp3"}


@needs_shared
def test_duplicates_rank_first_when_included_and_vanish_otherwise(library, msd_model):
    lib, cfg = library
    with Store(cfg.database, writer=False) as store:
        view = Library(store, "musicnn-msd", msd_model.spec.labels)
        seed = view.by_path[str(lib / "Kevin_MacLeod_-_Vibe_Ace.ogg")]
        q = view.embedding_of(seed)
        with_dups = view.similar(q, seed, 6, include_duplicates=True)
        names = [h.record["path"].rsplit("/", 1)[1] for h in with_dups]
        assert set(names[:2]) == VIBE_COPIES and all(h.duplicate for h in with_dups[:2])
        assert "Kevin_MacLeod_-_Vibe_Ace.ogg" not in names  # never the seed itself
        without = view.similar(q, seed, 6)
        names2 = [h.record["path"].rsplit("/", 1)[1] for h in without]
        assert not VIBE_COPIES & set(names2) and len(names2) == 4
        assert [h.score for h in without] == sorted((h.score for h in without), reverse=True)
        assert names2 == [h.record["path"].rsplit("/", 1)[1] for h in view.similar(q, seed, 6)]  # deterministic


@needs_shared
def test_similar_cli_json_filters_and_m3u(library, capsys, tmp_path):
    import json

    lib, cfg = library
    db = str(cfg.database)
    seed = str(lib / "sorohanro_-_solo-trumpet-06.ogg")
    assert main(["similar", "--model", "musicnn-msd", seed, "--database", db, "--json", "-n", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 3 and all({"path", "score", "id"} <= set(r) for r in rows)
    assert main(["similar", "--model", "musicnn-msd", seed, "--database", db, "--json", "--not-same-artist", "--under", str(lib),
                 "--m3u", str(tmp_path / "out.m3u8")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(r["path"].startswith(str(lib)) for r in rows)
    m3u = (tmp_path / "out.m3u8").read_text()
    assert m3u.startswith("#EXTM3U\n") and m3u.count("#EXTINF:") == len(rows)
    assert main(["similar", "--model", "musicnn-msd", seed, "--database", db, "--json", "--under", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["similar", "--model", "musicnn-msd", seed, "--database", db, "--tag", "no-such-label"]) == 2  # usage


@needs_shared
def test_playlist_flows_without_duplicates_or_artist_repeats(library, msd_model, capsys, tmp_path):
    lib, cfg = library
    with Store(cfg.database, writer=False) as store:
        view = Library(store, "musicnn-msd", msd_model.spec.labels)
        seed = view.by_path[str(lib / "Kevin_MacLeod_-_Vibe_Ace.ogg")]
        cands = view.similar(view.embedding_of(seed), seed, 20, include_duplicates=True)
        order = playlist(view, cands, seed, 10)
    paths = [r["path"].rsplit("/", 1)[1] for r in order]
    assert paths[0] == "Kevin_MacLeod_-_Vibe_Ace.ogg" and not VIBE_COPIES & set(paths)
    artists = [r.get("artist") for r in order]
    assert all(a is None or a != b for a, b in zip(artists, artists[1:]))
    out = tmp_path / "mellow.m3u8"
    assert main(["playlist", "--model", "musicnn-msd", "--tags", "jazz", "-n", "4", "--database", str(cfg.database), "-o", str(out)]) == 0
    assert out.read_text().count("\n/") == 4


def test_vector_rows_follow_records_through_updates(tmp_path):
    """The unit-embedding matrix is updated in place of no one: new slots, same crash rules as the rest."""
    with Store(tmp_path) as s:
        for i in range(5):
            e = np.zeros(8, np.float32)
            e[i] = 2.0 + i
            s.put({"path": f"/m/{i}.flac", "model": "m", "status": "ok"}, np.zeros(3, np.float32), e)
        s.commit()
        e = np.zeros(8, np.float32)
        e[7] = 5.0
        s.put({"path": "/m/1.flac", "model": "m", "status": "ok"}, np.zeros(3, np.float32), e)
        s.remove("/m/2.flac", "m")
        s.commit()
    with Store(tmp_path, writer=False) as s:
        view = Library(s, "m", ["a", "b", "c"])
        assert len(view.records) == 4
        r1 = view.by_path["/m/1.flac"]
        assert view.embedding_of(r1).tolist() == [0, 0, 0, 0, 0, 0, 0, 1.0]
        hits = view.similar(view.embedding_of(r1), r1, 10)
        assert [h.record["path"] for h in hits] == ["/m/0.flac", "/m/3.flac", "/m/4.flac"]  # ties by slot


def test_similar_for_a_file_outside_the_library(tmp_path, msd_model, capsys):
    import json

    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(3):
        write_audio(lib / f"s{i}.flac", music_like(4.0, 44100, 1, seed=i), 44100)
    cfg = replace(load_config(None), database=tmp_path / "db", write_enabled=False)
    with Store(cfg.database) as store:
        scan([lib], cfg, msd_model, store)
    outside = write_audio(tmp_path / "new.flac", music_like(4.0, 44100, 1, seed=1), 44100)
    assert main(["similar", "--model", "musicnn-msd", str(outside), "--database", str(cfg.database), "--json", "--include-duplicates"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["path"].endswith("s1.flac") and rows[0]["duplicate"]  # the same audio, found as a copy
