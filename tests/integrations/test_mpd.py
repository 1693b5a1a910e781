"""`tagger mpd` against a real MPD started by the test, and `tagger playlist --relative-to`."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import mutagen
import pytest
from audiofiles import music_like, write_audio
from conftest import running_mpd

from tagger.cli import main
from tagger.config import load_config
from tagger.integrations.mpd import MpdClient, MpdError
from tagger.library.store import Store
from tagger.pipeline.scanner import scan

MPD = shutil.which("mpd")
ARTISTS = ["Ann", "Ann", "Ann", "Bob", "Bob", "Cy", "Cy"]


@pytest.fixture(scope="module")
def library(tmp_path_factory, msd_model):
    root = tmp_path_factory.mktemp("mpd")
    music = root / "music"
    (music / "a").mkdir(parents=True)
    for i, artist in enumerate(ARTISTS):
        path = write_audio(music / "a" / f"{i}.flac", music_like(5.0 + 1.5 * i, 44100, 2, seed=i), 44100)  # distinct lengths: not copies
        f = mutagen.File(path)
        f["ARTIST"], f["TITLE"] = [artist], [f"Song {i}"]
        f.save()
    shutil.copy(music / "a" / "0.flac", music / "a" / "0-copy.flac")  # the same recording twice
    cfg = replace(load_config(None), database=root / "db", write_enabled=False)
    with Store(cfg.database) as store:
        scan([music], cfg, msd_model, store)
    return root, music, cfg


def test_playlist_paths_relative_to_a_music_directory(library, capsys):
    root, music, cfg = library
    out = root / "list.m3u8"
    assert main(["playlist", "--seed", str(music / "a" / "3.flac"), "-n", "4", "--relative-to", str(music),
                 "-o", str(out), "--database", str(cfg.database)]) == 0
    paths = [line for line in out.read_text().splitlines() if line and not line.startswith("#")]
    assert paths[0] == "a/3.flac" and all(p.startswith("a/") and (music / p).is_file() for p in paths)
    capsys.readouterr()
    assert main(["playlist", "--seed", str(music / "a" / "3.flac"), "-n", "2", "--relative-to", str(root / "other"),
                 "--database", str(cfg.database)]) == 2  # a track outside DIR could not be played by path
    assert "--relative-to" in capsys.readouterr().err


@pytest.mark.skipif(MPD is None, reason="no mpd binary (apt-get install mpd)")
def test_mpd_queue_is_kept_full_of_similar_tracks(library, tmp_path, capsys):
    root, music, cfg = library
    with running_mpd(music, tmp_path) as sock, MpdClient(str(sock)) as mpd:
        mpd.command("add", "a/0.flac")
        mpd.command("play", "0")
        assert main(["mpd", "--host", str(sock), "--once", "--ahead", "3", "--database", str(cfg.database)]) == 0
        queue = [s["file"] for s in mpd.songs("playlistinfo")]
        assert len(queue) == 4 and len(set(queue)) == 4, queue
        assert "a/0-copy.flac" not in queue  # a copy of the recording playing is never queued
        artists = [ARTISTS[int(Path(f).stem)] for f in queue]
        assert all(a != b for a, b in zip(artists[1:], artists[2:])), artists  # never the same artist twice
        assert main(["mpd", "--host", str(sock), "--once", "--ahead", "3", "--database", str(cfg.database)]) == 0
        assert len(mpd.songs("playlistinfo")) == 4  # already full: nothing more
        assert "nothing queued" in capsys.readouterr().out
        with pytest.raises(MpdError, match="nosuchcommand"):
            mpd.command("nosuchcommand")


def test_an_unreachable_mpd_is_a_clear_error(library, tmp_path, capsys):
    _, _, cfg = library
    assert main(["mpd", "--host", str(tmp_path / "no.sock"), "--once", "--database", str(cfg.database)]) == 1
    assert "cannot connect to MPD" in capsys.readouterr().err
