"""The web app over real HTTP: the catalogue's search, facets and paging; pages and their security headers;
previews with range requests; playlists; the correction endpoint's CSRF, Origin and token checks; a
correction that reaches the file."""
from __future__ import annotations

import http.client
import json
import os
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest
from audiofiles import music_like, write_audio
from conftest import serving

from tagger.config import load_config
from tagger.library.store import Store
from tagger.pipeline.scanner import scan
from tagger.serving.http import ServeConfig, make_server
from tagger.serving.web.catalogue import Catalogue, Query
from tagger.serving.web.media import RangeError, parse_range
from tagger.tagging.writer import read_fields


# -- the catalogue (pure) ---------------------------------------------------------------------------
def _tracks(n: int) -> list[dict]:
    genres = ["Jazz", "Rock", "Classical", "Electronic"]
    out = []
    for i in range(n):
        t = {"id": i + 1, "path": f"/music/{'AB'[i % 2]}/{i:05d}.flac", "title": f"Song {i:05d}",
             "artist": f"Artist {i % 7}", "album": f"Album {i % 11}", "duration": 100 + i % 50,
             "decided": {"genre": [genres[i % 4]], "mood": ["Calm"] if i % 3 == 0 else [],
                         "descriptors": ["piano"] if i % 5 == 0 else []},
             "models": ["m@1"]}
        if i % 10 == 0:  # the user's own genre wins over the decided one
            t["user"] = {"genre": ["Ambient"]}
        if i % 13 == 0:  # a locked, cleared mood: the decided one must not show
            t["locked"] = ["MOOD"]
        out.append(t)
    return out


def test_catalogue_facets_filters_sort_and_pages():
    cat = Catalogue(_tracks(1000), groups={"piano": "instrument"}, roots=["/music"])
    everything = cat.query(Query(per_page=25))
    assert everything.total == 1000 and everything.pages == 40 and len(everything.rows) == 25
    genre = dict(everything.facets["genre"])
    assert genre["Ambient"] == 100 and sum(genre.values()) == 1000
    assert dict(everything.facets["folder"]) == {"A": 500, "B": 500}
    assert dict(everything.facets["instrument"]) == {"piano": 200}
    calm = sum(1 for i in range(1000) if i % 3 == 0 and i % 13 != 0)
    assert dict(everything.facets["mood"]) == {"Calm": calm}
    jazz = cat.query(Query(chosen={"genre": ("Jazz",)}, per_page=200))
    assert jazz.total == sum(1 for i in range(1000) if i % 4 == 0 and i % 10 != 0)
    assert all(r["_genre"] == ["Jazz"] for r in jazz.rows)
    both = cat.query(Query(chosen={"genre": ("Jazz", "Rock"), "folder": ("A",)}, per_page=200))
    assert both.total == sum(1 for i in range(1000) if i % 2 == 0 and i % 4 in (0, 1) and i % 10 != 0)
    assert dict(both.facets["folder"]) == {"A": both.total}
    text = cat.query(Query(text="song 0004", per_page=25))
    assert {r["title"] for r in text.rows} == {f"Song {i:05d}" for i in range(40, 50)}
    longest = cat.query(Query(sort="duration", descending=True, per_page=25)).rows
    assert [r["duration"] for r in longest] == sorted((r["duration"] for r in longest), reverse=True)
    assert longest[0]["duration"] == 149
    last = cat.query(Query(sort="title", page=40, per_page=25)).rows
    assert last[-1]["title"] == "Song 00999"
    beyond = cat.query(Query(page=999, per_page=25))
    assert beyond.rows == last or beyond.rows  # a page past the end shows the last page, never an error


def test_query_parsing_refuses_bad_parameters():
    with pytest.raises(ValueError, match="sort"):
        Query.parse({"sort": ["__class__"]})
    with pytest.raises(ValueError, match="per_page"):
        Query.parse({"per_page": ["100000"]})
    with pytest.raises(ValueError, match="page"):
        Query.parse({"page": ["0"]})
    q = Query.parse({"genre": ["Jazz", ""], "q": ["  x  "], "order": ["desc"]})
    assert q.chosen == {"genre": ("Jazz",)} and q.text == "x" and q.descending


@pytest.mark.parametrize("header,expect", [(None, None), ("bytes=0-99", (0, 99)), ("bytes=100-", (100, 999)),
                                           ("bytes=-10", (990, 999)), ("bytes=900-5000", (900, 999)),
                                           ("bytes=5-1", None), ("items=0-1", None), ("bytes=0-1,5-6", None)])
def test_range_parsing(header, expect):
    assert parse_range(header, 1000) == expect


def test_unsatisfiable_range():
    with pytest.raises(RangeError):
        parse_range("bytes=1000-", 1000)


# -- over HTTP ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site(tmp_path_factory, msd_model):
    root = tmp_path_factory.mktemp("web")
    lib = root / "lib"
    (lib / "Album").mkdir(parents=True)
    for i in range(4):
        write_audio((lib / "Album" if i < 2 else lib) / f"t{i}.flac", music_like(4.0 + 1.5 * i, 44100, 2, seed=i), 44100)
    cfg = replace(load_config(None), database=root / "db", library=(lib,))
    with Store(cfg.database) as store:
        scan([lib], cfg, msd_model, store)
    return cfg, lib


@pytest.fixture
def server(site, msd_model, request):
    sc = getattr(request, "param", ServeConfig(port=0))
    srv = make_server(site[0], msd_model, sc)
    with serving(srv, "tagger-test-web"):
        yield srv


def call(srv, path, method="GET", headers=None, body=None):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=20)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp, data


def csrf_of(srv) -> str:
    _, page = call(srv, "/")
    return re.search(rb'name=csrf-token content="([^"]+)"', page).group(1).decode()


def test_pages_render_with_a_strict_content_security_policy(server):
    resp, page = call(server, "/")
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/html")
    csp = resp.getheader("Content-Security-Policy")
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert b"<script>" not in page and b" style=" not in page  # nothing inline: the CSP would block it
    ids = [int(x) for x in re.findall(rb'href="/track/(\d+)"', page)]
    assert len(ids) == 4
    resp, folder = call(server, "/?folder=Album")
    assert resp.status == 200 and len(re.findall(rb'href="/track/\d+"', folder)) == 2
    resp, track = call(server, f"/track/{ids[0]}")
    assert resp.status == 200 and b"What each model hears" in track and b'class="bar ' in track
    assert call(server, "/track/99999")[0].status == 404
    assert call(server, "/?sort=nonsense")[0].status == 400
    for path in ("/playlist", f"/playlist?seed={ids[0]}", "/status", "/static/app.js", "/static/style.css"):
        assert call(server, path)[0].status == 200, path
    assert call(server, "/static/../serve.py")[0].status == 404


def test_track_view_has_every_model_and_the_decision(server, site):
    _, page = call(server, "/?sort=duration&order=desc")  # the longest track: several windows
    tid = int(re.search(rb'href="/track/(\d+)"', page).group(1))
    resp, body = call(server, f"/api/tracks/{tid}/view")
    view = json.loads(body)
    assert resp.status == 200 and view["models"][0]["analyser"].startswith("musicnn-msd@")
    scores = [p for _, p in view["models"][0]["labels"]]
    assert scores == sorted(scores, reverse=True)
    assert set(view["decision"]) >= {"genre", "mood"} and all("reason" in d for d in view["decision"].values())
    assert view["file_tags"]["TAGGER_MODEL"]  # the tags the file holds, read from the file
    resp, body = call(server, f"/api/tracks/{tid}/taggram")
    tg = json.loads(body)
    assert resp.status == 200 and len(tg["labels"]) == 12 and tg["hop_s"] > 0
    assert len(tg["values"][0]) >= 2 and all(0 <= v <= 1 for row in tg["values"] for v in row)


def test_previews_stream_by_id_with_ranges(server, site):
    _, page = call(server, "/")
    tid = int(re.search(rb'data-src="/audio/(\d+)"', page).group(1))
    _, view = call(server, f"/api/tracks/{tid}/view")
    path = json.loads(view)["track"]["path"]
    data = Path(path).read_bytes()
    resp, whole = call(server, f"/audio/{tid}")
    assert resp.status == 200 and whole == data and resp.getheader("Accept-Ranges") == "bytes"
    assert resp.getheader("Content-Type") == "audio/flac"
    resp, part = call(server, f"/audio/{tid}", headers={"Range": "bytes=100-1099"})
    assert resp.status == 206 and part == data[100:1100]
    assert resp.getheader("Content-Range") == f"bytes 100-1099/{len(data)}"
    resp, tail = call(server, f"/audio/{tid}", headers={"Range": "bytes=-500"})
    assert resp.status == 206 and tail == data[-500:]
    resp, _ = call(server, f"/audio/{tid}", headers={"Range": f"bytes={len(data)}-"})
    assert resp.status == 416 and resp.getheader("Content-Range") == f"bytes */{len(data)}"
    resp, head = call(server, f"/audio/{tid}", method="HEAD")
    assert resp.status == 200 and head == b"" and int(resp.getheader("Content-Length")) == len(data)
    assert call(server, "/audio/99999")[0].status == 404
    assert call(server, "/audio/..%2F..%2Fetc%2Fpasswd")[0].status in (400, 404)


def test_playlist_download(server):
    _, page = call(server, "/")
    tid = int(re.search(rb'href="/track/(\d+)"', page).group(1))
    resp, m3u = call(server, f"/playlist.m3u8?seed={tid}&n=3")
    lines = m3u.decode().splitlines()
    assert resp.status == 200 and lines[0] == "#EXTM3U" and resp.getheader("Content-Disposition").startswith("attachment")
    paths = [x for x in lines if not x.startswith("#")]
    assert len(paths) == 3 and all(os.path.isfile(p) for p in paths)
    assert call(server, "/playlist.m3u8?tags=not-a-label")[0].status == 400
    assert call(server, "/playlist.m3u8?seed=abc")[0].status == 400


def test_corrections_need_the_csrf_token_json_and_our_origin(server, site):
    cfg, lib = site
    _, page = call(server, "/?folder=(top)")
    tid = int(re.search(rb'href="/track/(\d+)"', page).group(1))
    token = csrf_of(server)
    body = json.dumps({"field": "genre", "action": "set", "values": ["Classical"]})
    url = f"/api/tracks/{tid}/correct"
    ok_headers = {"Content-Type": "application/json", "X-CSRF-Token": token}
    assert call(server, url, "POST", {"Content-Type": "application/json"}, body)[0].status == 403
    assert call(server, url, "POST", {**ok_headers, "X-CSRF-Token": "guess"}, body)[0].status == 403
    assert call(server, url, "POST", {**ok_headers, "Origin": "http://evil.example"}, body)[0].status == 403
    assert call(server, url, "POST", {**ok_headers, "Content-Type": "text/plain"}, body)[0].status == 415
    assert call(server, url, "POST", ok_headers, "{bad")[0].status == 400
    assert call(server, url, "POST", ok_headers, json.dumps({"field": "artist", "values": ["x"]}))[0].status == 400
    assert call(server, "/api/tracks/99999/correct", "POST", ok_headers, body)[0].status == 404
    assert call(server, "/tracks/1", "POST", ok_headers, body)[0].status == 405
    _, view = call(server, f"/api/tracks/{tid}/view")
    path = json.loads(view)["track"]["path"]
    before = read_fields(path)
    resp, answer = call(server, url, "POST", {**ok_headers, "Origin": "http://127.0.0.1"}, body)
    assert resp.status == 200, answer
    answer = json.loads(answer)
    assert answer["values"] == ["Classical"] and answer["locked"] == ["GENRE"]
    after = read_fields(path)
    assert after["GENRE"] == ["Classical"] and after["TAGGER_LOCKED"] == ["GENRE"]
    assert after["TAGGER_MODEL"] == before["TAGGER_MODEL"]  # nothing else changed
    _, view = call(server, f"/api/tracks/{tid}/view")  # the server sees the new record at once
    assert json.loads(view)["track"]["user"] == {"genre": ["Classical"]}
    assert not list((cfg.database / "inbox").glob("*.json"))  # answered and collected


@pytest.mark.parametrize("server", [ServeConfig(port=0, token="s3cret")], indirect=True)
def test_browser_login_by_token_sets_a_strict_cookie(server):
    assert call(server, "/")[0].status == 401
    resp, _ = call(server, "/?token=wrong")
    assert resp.status == 401
    resp, _ = call(server, "/?token=s3cret&genre=Jazz")
    assert resp.status == 303 and resp.getheader("Location") == "/?genre=Jazz"
    cookie = resp.getheader("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert call(server, "/", headers={"Cookie": cookie.split(";")[0]})[0].status == 200
    assert call(server, "/", headers={"Cookie": "tagger_token=nope"})[0].status == 401
    assert call(server, "/health", headers={"Authorization": "Bearer s3cret"})[0].status == 200


def test_a_large_library_is_reopened_in_the_background(tmp_path, msd_model, monkeypatch):
    """Past SYNC_REBUILD_S the view is rebuilt by a thread while requests are answered from the previous one."""
    from tagger.serving.state import LibraryState

    lib = tmp_path / "lib"
    lib.mkdir()
    write_audio(lib / "a.flac", music_like(4.0, 22050, 1, seed=1), 22050)
    cfg = replace(load_config(None), database=tmp_path / "db", write_enabled=False, models=("musicnn-msd",))
    with Store(cfg.database) as store:
        scan([lib], cfg, msd_model, store)
    monkeypatch.setattr(LibraryState, "SYNC_REBUILD_S", -1.0)  # every reopening counts as slow
    with serving(make_server(cfg, msd_model, ServeConfig(port=0)), "tagger-test-web-bg") as srv:
        write_audio(lib / "b.flac", music_like(5.0, 22050, 1, seed=2), 22050)
        with Store(cfg.database) as store:
            scan([lib], cfg, msd_model, store)
        _, body = call(srv, "/health")
        assert json.loads(body)["tracks"] == 1  # answered at once from the previous view
        deadline = time.monotonic() + 30
        while json.loads(call(srv, "/health")[1])["tracks"] != 2:
            assert time.monotonic() < deadline, "the new view never arrived"
            time.sleep(0.05)
        assert len(re.findall(rb'href="/track/\d+"', call(srv, "/")[1])) == 2


# -- pages in the user's words (issue 26) ----------------------------------------------------------------
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


@pytest.fixture(scope="module")
def own_site(tmp_path_factory, msd_model):
    """A track with cover art and the user's own genre, and a file that is not audio."""
    from mutagen.flac import FLAC, Picture

    root = tmp_path_factory.mktemp("web-own")
    lib = root / "lib"
    lib.mkdir()
    song = write_audio(lib / "covered.flac", music_like(6.0, 44100, 2, seed=3), 44100)
    audio = FLAC(song)
    pic = Picture()
    pic.type, pic.mime, pic.data = 3, "image/png", PNG
    audio.add_picture(pic)
    audio["GENRE"] = ["Polka"]
    audio.save()
    (lib / "broken.mp3").write_bytes(b"\xff\xfb\x90\x64" + os.urandom(20_000))
    cfg = replace(load_config(None), database=root / "db", library=(lib,))
    with Store(cfg.database) as store:
        scan([lib], cfg, msd_model, store)
    return cfg, lib


def test_pages_speak_the_users_words(own_site, msd_model):
    cfg, lib = own_site
    with serving(make_server(cfg, msd_model, ServeConfig(port=0)), "tagger-test-web-own") as srv:
        _, page = call(srv, "/")
        tid = int(re.search(rb'href="/track/(\d+)"', page).group(1))
        resp, track = call(srv, f"/track/{tid}")
        assert resp.status == 200
        assert b"yours: tagger leaves it as it is" in track and b"may write it" not in track
        assert re.search(rb'<h3 title="musicnn-msd@[^"]+">musicnn-msd</h3>', track)  # the version only on hover
        assert f'src="/cover/{tid}"'.encode() in track
        resp, cover = call(srv, f"/cover/{tid}")
        assert resp.status == 200 and resp.getheader("Content-Type") == "image/png" and cover == PNG
        resp, facets = call(srv, "/")
        assert b"musicnn-msd@" not in facets  # the model facet names models, not versions
        resp, status = call(srv, "/status")
        assert b"broken.mp3" in status and b"Files with problems (1)" in status and b"not audio" in status
        resp, html = call(srv, "/no/such/page", headers={"Accept": "text/html,application/xhtml+xml"})
        assert resp.status == 404 and resp.getheader("Content-Type").startswith("text/html")
        assert b"Back to the library" in html and b'{"error"' not in html
        resp, bad = call(srv, "/?sort=nonsense", headers={"Accept": "text/html"})
        assert resp.status == 400 and b"That address is not right" in bad
        resp, api = call(srv, "/no/such/page")  # an API client (no text/html) still gets JSON
        assert resp.status == 404 and json.loads(api)["error"]
