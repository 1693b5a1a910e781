"""Training data sources for `python -m exporter train`: each manifest layout is recognised by its header."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")

from exporter.training.data import DataError, assign_splits, load  # noqa: E402


def test_magnatagatune_layout(tmp_path):
    rows = ["clip_id\tguitar\tpiano\trock\tmp3_path",
            "2\t1\t0\t1\tf/a-b-0-29.mp3", "6\t0\t1\t0\tf/a-b-30-59.mp3", "10\t1\t1\t0\t0/c-d-0-29.mp3",
            "11\t0\t1\t1\t0/c-d-30-59.mp3"]
    (tmp_path / "annotations_final.csv").write_text("\n".join(rows) + "\n")
    ds = load(tmp_path / "annotations_final.csv")
    (head,) = ds.heads
    assert head.name == "tags" and head.kind == "sigmoid" and head.labels == ("guitar", "piano", "rock")
    assert ds.examples[0].labels["tags"] == ("guitar", "rock") and ds.examples[0].path == tmp_path / "f/a-b-0-29.mp3"
    assert ds.examples[0].group == ds.examples[1].group == "a-b" != ds.examples[2].group  # album: artist-album


def test_mtg_jamendo_layout_gives_one_head_per_category(tmp_path):
    rows = ["TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS",
            "track_1\tartist_1\talbum_1\t14/1.mp3\t212.7\tgenre---rock\tmood/theme---happy",
            "track_2\tartist_1\talbum_1\t14/2.mp3\t100.0\tgenre---rock\tgenre---pop\tmood/theme---sad",
            "track_3\tartist_2\talbum_2\t15/3.mp3\t90.0\tgenre---pop\tmood/theme---happy\tmood/theme---sad"]
    (tmp_path / "autotagging.tsv").write_text("\n".join(rows) + "\n")
    ds = load(tmp_path / "autotagging.tsv")
    heads = {h.name: h for h in ds.heads}
    assert set(heads) == {"genre", "mood_theme"}
    assert heads["genre"].kind == "sigmoid"  # several genres per track: independent labels
    assert ds.examples[1].labels == {"genre": ("rock", "pop"), "mood_theme": ("sad",)} and ds.examples[1].group == "album_1"


def test_plain_csv_folders_and_errors(tmp_path):
    (tmp_path / "m.csv").write_text("path,genre,mood,split,group\na.wav,jazz,calm;dark,train,x\nb.wav,rock,,test,y\n"
                                    "c.wav,jazz,calm,,z\nd.wav,rock,dark,,z\n")
    ds = load(tmp_path / "m.csv")
    assert [h.kind for h in ds.heads] == ["softmax", "sigmoid"] and ds.examples[0].labels["mood"] == ("calm", "dark")
    assign_splits(ds.examples, seed=0)
    assert [e.split for e in ds.examples[:2]] == ["train", "test"]  # given splits are kept
    assert ds.examples[2].split == ds.examples[3].split  # one group, one split
    for style in ("funk", "soul"):
        for i in range(2):
            (tmp_path / "lib" / style / "album").mkdir(parents=True, exist_ok=True)
            (tmp_path / "lib" / style / "album" / f"{i}.wav").write_bytes(b"")
    ds = load(tmp_path / "lib")
    assert ds.heads[0].labels == ("funk", "soul") and ds.examples[0].group.endswith("album")
    (tmp_path / "bad.csv").write_text("file,what\nx,y\n")
    with pytest.raises(DataError, match="path"):
        load(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="not a folder"):
        load(tmp_path / "missing")
