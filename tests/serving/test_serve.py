"""The HTTP API through a real client: routes, auth, Host checks, and refusal of path tricks."""
from __future__ import annotations

import http.client
import json
from dataclasses import replace

import pytest
from audiofiles import music_like, write_audio
from conftest import serving

from tagger.config import load_config
from tagger.errors import ConfigError
from tagger.library.store import Store
from tagger.pipeline.scanner import scan
from tagger.serving.http import ServeConfig, make_server


@pytest.fixture(scope="module")
def db(tmp_path_factory, msd_model):
    root = tmp_path_factory.mktemp("api")
    lib = root / "lib"
    lib.mkdir()
    for i in range(4):
        write_audio(lib / f"t{i}.flac", music_like(4.0 + 1.5 * i, 44100, 2, seed=i), 44100)  # distinct durations
    cfg = replace(load_config(None), database=root / "db", write_enabled=False)
    with Store(cfg.database) as store:
        scan([lib], cfg, msd_model, store)
    return cfg


@pytest.fixture
def server(db, msd_model, request):
    sc = getattr(request, "param", ServeConfig(port=0))
    srv = make_server(db, msd_model, sc)
    with serving(srv, "tagger-test-serve"):
        yield srv


def get(srv, path, headers=None, method="GET"):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, (json.loads(body) if body else None)


def test_routes(server):
    status, spec = get(server, "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.") and "/api/v1/tracks/{id}/similar" in spec["paths"]
    status, health = get(server, "/health")
    assert status == 200 and health["tracks"] == 4
    status, track = get(server, "/tracks/1")
    assert status == 200 and len(track["tags"]) == 50 and track["id"] == 1
    top = next(iter(track["tags"]))  # track 1's strongest label: a search for it must find track 1
    status, found = get(server, f"/tracks?tag={top}&limit=3")
    assert status == 200 and 1 <= len(found) <= 3 and [f["score"] for f in found] == sorted(
        (f["score"] for f in found), reverse=True)
    status, everything = get(server, f"/tracks?tag={top}&limit=500")
    assert 1 in [f["id"] for f in everything]
    status, sims = get(server, "/tracks/1/similar?n=2")
    assert status == 200 and len(sims) == 2 and all(s["id"] != 1 for s in sims)
    assert sims[0]["score"] >= sims[1]["score"]


@pytest.mark.parametrize("path", ["/../../etc/passwd", "/tracks/..%2F..%2Fetc%2Fpasswd", "/tracks/%2Fetc%2Fpasswd",
                                  "/tracks//etc/passwd", "/tracks/1/../../../etc/passwd", "/tracks/0",
                                  "/tracks/99999", "/tracks/1.flac", "/etc/passwd"])
def test_path_tricks_get_nothing(server, path):
    status, body = get(server, path)
    assert status in (400, 404) and "root:" not in json.dumps(body)


def test_bad_queries_are_400(server):
    assert get(server, "/tracks")[0] == 400
    assert get(server, "/tracks?tag=nope")[0] == 400
    assert get(server, "/tracks/1/similar?n=abc")[0] == 400


def test_read_only(server):
    assert get(server, "/tracks/1", method="DELETE")[0] == 405
    assert get(server, "/tracks/1", method="POST")[0] == 405


@pytest.mark.parametrize("server", [ServeConfig(port=0, token="s3cret")], indirect=True)
def test_token(server):
    assert get(server, "/health")[0] == 401
    assert get(server, "/health", {"Authorization": "Bearer wrong"})[0] == 401
    assert get(server, "/health", {"Authorization": "Bearer s3cret"})[0] == 200


def test_foreign_host_header_is_refused(server):
    assert get(server, "/health", {"Host": "evil.example:8765"})[0] == 403
    assert get(server, "/health", {"Host": "localhost:8765"})[0] == 200


def test_non_loopback_bind_needs_explicit_permission(db, msd_model):
    with pytest.raises(ConfigError, match="--allow-remote"):
        make_server(db, msd_model, ServeConfig(host="0.0.0.0", port=0))
    srv = make_server(db, msd_model, ServeConfig(host="0.0.0.0", port=0, allow_remote=True, token="t"))
    srv.server_close()


def test_every_cap_is_enforced_with_a_400(server):
    for bad in ("/tracks/1/similar?n=0", "/tracks/1/similar?n=-1", "/tracks/1/similar?n=100000",
                "/tracks?tag=rock&limit=-1", "/tracks?tag=rock&limit=0", "/tracks?tag=rock&limit=1e9"):
        status, body = get(server, bad)
        assert status == 400 and "must be" in body["error"], bad


def test_other_methods_get_405(server):
    for method in ("OPTIONS", "TRACE", "PUT", "PATCH"):
        assert get(server, "/health", method=method)[0] == 405


def test_starts_on_an_empty_database_and_fails_clearly_on_a_busy_port(tmp_path, msd_model):
    cfg = replace(load_config(None), database=tmp_path / "empty-db")
    with serving(make_server(cfg, msd_model, ServeConfig(port=0)), "tagger-test-serve-empty") as srv:
        status, health = get(srv, "/health")
        assert status == 200 and health == {"status": "empty", "model": msd_model.card.analyser, "tracks": 0}
        assert get(srv, "/tracks?tag=rock") == (200, [])
        assert get(srv, "/tracks/1")[0] == 404
        with pytest.raises(ConfigError, match="cannot listen"):
            make_server(cfg, msd_model, ServeConfig(port=srv.server_address[1]))


def test_ipv6_loopback(db, msd_model):
    import socket

    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")
    try:
        srv = make_server(db, msd_model, ServeConfig(host="::1", port=0))
    except ConfigError as exc:  # a kernel with IPv6 switched off
        pytest.skip(f"::1 not available: {exc}")
    with serving(srv, "tagger-test-serve-v6"):
        conn = http.client.HTTPConnection("::1", srv.server_address[1], timeout=10)
        conn.request("GET", "/health", headers={"Host": "[::1]"})
        assert conn.getresponse().status == 200
        conn.close()


def test_200_concurrent_clients_are_all_answered(server):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(200) as pool:
        codes = list(pool.map(lambda _: get(server, "/health")[0], range(200)))
    assert codes == [200] * 200


def _raw(srv, path):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, json.loads(body)


@pytest.mark.parametrize("old, new", [("/health", "/api/v1/health"), ("/tracks/1", "/api/v1/tracks/1"),
                                      ("/tracks/1/similar?n=2", "/api/v1/tracks/1/similar?n=2"),
                                      ("/openapi.json", "/api/v1/openapi.json")])
def test_the_versioned_api_answers_and_the_old_urls_still_do_marked_deprecated(server, old, new):
    new_resp, new_body = _raw(server, new)
    old_resp, old_body = _raw(server, old)
    assert new_resp.status == old_resp.status == 200 and new_body == old_body
    assert new_resp.getheader("Deprecation") is None
    assert old_resp.getheader("Deprecation") == "true"
    assert old_resp.getheader("Link") == f'<{new.split("?")[0]}>; rel="successor-version"'


def test_the_openapi_paths_are_the_route_tables_api_routes(server):
    from tagger.serving.routes import ROUTES

    _, spec = _raw(server, "/api/v1/openapi.json")
    assert set(spec["paths"]) <= {r.path for r in ROUTES if r.kind == "api"}
    assert all(p.startswith("/api/v1/") for p in spec["paths"])
    assert spec["paths"]["/api/v1/tracks/{id}/similar"]["get"]["parameters"][1]["schema"]["maximum"] == 500
