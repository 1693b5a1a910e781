"""`tagger serve`: a small read-only HTTP JSON API over the database, for players and scripts.

Secure by default: bound to loopback unless explicitly allowed; tracks addressed by numeric id, never by a
client-supplied path (no route touches the filesystem with request data); an optional bearer token; the Host
header checked against an allow-list so a hostile web page cannot reach the API through DNS rebinding.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import signal
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .config import Config
from .errors import ConfigError, StoreError
from .model import Model
from .similar import Library, tag_search
from .store import RECORDS, Store

log = logging.getLogger(__name__)

MAX_N = 500
REQUEST_TIMEOUT = 30.0  # seconds a client may take to send a request or hold an idle connection


def bounded_int(query: dict[str, list[str]], name: str, default: int, lo: int = 1, hi: int = MAX_N) -> int:
    """A query integer within [lo, hi]; ValueError (a 400) for anything else, never a silent clamp below lo."""
    raw = query.get(name, [str(default)])[0]
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


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


def openapi(labels: tuple[str, ...]) -> dict[str, Any]:
    track = {"type": "object", "properties": {"id": {"type": "integer"}, "path": {"type": "string"},
                                              "score": {"type": "number"}, "artist": {"type": "string"},
                                              "title": {"type": "string"}, "duration": {"type": "number"}}}
    err = {"description": "error", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}}}}}}
    idp = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
    listing = {"description": "tracks, best first", "content": {"application/json": {"schema": {
        "type": "array", "items": track}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "tagger", "version": "1", "description": "Read-only access to tagger's analysis."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}, {}],
        "paths": {
            "/health": {"get": {"summary": "liveness and library size", "responses": {"200": {"description": "ok"}}}},
            "/tracks": {"get": {
                "summary": "search by tags: tracks carrying every given label, best first",
                "parameters": [{"name": "tag", "in": "query", "required": True, "explode": True,
                                "schema": {"type": "array", "items": {"type": "string", "enum": list(labels)}}},
                               {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_N}}],
                "responses": {"200": listing, "400": err, "401": err, "403": err}}},
            "/tracks/{id}": {"get": {
                "summary": "one track: record and every label's song-level probability", "parameters": [idp],
                "responses": {"200": {"description": "the track"}, "404": err, "401": err, "403": err}}},
            "/tracks/{id}/similar": {"get": {
                "summary": "nearest tracks by embedding cosine (seed and duplicates left out by default)",
                "parameters": [idp, {"name": "n", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_N}},
                               {"name": "include_duplicates", "in": "query", "schema": {"type": "boolean"}}],
                "responses": {"200": listing, "404": err, "401": err, "403": err}}},
        },
    }


class _State:
    """The read-only store and library, reopened when the writer commits."""

    def __init__(self, cfg: Config, model: Model) -> None:
        self.cfg, self.model = cfg, model
        self.lock = threading.Lock()
        self.stamp: tuple | None = None
        self.store: Store | None = None
        self.lib: Library | None = None

    def _stamp(self) -> tuple:
        out = []
        for name in (RECORDS, "records.journal"):
            try:
                st = (self.cfg.database / name).stat()
                out.append((st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    def current(self) -> tuple[Store | None, Library | None]:
        """(store, library), or (None, None) while the database is empty or not created yet: the API
        starts before the first scan and answers with empty results. A damaged database raises."""
        with self.lock:
            stamp = self._stamp()
            if stamp != self.stamp:
                if self.store is not None:
                    self.store.close()
                self.store = self.lib = None
                if (self.cfg.database / RECORDS).exists():
                    self.store = Store(self.cfg.database, writer=False)
                    if len(self.store.slots(self.model.spec.id)[0]):
                        self.lib = Library(self.store, self.model.spec.id, self.model.spec.labels)
                self.stamp = stamp
            return self.store, self.lib


class _Handler(BaseHTTPRequestHandler):
    server_version = "tagger"
    sys_version = ""
    timeout = REQUEST_TIMEOUT  # idle or slow connections are closed instead of holding a thread forever
    state: _State
    sc: ServeConfig
    hosts: frozenset[str]

    def log_message(self, fmt: str, *args: Any) -> None:  # route to logging, not stderr prints
        log.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, code: int, body: Any, extra: dict[str, str] | None = None) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogateescape")
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

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
        got = self.headers.get("Authorization") or ""
        return hmac.compare_digest(got.encode(), f"Bearer {self.sc.token}".encode())

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        self._send(405, {"error": "read-only API"}, {"Allow": "GET, HEAD"})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = do_POST

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        if not self._host_ok():
            return self._send(403, {"error": "Host header not allowed"})
        if not self._authorised():
            return self._send(401, {"error": "missing or wrong token"}, {"WWW-Authenticate": "Bearer"})
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        try:
            self._route(url.path, query)
        except StoreError as exc:
            self._send(503, {"error": exc.reason})
        except (ValueError, KeyError) as exc:
            self._send(400, {"error": f"bad request: {exc}"})

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        if path == "/openapi.json":
            return self._send(200, openapi(self.state.model.spec.labels))
        store, lib = self.state.current()
        if path == "/health":
            return self._send(200, {"status": "ok" if lib is not None else "empty",
                                    "model": self.state.model.spec.analyser,
                                    "tracks": len(lib.records) if lib is not None else 0})
        if store is None or lib is None:  # nothing analysed yet
            if path == "/tracks":
                return self._send(200, [])
            return self._send(404, {"error": "no such track (the database is empty)"})
        if path == "/tracks":
            return self._search(store, lib, query)
        m = re.fullmatch(r"/tracks/([1-9][0-9]{0,11})(/similar)?", path)
        if not m:
            return self._send(404, {"error": "no such resource"})
        rec = store.by_id(int(m.group(1)))
        if rec is None or rec.get("model") != lib.model or rec.get("slot") is None:
            return self._send(404, {"error": "no such track"})
        if m.group(2):
            n = bounded_int(query, "n", 10)
            incl = query.get("include_duplicates", ["false"])[0].lower() in ("1", "true", "yes")
            hits = lib.similar(lib.embedding_of(rec), rec, n, include_duplicates=incl)
            return self._send(200, [h.to_json(store.doc_id(h.record["path"], lib.model)) for h in hits])
        tags = lib.tags_of(rec)
        body = {k: v for k, v in rec.items() if k not in ("slot", "size", "mtime_ns")}
        body["id"] = int(m.group(1))
        body["tags"] = {label: round(float(p), 6) for label, p in sorted(zip(lib.labels, tags), key=lambda kv: -kv[1])}
        return self._send(200, body)

    def _search(self, store: Store, lib: Library, query: dict[str, list[str]]) -> None:
        wanted = query.get("tag", [])
        if not wanted:
            return self._send(400, {"error": "give at least one ?tag="})
        unknown = [t for t in wanted if t not in lib.labels]
        if unknown:
            return self._send(400, {"error": f"unknown label(s): {unknown}"})
        limit = bounded_int(query, "limit", 20)
        out = []
        for hit in tag_search(lib, wanted)[:limit]:
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
    state = _State(cfg, model)
    state.current()  # fail now, not on the first request, if the database is damaged
    hosts = {"localhost", "127.0.0.1", "[::1]", sc.host.lower()} | {h.lower() for h in sc.allowed_hosts}
    handler = type("Handler", (_Handler,), {"state": state, "sc": sc, "hosts": frozenset(hosts)})
    import socket

    family = socket.AF_INET6 if ":" in sc.host.strip("[]") else socket.AF_INET
    server_cls = type("Server", (_Server,), {"address_family": family})
    try:
        return server_cls((sc.host.strip("[]"), sc.port), handler)
    except OSError as exc:
        raise ConfigError(f"serve {sc.host}:{sc.port}", f"cannot listen there: {exc.strerror or exc}") from None


def serve(cfg: Config, model: Model, sc: ServeConfig) -> int:
    server = make_server(cfg, model, sc)
    host, port = server.server_address[:2]
    log.info("serving http://%s:%d/ (read-only%s)", host, port, ", token required" if sc.token else "")

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown, name="tagger-serve-stop").start()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
