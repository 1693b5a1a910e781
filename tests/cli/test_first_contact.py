"""First contact and attack: what a new user and an attacker found (issue 26). Each test failed before its fix."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from audiofiles import music_like, write_audio
from conftest import AUDIO, EXPORTER_DATA, ROOT, TRUMPET

from tagger.analysis.decode import decode
from tagger.cli import main
from tagger.config import DEFAULTS_FILE, load_config
from tagger.errors import DecodeError, StoreError, TagWriteError
from tagger.library.store import Store
from tagger.tagging.plan import PROVENANCE, Change, plan_changes
from tagger.tagging.writer import read_fields, write_changes

ORCHESTRA = EXPORTER_DATA / "Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra).ogg"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Never the developer's config or database."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    dst.chmod(0o644)
    return dst


def _user_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg" / "tagger" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- one source for the defaults --------------------------------------------------------------------------

def test_the_root_config_is_exactly_the_runtime_defaults():
    assert (ROOT / "config.yaml").read_bytes() == DEFAULTS_FILE.read_bytes()
    assert replace(load_config(ROOT / "config.yaml"), source="") == replace(load_config(None), source="")


def test_config_init_writes_the_defaults_where_tagger_reads_them(tmp_path, capsys):
    assert main(["config"]) == 0
    assert "not present" in capsys.readouterr().out
    assert main(["config", "--init"]) == 0
    target = tmp_path / "cfg" / "tagger" / "config.yaml"
    assert target.read_bytes() == DEFAULTS_FILE.read_bytes()
    assert load_config(None).source == str(target)
    target.write_text("threads: 1\n")
    assert main(["config", "--init"]) == 2  # an existing file is never overwritten by accident
    assert target.read_text() == "threads: 1\n"
    assert "already exists" in capsys.readouterr().err


# -- files touched for nothing --------------------------------------------------------------------------

def test_a_scan_that_decides_nothing_leaves_the_file_untouched(tmp_path, capsys):
    fields = "\n".join(f"    {f}: {{policy: {p}, max_values: 2, min_score: 1.0, relative: 0.8}}"
                       for f, p in (("genre", "fill"), ("mood", "fill"), ("descriptors", "replace")))
    _user_config(tmp_path, f"models: [musicnn-msd]\nwrite:\n  fields:\n{fields}\n")
    song = _copy(TRUMPET, tmp_path / "lib" / "t.ogg")
    os.utime(song, ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))
    before, st = song.read_bytes(), song.stat()
    assert main(["scan", str(tmp_path / "lib"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["analysed"] == 1 and report["written"] == 0
    assert song.read_bytes() == before and song.stat().st_mtime_ns == st.st_mtime_ns


def test_provenance_only_with_a_value_and_without_scores_by_default():
    cfg = load_config(None)
    empty = {name: [] for name in ("GENRE", "MOOD", "TAGGER_DESCRIPTORS", *PROVENANCE, "TAGGER_LOCKED")}
    kw = {"analyser": ["m@1"], "scores": {"Jazz": 0.7, "Blues": 0.2}, "now": "2026-12-05T00:00:00Z"}
    assert plan_changes(empty, {}, cfg, **kw) == []  # nothing decided: not even provenance
    jazz = {"genre": [("Jazz", "jazz", 0.7)]}
    written = {c.field: c.after for c in plan_changes(empty, jazz, cfg, **kw)}
    assert written["GENRE"] == ["Jazz"] and written["TAGGER_WRITTEN"] == ["GENRE=Jazz"]
    assert "TAGGER_SCORES" not in written and set(written) <= {"GENRE", "TAGGER_MODEL", "TAGGER_DATE", "TAGGER_WRITTEN"}
    with_scores = {c.field: c.after for c in plan_changes(empty, jazz, replace(cfg, scores=True), **kw)}
    assert with_scores["TAGGER_SCORES"] == ["Jazz=0.700", "Blues=0.200"]
    # Same values, another model set: nothing the user would see changes, so the file is not rewritten.
    current = {**empty, "GENRE": ["Jazz"], "TAGGER_MODEL": ["old@0"], "TAGGER_WRITTEN": ["GENRE=Jazz"]}
    assert plan_changes(current, jazz, cfg, **kw) == []


def test_withdrawn_values_take_the_provenance_with_them():
    cfg = load_config(None)
    current = {name: [] for name in ("GENRE", "MOOD", "TAGGER_DESCRIPTORS", *PROVENANCE, "TAGGER_LOCKED")}
    current.update(GENRE=["Jazz"], TAGGER_MODEL=["m@1"], TAGGER_DATE=["d"], TAGGER_WRITTEN=["GENRE=Jazz"],
                   TAGGER_PADDING=["0"], TAGGER_SCORES=["Jazz=0.5"])
    changes = {c.field: c.after for c in plan_changes(current, {}, cfg, analyser="m@1", scores={}, now="d")}
    assert changes == {"GENRE": [], "TAGGER_MODEL": [], "TAGGER_DATE": [], "TAGGER_SCORES": [],
                       "TAGGER_WRITTEN": [], "TAGGER_PADDING": []}  # the padding comes back: the file is as it was


# -- undo gives back the exact bytes of files other tools wrote -----------------------------------------

def _write_then_undo(path: Path) -> None:
    cur = read_fields(path)
    write_changes(path, [Change("GENRE", cur["GENRE"], [*cur["GENRE"], "Blues"]),
                         Change("TAGGER_WRITTEN", [], ["GENRE=Blues"]), Change("TAGGER_MODEL", [], ["m@1"])],
                  expect=None)
    cur = read_fields(path)
    write_changes(path, [Change("MOOD", cur["MOOD"], [*cur["MOOD"], "Sad"]),
                         Change("TAGGER_WRITTEN", cur["TAGGER_WRITTEN"], [*cur["TAGGER_WRITTEN"], "MOOD=Sad"])],
                  expect=None)
    assert main(["undo", str(path)]) == 0


def _libvorbis_clips() -> list[Path]:
    shared = sorted(AUDIO.glob("*.ogg")) if AUDIO.is_dir() else []
    return [TRUMPET, ORCHESTRA, *shared]


@pytest.mark.parametrize("clip", _libvorbis_clips(), ids=lambda p: p.stem[:30])
def test_undo_gives_back_a_libvorbis_file_byte_for_byte(clip, tmp_path):
    """libvorbis pages the comment and setup headers together; mutagen pages a changed comment alone (one page
    header, 27 bytes, more after an undo). A user genre spelled `Genre` keeps its place and spelling."""
    song = _copy(clip, tmp_path / clip.name)
    before = song.read_bytes()
    _write_then_undo(song)
    assert song.read_bytes() == before


def test_undo_gives_back_a_libvorbis_file_with_cover_art_byte_for_byte(tmp_path):
    """A comment header over many pages (100 KB of cover art, as libvorbis-based taggers page it: 255 lacing
    values a page, the setup header starting on the comment's last page); mutagen alone would re-page it into
    4 KB pages. Also a user genre spelled ``Genre`` ahead of the title keeps its place and spelling."""
    import base64

    from mutagen.flac import Picture
    from mutagen.oggvorbis import OggVorbis

    from tagger.tagging.oggpages import save_vorbis_comment

    song = _copy(TRUMPET, tmp_path / "cover.ogg")
    tags = OggVorbis(song).tags
    picture = Picture()
    picture.type, picture.mime, picture.data = 3, "image/jpeg", bytes(range(256)) * 400
    entries = [("Genre", "Folk"), *list(tags), ("METADATA_BLOCK_PICTURE", base64.b64encode(picture.write()).decode())]
    list.clear(tags)
    list.extend(tags, entries)
    assert save_vorbis_comment(song, tags.write(), lambda info: 0)
    before = song.read_bytes()
    _write_then_undo(song)
    assert song.read_bytes() == before


def _ffmpeg_mp3(path: Path, meta: dict[str, str]) -> Path:
    av = pytest.importorskip("av")
    out = av.open(str(path), "w", format="mp3")
    for key, value in meta.items():
        out.metadata[key] = value
    stream = out.add_stream("libmp3lame", rate=44100, layout="stereo")
    audio = np.ascontiguousarray(music_like(4.0, 44100, 2), dtype=np.float32)
    frame = av.AudioFrame.from_ndarray(audio, format="fltp", layout="stereo")
    frame.sample_rate = 44100
    for packet in [*stream.encode(frame), *stream.encode(None)]:
        out.mux(packet)
    out.close()
    return path


def test_undo_gives_back_an_ffmpeg_tagged_mp3_byte_for_byte(tmp_path):
    """FFmpeg writes its frames in its own order; mutagen sorts them by its priority list on every save."""
    song = _ffmpeg_mp3(tmp_path / "ff.mp3", {"title": "Song", "genre": "Rock", "comment": "hi", "date": "1999",
                                             "artist": "Someone"})
    before = song.read_bytes()
    assert before[:3] == b"ID3"
    _write_then_undo(song)
    assert song.read_bytes() == before


def test_undo_takes_folders_and_all_of_the_library(tmp_path, capsys):
    lib = tmp_path / "lib"
    songs = [_copy(c, lib / "a" / c.name) for c in (TRUMPET, ORCHESTRA)]
    untouched = _copy(TRUMPET, lib / "b" / "never-written.ogg")
    originals = [s.read_bytes() for s in songs]
    for s in songs:
        write_changes(s, [Change("MOOD", [], ["Sad"]), Change("TAGGER_WRITTEN", [], ["MOOD=Sad"])], expect=None)
    st = untouched.stat()
    assert main(["undo", "--pretend", str(lib)]) == 0
    assert all(read_fields(s)["MOOD"] == ["Sad"] for s in songs)
    assert main(["undo", str(lib / "a")]) == 0
    assert [s.read_bytes() for s in songs] == originals
    assert untouched.stat().st_mtime_ns == st.st_mtime_ns  # nothing to undo: not opened for writing
    write_changes(songs[0], [Change("MOOD", [], ["Sad"]), Change("TAGGER_WRITTEN", [], ["MOOD=Sad"])], expect=None)
    _user_config(tmp_path, f"library: [{lib}]\n")
    assert main(["undo", "--all"]) == 0
    assert songs[0].read_bytes() == originals[0]
    assert main(["undo"]) == 2 and main(["undo", str(tmp_path / "missing")]) == 1


# -- commands that say what they do ----------------------------------------------------------------------

@pytest.fixture
def scanned(tmp_path, capsys):
    _user_config(tmp_path, "models: [musicnn-msd]\n")
    lib = tmp_path / "lib"
    _copy(TRUMPET, lib / "t.ogg")
    _copy(ORCHESTRA, lib / "o.ogg")
    assert main(["scan", str(lib)]) == 0
    capsys.readouterr()
    return lib


def test_playlist_tags_take_the_values_the_tool_wrote(scanned, capsys):
    jazz = {p.name for p in scanned.iterdir() if "Jazz" in read_fields(p)["GENRE"]}
    assert "t.ogg" in jazz
    assert main(["playlist", "--tags", "Jazz", "--json"]) == 0
    assert {Path(r["path"]).name for r in json.loads(capsys.readouterr().out)} == jazz
    mood = read_fields(scanned / "t.ogg")["MOOD"]
    if mood:  # a mood the tool wrote is asked for the same way
        assert main(["playlist", "--tags", mood[0].lower(), "--json"]) == 0
        assert "t.ogg" in {Path(r["path"]).name for r in json.loads(capsys.readouterr().out)}
    assert main(["playlist", "--tags", "Polka"]) == 2
    err = capsys.readouterr().err
    assert "--tags" in err and "Polka" in err and "Jazz" in err and "Traceback" not in err
    assert main(["playlist", "--tags", "Jazz", "--under", str(scanned / "nowhere")]) == 1
    assert "no track matches" in capsys.readouterr().err


def test_show_says_the_decision_and_the_top_labels(scanned, capsys):
    assert main(["show", str(scanned / "t.ogg"), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "genre: Jazz" in out and len(out.splitlines()) < 15
    assert main(["show", str(scanned / "t.ogg"), "--all"]) == 0
    assert len(capsys.readouterr().out.splitlines()) > 50
    assert main(["show", str(scanned / "t.ogg"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    record = shown["models"][0]
    assert shown["decision"]["genre"]["values"] == record["decided"]["genre"] == ["Jazz"]  # one rule


def test_no_traceback_when_the_reader_closes_the_pipe(scanned, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "tagger", "show", str(scanned / "t.ogg"), "--json", "--all"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    proc.stdout.close()  # like `| head` that has what it wanted
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "Exception ignored" not in err


def test_train_that_trains_nothing_says_why_and_fails(scanned, capsys):
    pytest.importorskip("torch")
    assert main(["train"]) == 1
    captured = capsys.readouterr()
    assert "not trained" in captured.out and "trained nothing" in captured.err


# -- the attack ----------------------------------------------------------------------------------------

def test_random_bytes_named_mp3_are_not_audio(tmp_path):
    rng = np.random.default_rng(5)
    for i, head in enumerate((b"\xff\xfb\x90\x64", b"ID3\x04\x00\x00\x00\x00\x00\x10")):
        for n in range(5):
            path = tmp_path / f"r{i}{n}.mp3"
            path.write_bytes(head + rng.integers(0, 256, 30_000, dtype=np.uint8).tobytes())
            with pytest.raises(DecodeError, match="no run of MPEG audio frames"):
                decode(path, 16000)


def test_headers_that_claim_ten_times_the_audio_are_refused(tmp_path):
    mp3 = write_audio(tmp_path / "x.mp3", music_like(3.0, 44100, 2), 44100)
    assert decode(mp3, 16000).samples.size > 0
    data = bytearray(mp3.read_bytes())
    at = max(data.find(b"Xing"), data.find(b"Info"))
    assert at > 0
    frames = int.from_bytes(data[at + 8:at + 12], "big")
    data[at + 8:at + 12] = (frames * 10).to_bytes(4, "big")
    (tmp_path / "lie.mp3").write_bytes(data)
    with pytest.raises(DecodeError, match="declares"):
        decode(tmp_path / "lie.mp3", 16000)

    aiff = write_audio(tmp_path / "x.aiff", music_like(2.0, 44100, 2), 44100)
    assert decode(aiff, 16000).samples.size > 0
    data = bytearray(aiff.read_bytes())
    comm = data.find(b"COMM") + 8
    frames = int.from_bytes(data[comm + 2:comm + 6], "big")
    data[comm + 2:comm + 6] = (frames * 10).to_bytes(4, "big")
    (tmp_path / "lie.aiff").write_bytes(data)
    with pytest.raises(DecodeError, match="COMM declares"):
        decode(tmp_path / "lie.aiff", 16000)


def test_a_wav_with_a_placeholder_size_is_refused_with_the_reason(tmp_path):
    wav = write_audio(tmp_path / "x.wav", music_like(3.0, 44100, 2), 44100)
    data = bytearray(wav.read_bytes())
    at = data.find(b"data")
    data[at + 4:at + 8] = b"\xff\xff\xff\xff"
    wav.write_bytes(data)
    before = wav.read_bytes()
    with pytest.raises(TagWriteError, match="placeholder"):
        write_changes(wav, [Change("MOOD", [], ["Sad"])], expect=None)
    assert wav.read_bytes() == before


def test_the_id3v1_comment_is_not_copied_into_id3v2(tmp_path):
    from mutagen.id3 import ID3, TIT2

    song = write_audio(tmp_path / "v1.mp3", music_like(3.0, 44100, 2), 44100)
    tag = ID3()
    tag.add(TIT2(encoding=3, text="Song"))
    tag.save(song, v1=0)
    v1 = (b"TAG" + b"Song".ljust(30, b"\0") + b"Artist".ljust(30, b"\0") + b"Album".ljust(30, b"\0") + b"1999"
          + b"my v1 comment".ljust(28, b"\0") + b"\0\x05" + bytes([17]))
    with open(song, "ab") as f:
        f.write(v1)
    write_changes(song, [Change("GENRE", [], ["Jazz"])], expect=None)
    assert song.read_bytes()[-128:] == v1
    assert sorted(ID3(song, load_v1=False).keys()) == ["TCON", "TIT2"]  # no COMM, TALB, TPE1... from ID3v1


def test_a_link_out_of_the_library_is_not_written_through(tmp_path, capsys):
    _user_config(tmp_path, "models: [musicnn-msd]\n")
    outside = _copy(TRUMPET, tmp_path / "elsewhere" / "t.ogg")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "t.ogg").symlink_to(outside)
    before = outside.read_bytes()
    assert main(["scan", str(lib), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert "outside the library" in report["write_failed"][0]["reason"]
    assert outside.read_bytes() == before


@pytest.fixture
def small_db(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(2):
        write_audio(lib / f"{i}.flac", music_like(4.0, 44100, 2, seed=i), 44100)
    db = tmp_path / "db0"
    assert main(["scan", str(lib), "--database", str(db), "--no-write", "--model", "musicnn-msd"]) == 0
    with Store(db) as store:
        store.compact()
    return lib, db


@pytest.mark.parametrize("damage", ["duration", "size", "user", "decided", "slot", "unit-missing", "unit-empty",
                                    "journal-type"])
def test_a_corrupted_database_is_a_clear_error_not_a_traceback(small_db, tmp_path, damage, capsys):
    lib, db0 = small_db
    db = tmp_path / "db"
    shutil.copytree(db0, db)
    for cache in db.glob("records.json.cache"):
        cache.unlink()
    records = json.loads((db / "records.json").read_text())
    bad = {"duration": "long", "size": "big", "user": {"genre": "Jazz"}, "decided": [1], "slot": 99_999}
    if damage in bad:
        for doc in records["tracks"].values():
            doc[damage] = bad[damage]
        (db / "records.json").write_text(json.dumps(records))
    elif damage == "unit-missing":
        (db / "vectors" / "musicnn-msd.unit.f32").unlink()
    elif damage == "unit-empty":
        (db / "vectors" / "musicnn-msd.unit.f32").write_bytes(b"")
    else:
        doc = {"path": "/x", "model": "musicnn-msd", "size": "big"}
        (db / "records.journal").write_text(json.dumps({"op": "put", "id": 7, "doc": doc}) + "\n")
    capsys.readouterr()
    codes = [main([*cmd, "--database", str(db), "--model", "musicnn-msd"])
             for cmd in (["similar", str(lib / "0.flac")], ["playlist", "--seed", str(lib / "0.flac")])]
    err = capsys.readouterr().err
    assert 4 in codes and set(codes) <= {0, 4}, err
    assert str(db) in err and "Traceback" not in err


@pytest.mark.parametrize("content", [b"threads: 1180591620717411303424\n", bytes(range(256)) * 4,
                                     b"\xff\xfe models: [a]\n", b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n"])
def test_broken_config_files_exit_2_naming_the_file(tmp_path, capsys, content):
    path = tmp_path / "cfg" / "tagger" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert main(["show", str(tmp_path / "x.ogg")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err


def test_a_failing_msync_of_the_vectors_is_a_store_error(tmp_path, monkeypatch):
    with Store(tmp_path / "db") as store:
        store.put({"path": "/a.flac", "model": "m", "status": "ok"}, np.ones(3, np.float32), np.ones(2, np.float32))

        def eio(self):
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(np.memmap, "flush", eio)
        with pytest.raises(StoreError, match="Input/output error"):
            store.commit()
        monkeypatch.undo()
    with Store(tmp_path / "db") as store:  # nothing was committed pointing at rows that may be lost
        assert store.get("/a.flac", "m") is None


@pytest.fixture
def tiny_disk(tmp_path):
    """A 32 KB file system (tmpfs), where the machine lets this process mount one."""
    where = tmp_path / "tiny"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


@pytest.mark.parametrize("filled_kb", [0, 20, 28, 31])
def test_a_full_disk_under_the_database_is_exit_4_naming_the_file(tiny_disk, tmp_path, filled_kb, capsys):
    lib = tmp_path / "lib"
    _copy(TRUMPET, lib / "t.ogg")
    if filled_kb:
        (tiny_disk / "fill").write_bytes(bytes(filled_kb * 1024))
    assert main(["scan", str(lib), "--no-write", "--database", str(tiny_disk / "db"), "--model", "musicnn-msd"]) == 4
    err = capsys.readouterr().err
    assert str(tiny_disk / "db") in err and "No space left on device" in err and "Traceback" not in err
