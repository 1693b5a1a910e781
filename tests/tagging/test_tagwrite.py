"""Per-format contract of the tag writer: the right frames/atoms/comments, audio untouched, refusals."""
from __future__ import annotations

import os
import stat
from dataclasses import replace

import pytest
from audiofiles import music_like, write_audio
from mutagen.flac import FLAC
from mutagen.id3 import ID3
from mutagen.mp4 import MP4
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis

from tagger.analysis.digests import native_digest
from tagger.config import load_config
from tagger.errors import TagWriteError
from tagger.tagging.plan import Change, plan_changes, plan_undo
from tagger.tagging.writer import read_fields, write_changes

WRITABLE = [".mp3", ".flac", ".ogg", ".opus", ".m4a", ".wav", ".aiff"]
CHANGES = [Change("GENRE", [], ["Jazz", "Blues"]), Change("MOOD", [], ["Mellow", "chill"]),
           Change("TAGGER_DESCRIPTORS", [], ["instrumental", "1960s"]), Change("TAGGER_MODEL", [], ["m@1"])]


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    d = tmp_path_factory.mktemp("orig")
    audio = music_like(2.0, 44100, 2)
    return {fmt: write_audio(d / f"o{fmt}", audio, 44100) for fmt in WRITABLE}


@pytest.fixture
def copy(originals, tmp_path):
    def make(fmt):
        p = tmp_path / f"track{fmt}"
        p.write_bytes(originals[fmt].read_bytes())
        return p
    return make


@pytest.mark.parametrize("fmt", WRITABLE)
def test_write_verify_and_read_back(copy, fmt):
    p = copy(fmt)
    audio = native_digest(p)
    st = os.stat(p)
    write_changes(p, CHANGES, expect=(st.st_size, st.st_mtime_ns))
    assert native_digest(p) == audio
    got = read_fields(p)
    assert got["GENRE"] == ["Jazz", "Blues"] and got["MOOD"] == ["Mellow", "chill"]
    assert got["TAGGER_DESCRIPTORS"] == ["instrumental", "1960s"] and got["TAGGER_MODEL"] == ["m@1"]
    assert not [x for x in p.parent.iterdir() if x.name.startswith(".")]  # no temp file left


def test_multi_values_as_each_format_expects(copy):
    mp3, flac, ogg, opus, m4a = (copy(f) for f in (".mp3", ".flac", ".ogg", ".opus", ".m4a"))
    for p in (mp3, flac, ogg, opus, m4a):
        write_changes(p, CHANGES, expect=None)
    id3 = ID3(mp3)
    assert id3.version[:2] == (2, 4)
    assert id3.getall("TCON")[0].text == ["Jazz", "Blues"]  # one multi-string frame
    assert id3.getall("TMOO")[0].text == ["Mellow", "chill"]
    assert id3.getall("TXXX:TAGGER_DESCRIPTORS")[0].text == ["instrumental", "1960s"]
    for cls, p in ((FLAC, flac), (OggVorbis, ogg), (OggOpus, opus)):
        comments = [(k.upper(), v) for k, v in cls(p).tags]
        assert ("GENRE", "Jazz") in comments and ("GENRE", "Blues") in comments  # repeated comments
        assert ("MOOD", "Mellow") in comments
    tags = MP4(m4a).tags
    assert tags["\xa9gen"] == ["Jazz", "Blues"]
    assert [bytes(v).decode() for v in tags["----:com.apple.iTunes:MOOD"]] == ["Mellow", "chill"]


def test_id3v23_joins_values_and_keeps_mood_in_txxx(copy):
    p = copy(".mp3")
    write_changes(p, CHANGES, expect=None, id3_version=3, v23_sep="; ")
    id3 = ID3(p)
    assert id3.version[:2] == (2, 3)
    assert id3.getall("TCON")[0].text == ["Jazz; Blues"]
    assert not id3.getall("TMOO") and id3.getall("TXXX:MOOD")[0].text == ["Mellow; chill"]


@pytest.mark.parametrize("fmt", WRITABLE)
def test_no_change_leaves_the_file_byte_identical(copy, fmt):
    p = copy(fmt)
    before, st = p.read_bytes(), os.stat(p)
    write_changes(p, [], expect=(st.st_size, st.st_mtime_ns))
    assert p.read_bytes() == before and os.stat(p).st_mtime_ns == st.st_mtime_ns


def test_read_only_file_is_left_alone(copy):
    """Even as root (where os.access ignores modes) a file marked read-only is not rewritten."""
    p = copy(".flac")
    p.chmod(0o444)
    before = p.read_bytes()
    with pytest.raises(TagWriteError, match="read-only"):
        write_changes(p, CHANGES, expect=None)
    assert p.read_bytes() == before and stat.S_IMODE(os.stat(p).st_mode) == 0o444


def test_file_changed_since_analysis_is_left_alone(copy):
    p = copy(".mp3")
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    before = p.read_bytes()
    with pytest.raises(TagWriteError, match="changed since"):
        write_changes(p, CHANGES, expect=(st.st_size, st.st_mtime_ns))
    assert p.read_bytes() == before


def test_mode_is_kept(copy):
    p = copy(".ogg")
    p.chmod(0o640)
    write_changes(p, CHANGES, expect=None)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640


# -- label choice and plans (pure) ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def cfg():
    return load_config(None)


def _plan(cfg, current, genres, **kw):
    sel = {"genre": [(g, g, 0.5) for g in genres], "mood": [], "descriptors": []}
    return {c.field: c.after for c in plan_changes(current, sel, cfg, analyser="m@1", scores={"jazz": 0.5}, now="T", **kw)}


def test_fill_never_touches_a_users_genre(cfg):
    assert "GENRE" not in _plan(cfg, {"GENRE": ["Folk"]}, ["jazz"])
    assert _plan(cfg, {}, ["jazz"])["GENRE"] == ["jazz"]


def test_merge_and_replace(cfg):
    merge = replace(cfg, fields={**cfg.fields, "genre": replace(cfg.fields["genre"], policy="merge")})
    assert _plan(merge, {"GENRE": ["Folk"]}, ["jazz", "folk"])["GENRE"] == ["Folk", "jazz"]
    rep = replace(cfg, fields={**cfg.fields, "genre": replace(cfg.fields["genre"], policy="replace")})
    assert _plan(rep, {"GENRE": ["Folk"]}, ["jazz"])["GENRE"] == ["jazz"]
    assert "GENRE" not in _plan(rep, {"GENRE": ["Folk"]}, [])  # nothing to offer: keep theirs


def test_own_earlier_values_are_replaced_not_kept(cfg):
    current = {"GENRE": ["jazz"], "TAGGER_WRITTEN": ["GENRE=jazz"], "TAGGER_MODEL": ["m@0"]}
    plan = _plan(cfg, current, ["blues"])
    assert plan["GENRE"] == ["blues"] and plan["TAGGER_WRITTEN"] == ["GENRE=blues"]


def test_unchanged_file_gets_no_plan(cfg):
    first = _plan(cfg, {}, ["jazz"])
    current = {k: v for k, v in first.items()}
    assert _plan(cfg, current, ["jazz"]) == {}


def test_undo_removes_exactly_what_was_written(cfg):
    current = {"GENRE": ["Folk", "jazz"], "TAGGER_WRITTEN": ["GENRE=jazz"], "TAGGER_MODEL": ["m@1"],
               "TAGGER_DESCRIPTORS": ["instrumental"]}
    plan = {c.field: c.after for c in plan_undo(current)}
    assert plan["GENRE"] == ["Folk"] and plan["TAGGER_MODEL"] == [] and plan["TAGGER_DESCRIPTORS"] == []


def _v23_file(copy):
    from mutagen.id3 import TDRC, TIT2, TMOO

    p = copy(".mp3")
    tag = ID3()
    tag.add(TIT2(encoding=1, text=["Old song"]))
    tag.add(TDRC(encoding=1, text=["2001-05-06"]))
    tag.add(TMOO(encoding=1, text=["Calm"]))
    tag.save(p, v2_version=3)
    return p


def test_a_users_id3v23_tag_stays_v23_and_is_a_real_v23_tag(copy, cfg):
    p = _v23_file(copy)
    current = read_fields(p)  # default configuration: id3_version 4
    plan = plan_changes(current, {"genre": [("Jazz", "jazz", .5), ("Blues", "blues", .4)], "mood": [],
                                  "descriptors": []}, cfg, analyser="m@1", scores={}, now="T")
    write_changes(p, plan, expect=None)
    id3 = ID3(p)
    raw = p.read_bytes()[:4096]
    assert id3.version[:2] == (2, 3) and b"TYER" in raw and b"TDRC" not in raw and b"TMOO" not in raw
    fields = read_fields(p)
    assert fields["GENRE"] == ["Jazz", "Blues"] and fields["MOOD"] == ["Calm"]  # the user's mood kept, in TXXX
    assert fields["TAGGER_WRITTEN"] == ["GENRE=Jazz", "GENRE=Blues"]  # survives the v2.3 join
    again = plan_changes(fields, {"genre": [("Jazz", "jazz", .5), ("Blues", "blues", .4)], "mood": [],
                                  "descriptors": []}, cfg, analyser="m@1", scores={}, now="T")
    assert again == []  # a rescan finds nothing to rewrite
    write_changes(p, plan_undo(read_fields(p)), expect=None)
    fields = read_fields(p)
    assert fields["GENRE"] == [] and fields["TAGGER_WRITTEN"] == [] and fields["MOOD"] == ["Calm"]
    assert ID3(p).version[:2] == (2, 3)


def test_id3v1_is_kept_byte_for_byte_and_never_copied_into_v2(copy, cfg):
    import mutagen.id3
    from mutagen.id3 import TCON, TIT2

    p = copy(".mp3")
    tag = ID3()
    tag.add(TIT2(text=["Old"]))
    tag.add(TCON(text=["Rock"]))
    tag.save(p, v1=2)
    mutagen.id3.delete(p, delete_v1=False, delete_v2=True)
    v1 = p.read_bytes()[-128:]
    current = read_fields(p)
    assert current["GENRE"] == ["Rock"]  # the user's ID3v1 genre counts: fill leaves GENRE alone
    plan = plan_changes(current, {"genre": [("Jazz", "jazz", .5)], "mood": [("Calm", "calm", .4)],
                                  "descriptors": []}, cfg, analyser="m@1", scores={}, now="T")
    assert "GENRE" not in {c.field for c in plan}
    write_changes(p, plan, expect=None)
    data = p.read_bytes()
    size = data[6:10]
    v2 = data[:10 + ((size[0] << 21) | (size[1] << 14) | (size[2] << 7) | size[3])]
    assert data[-128:] == v1 and b"TCON" not in v2 and b"TIT2" not in v2 and b"TMOO" in v2


@pytest.mark.parametrize("fmt", [".mp3", ".wav", ".aiff"])
def test_undo_on_a_file_that_had_no_tag_leaves_no_empty_tag_behind(copy, fmt):
    p = copy(fmt)
    before = p.read_bytes()
    written = ["GENRE=Jazz", "GENRE=Blues", "MOOD=Mellow", "MOOD=chill"]
    write_changes(p, CHANGES + [Change("TAGGER_WRITTEN", [], written)], expect=None)
    assert p.read_bytes() != before
    write_changes(p, plan_undo(read_fields(p)), expect=None)
    assert p.read_bytes() == before  # byte for byte the file it was


def _corrupt_after_save(monkeypatch):
    """Make every tag save also change one byte in the middle of the file (inside the audio data)."""
    import tagger.tagging.tagio as tagio

    real_save = tagio.TagFile.save

    def save(self, padding=None):
        real_save(self, padding)
        data = bytearray(self.path.read_bytes())
        data[len(data) // 2] ^= 0x01
        self.path.write_bytes(bytes(data))

    monkeypatch.setattr(tagio.TagFile, "save", save)


@pytest.mark.parametrize("fmt", [".flac", ".mp3", ".ogg", ".wav", ".m4a", ".opus"])
def test_packet_check_refuses_a_copy_with_one_changed_audio_byte(copy, fmt, monkeypatch):
    path = copy(fmt)
    before = path.read_bytes()
    _corrupt_after_save(monkeypatch)
    with pytest.raises(TagWriteError, match="audio packets differ"):
        write_changes(path, [Change("GENRE", [], ["Jazz"])], expect=None)
    assert path.read_bytes() == before and not [p for p in path.parent.iterdir() if ".tagger-" in p.name]


def test_files_that_cannot_be_demuxed_are_checked_by_decoding(copy, monkeypatch):
    import tagger.tagging.writer as w
    from tagger.errors import DecodeError

    def no_demux(p):
        raise DecodeError(p, "cannot demux: test")

    monkeypatch.setattr(w, "packet_digest", no_demux)
    path = copy(".flac")
    write_changes(path, [Change("GENRE", [], ["Jazz"])], expect=None)  # the decoded check passes a clean write
    assert read_fields(path)["GENRE"] == ["Jazz"]
    _corrupt_after_save(monkeypatch)
    with pytest.raises(TagWriteError, match="different audio"):
        write_changes(path, [Change("GENRE", ["Jazz"], ["Rock"])], expect=None)
