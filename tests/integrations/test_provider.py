"""tagger as a similarity provider: contract tests against the published request and response shapes of
Navidrome's sonic-similarity plugin capability (SongRef, SonicMatch) and AudioMuse-AI's track endpoints, and
the look-ups by path, MusicBrainz recording id and artist/title they rest on."""
from __future__ import annotations

import http.client
import json
from dataclasses import replace

import mutagen
import pytest
from audiofiles import MBID, music_like, with_user_tags, write_audio
from conftest import serving

from tagger.config import load_config
from tagger.library.store import Store
from tagger.pipeline.scanner import scan
from tagger.serving.http import ServeConfig, make_server
from tagger.tagging.writer import read_fields

# Navidrome plugins PDK (0.62), types.SongRef: json field -> type
SONGREF = {"id": str, "name": str, "mbid": str, "isrc": str, "artist": str, "artistMbid": str, "artists": list,
           "album": str, "albumMbid": str, "duration": (int, float)}
SONGS = [("Ann", "Song 0"), ("Ann", "Song 1"), ("Bob", "Song 2"), ("Bob", "Song 3"), ("Cy", "Song 4"), ("Cy", "Song 5")]


def mbid(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


@pytest.fixture(scope="module")
def server(tmp_path_factory, msd_model):
    root = tmp_path_factory.mktemp("provider")
    lib = root / "lib"
    lib.mkdir()
    for i, (artist, title) in enumerate(SONGS):
        path = write_audio(lib / f"{i}.flac", music_like(5.0 + 1.5 * i, 44100, 2, seed=i), 44100)
        f = mutagen.File(path)
        f["ARTIST"], f["TITLE"], f["ALBUM"], f["MUSICBRAINZ_TRACKID"] = [artist], [title], ["The Album"], [mbid(i)]
        f.save()
    cfg = replace(load_config(None), database=root / "db", write_enabled=False)
    with Store(cfg.database) as store:
        scan([lib], cfg, msd_model, store)
    srv = make_server(cfg, msd_model, ServeConfig(port=0))
    with serving(srv, "tagger-test-provider"):
        yield srv, lib


def call(srv, method, path, body=None, ctype="application/json"):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=20)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Content-Type": ctype} if data is not None else {})
    resp = conn.getresponse()
    out = resp.read()
    conn.close()
    return resp.status, (json.loads(out) if out else None)


def _is_songref(ref: dict) -> bool:
    return set(ref) <= set(SONGREF) and "name" in ref and all(isinstance(v, SONGREF[k]) for k, v in ref.items())


@pytest.mark.parametrize("case", [".mp3", ".mp3-v23", ".flac", ".ogg", ".m4a"])
def test_the_musicbrainz_recording_id_is_read_where_picard_writes_it(tmp_path, case):
    assert read_fields(with_user_tags(tmp_path, case), names=("MUSICBRAINZ_TRACKID",))["MUSICBRAINZ_TRACKID"] == [MBID]


def test_lookups_by_path_mbid_and_artist_title(server):
    srv, lib = server
    status, by_path = call(srv, "GET", f"/api/v1/tracks/lookup?path={lib / '2.flac'}")
    assert status == 200 and [(r["artist"], r["name"], r["mbid"]) for r in by_path] == [("Bob", "Song 2", mbid(2))]
    assert call(srv, "GET", f"/api/v1/tracks/lookup?mbid={mbid(4).upper()}")[1][0]["name"] == "Song 4"
    assert call(srv, "GET", "/api/v1/tracks/lookup?artist=cy&title=song%20%205")[1][0]["mbid"] == mbid(5)
    assert call(srv, "GET", "/api/v1/tracks/lookup?artist=Nobody&title=x") == (200, [])
    assert call(srv, "GET", "/api/v1/tracks/lookup?title=x")[0] == 400


def test_sonic_similar_answers_the_plugin_capabilitys_shapes(server):
    srv, _ = server
    status, body = call(srv, "POST", "/api/v1/sonic/similar", {"song": {"name": "Song 1", "artist": "Ann"}, "count": 3})
    assert status == 200 and set(body) == {"matches"} and len(body["matches"]) == 3
    for m in body["matches"]:
        assert set(m) == {"song", "similarity"} and _is_songref(m["song"]) and 0.0 <= m["similarity"] <= 1.0
        assert m["song"]["mbid"] != mbid(1)  # never the seed itself
    sims = [m["similarity"] for m in body["matches"]]
    assert sims == sorted(sims, reverse=True)
    by_mbid = call(srv, "POST", "/api/v1/sonic/similar", {"song": {"name": "?", "mbid": mbid(1)}, "count": 3})[1]
    assert by_mbid == body  # the MusicBrainz id alone finds the same song
    assert call(srv, "POST", "/api/v1/sonic/similar", {"song": {"name": "Nope", "artist": "Ann"}, "count": 3})[0] == 404
    assert call(srv, "POST", "/api/v1/sonic/similar", {"song": "Song 1"})[0] == 400
    assert call(srv, "POST", "/api/v1/sonic/similar", {"song": {"name": "Song 1"}}, ctype="text/plain")[0] == 415


def test_sonic_path_goes_from_the_start_song_to_the_end_song(server):
    srv, _ = server
    status, body = call(srv, "POST", "/api/v1/sonic/path", {"startSong": {"name": "Song 0", "artist": "Ann"},
                                                           "endSong": {"mbid": mbid(5), "name": "Song 5"}, "count": 4})
    assert status == 200 and len(body["matches"]) == 4
    names = [m["song"]["name"] for m in body["matches"]]
    assert names[0] == "Song 0" and names[-1] == "Song 5" and len(set(names)) == 4
    assert all(_is_songref(m["song"]) and 0.0 <= m["similarity"] <= 1.0 for m in body["matches"])


def test_audiomuse_similar_and_search_tracks(server):
    srv, _ = server
    status, found = call(srv, "GET", "/api/search_tracks?search_query=song%203")
    assert status == 200 and [(t["title"], t["author"]) for t in found] == [("Song 3", "Bob")]
    assert set(found[0]) == {"item_id", "title", "author", "album"} and isinstance(found[0]["item_id"], str)
    status, near = call(srv, "GET", f"/api/similar_tracks?item_id={found[0]['item_id']}&n=4")
    assert status == 200 and len(near) == 4 and all(t["item_id"] != found[0]["item_id"] for t in near)
    assert all(set(t) == {"item_id", "title", "author", "album", "distance"} for t in near)
    dist = [t["distance"] for t in near]
    assert dist == sorted(dist) and all(0.0 <= d <= 2.0 for d in dist)
    assert call(srv, "GET", "/api/similar_tracks?title=Song%203&artist=Bob&n=4")[1] == near
    assert call(srv, "GET", "/api/similar_tracks?item_id=999999&n=4")[0] == 404
    assert call(srv, "GET", "/api/similar_tracks?n=4")[0] == 400
