"""The beets plugin (beetsplug/tagger.py) with real beets on a real library: import fills genres and mood from
tagger's database, beets queries them, `beet similar` and `beet tagger-playlist` answer from the embeddings."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from audiofiles import music_like, write_audio
from conftest import EXPORTER_DATA, ROOT

from tagger.config import load_config
from tagger.library.store import Store
from tagger.pipeline.scanner import scan

pytest.importorskip("beets")

TAGGER_CONFIG = """
models: [musicnn-msd]
database: {db}
write:
  enabled: false
  fields:
    mood: {{policy: fill, max_values: 1, min_score: 0.01, relative: 0.5, min_models: 1}}
"""


@pytest.fixture(scope="module")
def library(tmp_path_factory, msd_model):
    root = tmp_path_factory.mktemp("beets")
    lib = root / "music"
    lib.mkdir()
    for clip in EXPORTER_DATA.glob("*.ogg"):
        shutil.copy(clip, lib / clip.name)
    for i in range(3):
        write_audio(lib / f"gen{i}.flac", music_like(5.0 + 2.0 * i, 44100, 2, seed=i), 44100)
    conf = root / "tagger.yaml"
    conf.write_text(TAGGER_CONFIG.format(db=root / "db"))
    cfg = load_config(conf)
    with Store(cfg.database) as store:
        scan([lib], cfg, msd_model, store)
        decided = {r["path"]: r.get("decided") or {} for r in store.records("musicnn-msd")}
    beetsdir = root / "beetsdir"
    beetsdir.mkdir()
    (beetsdir / "config.yaml").write_text(
        f"directory: {lib}\nlibrary: {root / 'beets.db'}\nplugins: [tagger]\n"
        "import: {write: no, copy: no, move: no, autotag: no, quiet: yes, log: null}\n"
        f"tagger: {{config: {conf}}}\n")
    return root, lib, decided, beetsdir


def beet(beetsdir: Path, *args: str) -> str:
    env = {**os.environ, "BEETSDIR": str(beetsdir), "PYTHONPATH": str(ROOT), "HOME": str(beetsdir)}
    run = subprocess.run([sys.executable, "-m", "beets", *args], capture_output=True, text=True, env=env,
                         cwd=beetsdir, timeout=300)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_import_fills_genres_and_mood_and_beets_queries_them(library):
    root, lib, decided, beetsdir = library
    before = {p.name: p.read_bytes() for p in lib.iterdir()}
    beet(beetsdir, "import", str(lib))
    rows = dict(line.split("|", 1) for line in beet(beetsdir, "ls", "-f", "$path|$genres / %ifdef{mood,$mood}").splitlines())
    assert len(rows) == len(decided) == 5
    moods = set()
    for path, d in decided.items():
        genres, mood = rows[path].split(" / ")
        assert genres == "; ".join(d.get("genre", [])), (path, rows[path])
        assert mood == "; ".join(d.get("mood", [])), (path, rows[path])
        moods.update(d.get("mood", []))
    assert any(d.get("genre") for d in decided.values()) and moods  # the check means something
    mood = sorted(moods)[0]
    listed = set(beet(beetsdir, "ls", "-f", "$path", f"mood:{mood}").split())
    assert listed == {p for p, d in decided.items() if mood in d.get("mood", [])}
    assert {p.name: p.read_bytes() for p in lib.iterdir()} == before  # import.write is off: no file touched


def test_similar_and_playlist_answer_from_taggers_embeddings(library):
    root, lib, decided, beetsdir = library
    beet(beetsdir, "import", str(lib))  # idempotent: already imported files are skipped
    out = beet(beetsdir, "similar", "-n", "3", "path:" + str(lib / "gen0.flac"))
    lines = out.splitlines()
    assert len(lines) == 3 and not any("gen0" in line for line in lines)
    scores = [float(line.split()[0]) for line in lines]
    assert scores == sorted(scores, reverse=True)
    m3u = root / "like.m3u8"
    beet(beetsdir, "tagger-playlist", "-n", "4", "-o", str(m3u), "path:" + str(lib / "gen0.flac"))
    paths = [x for x in m3u.read_text().splitlines() if x and not x.startswith("#")]
    assert paths[0] == str(lib / "gen0.flac") and len(paths) == 4 and len(set(paths)) == 4


def test_a_file_tagger_has_not_seen_is_analysed_on_request(library):
    root, lib, decided, beetsdir = library
    new = lib / "later"
    new.mkdir()
    write_audio(new / "late.flac", music_like(12.0, 44100, 2, seed=42), 44100)
    beet(beetsdir, "import", "-s", str(new))  # a singleton: not mistaken for an album already there
    assert beet(beetsdir, "ls", "-f", "%ifdef{mood,$mood}", "path:" + str(new / "late.flac")).strip() == ""
    out = beet(beetsdir, "tagger", "--analyse", "-W", "path:" + str(new / "late.flac"))
    assert "1 item(s) changed" in out
    with Store(root / "db", writer=False) as store:
        rec = store.get(new / "late.flac", "musicnn-msd")
    assert rec is not None and rec["status"] == "ok"
    mood = beet(beetsdir, "ls", "-f", "%ifdef{mood,$mood}", "path:" + str(new / "late.flac")).strip()
    assert mood == "; ".join(rec["decided"].get("mood", [])) != ""
