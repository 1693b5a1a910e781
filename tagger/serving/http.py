"""`tagger serve`: the web app (``/``) and a small HTTP JSON API over the database, for players and scripts.

Secure by default: bound to loopback unless explicitly allowed; tracks addressed by numeric id, never by a
client-supplied path (no route touches the filesystem with request data: audio is streamed from the path the
database holds for an id); an optional bearer token (a browser logs in once with ``/?token=...``, which sets an
HttpOnly, SameSite=Strict cookie); the Host header checked against an allow-list so a hostile web page cannot
reach the server through DNS rebinding. The one request that changes anything (a correction) must be a JSON
POST carrying the page's CSRF token in a header and, when the browser sends one, an allowed Origin; it is
handed to the single database writer through the inbox (``control.py``), never applied by a request thread
holding its own store.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import secrets
import signal
import threading
from dataclasses import dataclass
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tagger.config import Config
from tagger.errors import ConfigError, DecodeError, StoreError
from tagger.library.store import Store
from tagger.lookup.query import bounded
from tagger.lookup.similar import Library, m3u_text, resolve_tags, tag_search
from tagger.models.session import Model
from tagger.serving import routes
from tagger.serving.api import openapi
from tagger.serving.provider import ProviderRoutes
from tagger.serving.state import LibraryState
from tagger.serving.web.media import (
    CHUNK,
    RangeError,
    cover_art,
    mime_type,
    parse_range,
)
from tagger.serving.web.site import Site, Snapshot
from tagger.serving.web.taggram import Taggrams

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 30.0  # seconds a client may take to send a request or hold an idle connection
STATIC = Path(__file__).parent / "web" / "static"
STATIC_TYPES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8",
                "icon.svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


class _Server(ThreadingHTTPServer):
    """A real listen backlog, daemon worker threads, and quiet handling of clients that hang up."""

    request_queue_size = 1024
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError, TimeoutError)):
            log.debug("client %s went away: %s", client_address, exc)
            return
        log.exception("error while serving %s", client_address)


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    allow_remote: bool = False
    allowed_hosts: tuple[str, ...] = ()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Handler(ProviderRoutes, BaseHTTPRequestHandler):
    server_version = "tagger"
    sys_version = ""
    protocol_version = "HTTP/1.1"  # keep-alive (range requests for previews come in series)
    timeout = REQUEST_TIMEOUT  # idle or slow connections are closed instead of holding a thread forever
    state: LibraryState
    sc: ServeConfig
    hosts: frozenset[str]
    site: Site
    taggrams: Taggrams

    def log_message(self, fmt: str, *args: Any) -> None:  # route to logging, not stderr prints
        log.debug("%s %s", self.address_string(), fmt % args)

    def _send_bytes(self, code: int, data: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in {**(extra or {}), **getattr(self, "_route_headers", {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send(self, code: int, body: Any, extra: dict[str, str] | None = None) -> None:
        if code >= 400 and isinstance(body, dict) and self._wants_html():  # a person at a browser, not a client
            self._send_html(code, self.site.error_page(code, str(body.get("error", ""))))
            return
        data = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogateescape")
        self._send_bytes(code, data, "application/json; charset=utf-8", extra)

    def _wants_html(self) -> bool:
        """A browser navigating (Accept: text/html) to a page that is not part of the JSON API."""
        path = urlsplit(self.path).path
        found = routes.match("GET", path)
        api = (found.route.kind == "api") if found else path.startswith(("/api/", "/tracks", "/health"))
        return not api and "text/html" in (self.headers.get("Accept") or "")

    def _send_html(self, code: int, page: str) -> None:
        self._send_bytes(code, page.encode("utf-8", "surrogateescape"), "text/html; charset=utf-8",
                         {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY"})

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").strip().lower()
        if host.startswith("["):
            name = host.split("]")[0] + "]"
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return name in self.hosts

    def _authorised(self) -> bool:
        if not self.sc.token:
            return True
        want = self.sc.token.encode()
        got = self.headers.get("Authorization") or ""
        if hmac.compare_digest(got.encode(), b"Bearer " + want):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie") or "")
        except Exception:  # a malformed cookie header is simply no cookie
            return False
        morsel = cookie.get("tagger_token")
        return morsel is not None and hmac.compare_digest(morsel.value.encode(), want)

    def _origin_ok(self) -> bool:
        """A browser's Origin (when sent) must name an allowed host: a page elsewhere cannot post here."""
        origin = self.headers.get("Origin")
        if origin is None:
            return True
        host = urlsplit(origin).hostname or ""
        return (f"[{host}]" if ":" in host else host) in self.hosts

    def _gate(self) -> bool:
        """Host allow-list, then token (a browser's one-time ``?token=`` login becomes a cookie)."""
        if not self._host_ok():
            self._send(403, {"error": "Host header not allowed"})
            return False
        if self._authorised():
            return True
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        given = query.pop("token", [""])[0]
        if self.sc.token and self.command in ("GET", "HEAD") and given and hmac.compare_digest(
                given.encode(), self.sc.token.encode()):
            rest = urlencode([(k, v) for k, vs in query.items() for v in vs])
            self.send_response(303)
            self.send_header("Location", url.path + (f"?{rest}" if rest else ""))
            self.send_header("Set-Cookie", f"tagger_token={self.sc.token}; HttpOnly; SameSite=Strict; Path=/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        self._send(401, {"error": "missing or wrong token (browsers: open /?token=YOUR_TOKEN once)"},
                   {"WWW-Authenticate": "Bearer"})
        return False

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch()

    def do_PUT(self) -> None:  # noqa: N802
        self._send(405, {"error": "method not allowed"}, {"Allow": "GET, HEAD, POST"})

    do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = do_PUT

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch()

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch()

    def _dispatch(self) -> None:
        """The one router: the route table (:mod:`tagger.serving.routes`) names the handler of every URL."""
        self._route_headers: dict[str, str] = {}
        if not self._gate():
            return
        url = urlsplit(self.path)
        found = routes.match(self.command, url.path)
        if found is None:
            if self.command == "POST":
                return self._send(405, {"error": "nothing can be posted here (corrections and sonic queries only)"},
                                  {"Allow": "GET, HEAD"})
            return self._send(404, {"error": "no such resource"})
        if found.deprecated:  # the previous release's URL: answered, with the way to the new one
            self._route_headers = {"Deprecation": "true", "Link": f'<{found.successor}>; rel="successor-version"'}
        try:
            getattr(self, found.route.handler)(parse_qs(url.query), **found.params)
        except StoreError as exc:
            self._send(503, {"error": exc.reason})
        except (ValueError, KeyError) as exc:
            self._send(400, {"error": f"bad request: {exc}"})

    # -- the web app --------------------------------------------------------------------------------
    def page_library(self, query: dict[str, list[str]]) -> None:
        self._send_html(200, self.site.library(self.state.snapshot(), query))

    def static_file(self, query: dict[str, list[str]], name: str) -> None:
        if name not in STATIC_TYPES:
            return self._send(404, {"error": "no such file"})
        self._send_bytes(200, (STATIC / name).read_bytes(), STATIC_TYPES[name], {"Cache-Control": "no-cache"})

    def page_track(self, query: dict[str, list[str]], id: str) -> None:
        snap = self.state.snapshot()
        if snap is None or int(id) not in snap.by_id:
            return self._send_html(404, self.site.not_found("No such track in the database."))
        self._send_html(200, self.site.track(snap, int(id)))

    def page_playlist(self, query: dict[str, list[str]]) -> None:
        self._send_html(200, self.site.playlist(self.state.snapshot(), query))

    def playlist_m3u(self, query: dict[str, list[str]]) -> None:
        rows = self.site.playlist_rows(self.state.snapshot(), query)[0]
        self._send_bytes(200, m3u_text(rows).encode("utf-8", "surrogateescape"), "audio/x-mpegurl; charset=utf-8",
                         {"Content-Disposition": 'attachment; filename="tagger-playlist.m3u8"'})

    def page_status(self, query: dict[str, list[str]]) -> None:
        self._send_html(200, self.site.status(self.state.snapshot()))

    def api_status(self, query: dict[str, list[str]]) -> None:
        self._send(200, self.site.status_json(self.state.snapshot()))

    def audio(self, query: dict[str, list[str]], id: str) -> None:
        self._audio(int(id))

    def cover(self, query: dict[str, list[str]], id: str) -> None:
        snap = self.state.snapshot()
        t = snap.by_id.get(int(id)) if snap else None
        art = cover_art(t["path"]) if t is not None else None
        if art is None:
            return self._send(404, {"error": "this track has no cover art"})
        self._send_bytes(200, art[0], art[1], {"Cache-Control": "private, max-age=300"})

    def _snapshot_track(self, id: str) -> tuple[Snapshot | None, dict[str, Any] | None]:
        snap = self.state.snapshot()
        return snap, (snap.by_id.get(int(id)) if snap else None)

    def api_view(self, query: dict[str, list[str]], id: str) -> None:
        snap, t = self._snapshot_track(id)
        if snap is None or t is None:
            return self._send(404, {"error": "no such track"})
        d = self.site.track_data(snap, int(id))
        d["models"] = [{**x, "labels": x["labels"][:20]} for x in d["models"]]
        self._send(200, d)

    def api_taggram(self, query: dict[str, list[str]], id: str) -> None:
        snap, t = self._snapshot_track(id)
        if snap is None or t is None:
            return self._send(404, {"error": "no such track"})
        try:
            self._send(200, self.taggrams.get(Path(t["path"])))
        except DecodeError as exc:
            self._send(422, {"error": str(exc)})

    def api_correct(self, query: dict[str, list[str]], id: str) -> None:
        token = self.headers.get("X-CSRF-Token") or ""
        if not hmac.compare_digest(token.encode(), self.site.csrf.encode()) or not self._origin_ok():
            return self._send(403, {"error": "missing or wrong CSRF token, or a foreign Origin"})
        body = self._read_json()
        if body is None:
            return
        code, answer = self.site.correct(self.state.snapshot(), int(id), body)
        self._send(code, answer)

    def _audio(self, tid: int) -> None:
        snap = self.state.snapshot()
        t = snap.by_id.get(tid) if snap else None
        if t is None:
            return self._send(404, {"error": "no such track"})
        path = t["path"]
        try:
            f = open(path, "rb")
        except OSError as exc:
            return self._send(404, {"error": f"{path}: cannot read the file: {exc.strerror}"})
        with f:
            size = os.fstat(f.fileno()).st_size
            try:
                span = parse_range(self.headers.get("Range"), size)
            except RangeError as exc:
                return self._send(416, {"error": str(exc)}, {"Content-Range": f"bytes */{size}"})
            first, last = span if span else (0, size - 1)
            length = max(0, last - first + 1)
            self.send_response(206 if span else 200)
            self.send_header("Content-Type", mime_type(path))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(length))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-store")
            if span:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            if self.command == "HEAD":
                return
            f.seek(first)
            left = length
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:  # the file shrank while being sent: the length promised is wrong, so hang up
                    self.close_connection = True
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    # -- the JSON API -------------------------------------------------------------------------------
    def api_openapi(self, query: dict[str, list[str]]) -> None:
        self._send(200, openapi(self.state.model.spec.labels))

    def api_health(self, query: dict[str, list[str]]) -> None:
        _, lib = self.state.current()
        self._send(200, {"status": "ok" if lib is not None else "empty", "model": self.state.model.spec.analyser,
                         "tracks": len(lib.records) if lib is not None else 0})

    def api_search(self, query: dict[str, list[str]]) -> None:
        store, lib = self.state.current()
        if store is None or lib is None:  # nothing analysed yet
            return self._send(200, [])
        self._search(store, lib, query)

    def _lookup_record(self, id: str) -> tuple[Store, Library, dict[str, Any]] | None:
        store, lib = self.state.current()
        if store is None or lib is None:
            self._send(404, {"error": "no such track (the database is empty)"})
            return None
        rec = store.by_id(int(id))
        if rec is None or rec.get("model") != lib.model or rec.get("slot") is None:
            self._send(404, {"error": "no such track"})
            return None
        return store, lib, rec

    def api_similar(self, query: dict[str, list[str]], id: str) -> None:
        found = self._lookup_record(id)
        if found is None:
            return
        store, lib, rec = found
        n = bounded("n", query.get("n", [None])[0], 10)
        incl = query.get("include_duplicates", ["false"])[0].lower() in ("1", "true", "yes")
        hits = lib.similar(lib.embedding_of(rec), rec, n, include_duplicates=incl)
        self._send(200, [h.to_json(store.doc_id(h.record["path"], lib.model)) for h in hits])

    def api_track(self, query: dict[str, list[str]], id: str) -> None:
        found = self._lookup_record(id)
        if found is None:
            return
        store, lib, rec = found
        tags = lib.tags_of(rec)
        body = {k: v for k, v in rec.items() if k not in ("slot", "size", "mtime_ns")}
        body["id"] = int(id)
        body["tags"] = {label: round(float(p), 6) for label, p in sorted(zip(lib.labels, tags), key=lambda kv: -kv[1])}
        self._send(200, body)

    def _search(self, store: Store, lib: Library, query: dict[str, list[str]]) -> None:
        wanted = query.get("tag", [])
        if not wanted:
            return self._send(400, {"error": "give at least one ?tag="})
        try:
            tags = resolve_tags(lib.labels, lib.records, wanted, "tag")
        except ConfigError as exc:
            return self._send(400, {"error": str(exc)})
        limit = bounded("limit", query.get("limit", [None])[0], 20)
        out = []
        for hit in tag_search(lib, tags)[:limit]:
            rec = hit.record
            item = {"id": store.doc_id(rec["path"], lib.model), "path": rec["path"], "score": round(hit.score, 6)}
            item.update({k: rec[k] for k in ("artist", "title", "duration") if k in rec})
            out.append(item)
        return self._send(200, out)


def make_server(cfg: Config, model: Model, sc: ServeConfig) -> ThreadingHTTPServer:
    """Build (and bind) the server; refuses a non-loopback address unless allow_remote."""
    if not is_loopback(sc.host) and not sc.allow_remote:
        raise ConfigError("serve.host", f"{sc.host} is not a loopback address; binding it exposes your library "
                                        "to the network: pass --allow-remote (and set a --token) to do it")
    state = LibraryState(cfg, model)
    state.current()  # fail now, not on the first request, if the database is damaged
    hosts = {"localhost", "127.0.0.1", "[::1]", sc.host.lower()} | {h.lower() for h in sc.allowed_hosts}
    handler = type("Handler", (_Handler,), {"state": state, "sc": sc, "hosts": frozenset(hosts),
                                            "site": Site(cfg, secrets.token_urlsafe(24)), "taggrams": Taggrams(model)})
    import socket

    family = socket.AF_INET6 if ":" in sc.host.strip("[]") else socket.AF_INET
    server_cls = type("Server", (_Server,), {"address_family": family})
    try:
        return server_cls((sc.host.strip("[]"), sc.port), handler)
    except OSError as exc:
        raise ConfigError(f"serve {sc.host}:{sc.port}", f"cannot listen there: {exc.strerror or exc}") from exc


def serve(cfg: Config, model: Model, sc: ServeConfig) -> None:
    """Answer until SIGTERM or Ctrl-C; a port in use or a refused address is raised (the CLI maps it)."""
    server = make_server(cfg, model, sc)
    host, port = server.server_address[:2]
    log.info("serving http://%s:%d/ (web app and API%s)", host, port, ", token required" if sc.token else "")

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown, name="tagger-serve-stop").start()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
