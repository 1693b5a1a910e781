"""What each page shows, gathered from the read-only database, the files' tags and the model cards.

The server (``tagger/serving/http.py``) owns HTTP, security and the reopened read-only store; this module turns a
store snapshot into page data. It never writes: corrections go to the inbox (``tagger/library/inbox.py``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tagger import fields as field_registry
from tagger.config import Config
from tagger.decision.track import Decider
from tagger.errors import ConfigError, TaggerError
from tagger.fields import INFO_FIELDS
from tagger.library.inbox import Correction, Inbox, lock_holder, read_status
from tagger.library.records import Status
from tagger.library.store import Store
from tagger.lookup.query import bounded, track_view
from tagger.lookup.similar import Library, build_playlist, resolve_tags
from tagger.models.card import Card
from tagger.pipeline.corrections import apply_now
from tagger.serving.web import pages
from tagger.serving.web.catalogue import Catalogue, Query, descriptor_groups
from tagger.serving.web.media import cover_art
from tagger.tagging.plan import all_tags, clean_values
from tagger.tagging.writer import read_fields

ANSWER_WAIT_S = 20.0


class Snapshot:
    """One opened read-only store with everything derived from it (rebuilt when the database changes)."""

    def __init__(self, cfg: Config, store: Store, lib: Library) -> None:
        self.cfg, self.store, self.lib = cfg, store, lib
        self.cards: dict[str, Card] = {}
        for mid in store.models():
            text = store.card_json(mid)
            if text:
                self.cards[mid] = Card.from_json(text)
        tracks: dict[str, dict[str, Any]] = {}
        models: dict[str, list[str]] = {}
        problems: dict[str, tuple[str, str, str]] = {}  # path -> (path, what failed, why)
        for doc_id, doc in store.documents():
            if doc.get("status") == Status.FAILED:
                problems[doc["path"]] = (doc["path"], "analysis", str(doc.get("reason") or ""))
            elif doc.get("write_error") and doc["path"] not in problems:
                problems[doc["path"]] = (doc["path"], "tag write", str(doc["write_error"]))
            if doc.get("status") == Status.OK:
                models.setdefault(doc["path"], []).append(str(doc.get("analyser") or doc["model"]))
            if doc["model"] == lib.model and doc.get("status") == Status.OK and doc.get("slot") is not None:
                tracks[doc["path"]] = {**doc, "id": doc_id}
        rows = []
        for path, t in tracks.items():
            t["models"] = models.get(path, [])
            rows.append(t)
        self.by_id = {t["id"]: t for t in rows}
        self.problems = sorted(problems.values())
        groups = descriptor_groups(self.cards.values(), cfg.vocabulary)
        self.catalogue = Catalogue(rows, groups=groups, roots=[os.fsdecode(r) for r in cfg.library])
        self.decider = Decider(self.cards, cfg.fields, cfg.vocabulary, cfg.database, lambda: rows)
        self.heads = self.decider.heads

    def known_values(self) -> dict[str, list[str]]:
        """Values offered while correcting: the vocabulary's and every value the library already uses."""
        out = {}
        for fld in field_registry.correctable():
            seen = {v.casefold(): v for v in self.cfg.vocabulary.get(fld, {})}
            for v, _ in self.catalogue.facets[fld].codes.items():
                seen.setdefault(v.casefold(), v)
            out[fld] = sorted(seen.values(), key=str.casefold)
        return out


class Site:
    def __init__(self, cfg: Config, csrf: str) -> None:
        self.cfg, self.csrf = cfg, csrf
        self.inbox = Inbox(cfg.database)

    # -- pages ------------------------------------------------------------------------------------
    def error_page(self, code: int, message: str) -> str:
        """An error in the user's words, for a browser: what went wrong and a way back."""
        titles = {400: "That address is not right", 401: "Sign-in needed", 403: "Not allowed here",
                  404: "Not found", 405: "Not possible here", 503: "The database cannot be read"}
        title = titles.get(code, "Something went wrong")
        return pages.layout(title, f"<h1>{pages.e(title)}</h1><p class=error>{pages.e(message)}</p>"
                                   '<p><a href="/">Back to the library</a></p>', csrf=self.csrf, active="library")

    def not_found(self, message: str) -> str:
        return pages.layout("Not found", f"<h1>Not found</h1><p class=error>{pages.e(message)}</p>",
                            csrf=self.csrf, active="library")

    def library(self, snap: Snapshot | None, params: Mapping[str, list[str]]) -> str:
        q = Query.parse(params)
        if snap is None:
            return pages.layout("Library", "<h1>Nothing analysed yet</h1><p>Run <code>tagger scan</code> or start "
                                "<code>tagger watch</code>; this page fills in as tracks are analysed.</p>",
                                csrf=self.csrf, active="library")
        return pages.library_page(snap.catalogue.query(q), q, csrf=self.csrf, library_size=snap.catalogue.n)

    def track_data(self, snap: Snapshot, tid: int) -> dict[str, Any]:
        t = snap.by_id.get(tid)
        if t is None:
            raise KeyError(tid)
        view = track_view(snap.store, t["path"], snap.cards, snap.decider.decide)
        assert view is not None  # the snapshot lists it: the store has its records
        models = [{"model": mv.model, "analyser": mv.analyser, "labels": mv.labels} for mv in view.models
                  if mv.labels is not None]
        decided = view.decision
        try:
            file_tags = read_fields(Path(t["path"]), id3_version=self.cfg.id3_version,
                                    v23_sep=self.cfg.id3v23_separator, names=(*all_tags(), *INFO_FIELDS))
            file_error = ""
        except TaggerError as exc:
            file_tags, file_error = None, exc.reason
        hits = snap.lib.similar(snap.lib.embedding_of(t), t, 10)
        similar = [{**h.to_json(snap.store.doc_id(h.record["path"], snap.lib.model))} for h in hits]
        return {"track": t, "models": models, "decision": decided, "file_tags": file_tags,
                "file_error": file_error, "similar": similar}

    def track(self, snap: Snapshot, tid: int) -> str:
        d = self.track_data(snap, tid)
        return pages.track_page(d["track"], csrf=self.csrf, models=d["models"], decision=d["decision"],
                                file_tags=d["file_tags"], file_error=d["file_error"], similar=d["similar"],
                                known=snap.known_values(), policies={k: f.policy for k, f in self.cfg.fields.items()},
                                has_cover=cover_art(d["track"]["path"]) is not None)

    def playlist_rows(self, snap: Snapshot | None, params: Mapping[str, list[str]]
                      ) -> tuple[list[dict[str, Any]], dict[str, Any] | None, list[str], int]:
        seed_id = params.get("seed", [""])[0]
        tags = [x.strip() for x in ",".join(params.get("tags", [])).split(",") if x.strip()]
        n = bounded("n", params.get("n", [None])[0], 20)  # the API's bounds (tagger.lookup.query.LIMITS)
        seed = None
        if seed_id:
            if not seed_id.isdigit() or snap is None or int(seed_id) not in snap.by_id:
                raise KeyError(seed_id)
            seed = snap.by_id[int(seed_id)]
        if snap is None or (seed is None and not tags):
            return [], seed, tags, n
        try:
            query = resolve_tags(snap.lib.labels, snap.lib.records, tags, "tags") if tags else None
        except ConfigError as exc:
            raise ValueError(exc.reason) from exc
        rec = snap.lib.by_path[seed["path"]] if seed else None
        rows = build_playlist(snap.lib, n, tags=query, seed=rec, query=snap.lib.embedding_of(rec) if rec else None)
        out = []
        for r in rows:
            tid = snap.store.doc_id(r["path"], snap.lib.model)
            out.append({**(snap.by_id.get(tid) or r), "id": tid})
        return out, seed, tags, n

    def playlist(self, snap: Snapshot | None, params: Mapping[str, list[str]]) -> str:
        labels = snap.lib.labels if snap else []
        try:
            rows, seed, tags, n = self.playlist_rows(snap, params)
        except ValueError as exc:
            return pages.playlist_page([], csrf=self.csrf, seed=None, tags=[], n=20, labels=labels, error=str(exc))
        return pages.playlist_page(rows, csrf=self.csrf, seed=seed, tags=tags, n=n, labels=labels)

    def status_json(self, snap: Snapshot | None) -> dict[str, Any]:
        s = read_status(self.cfg.database)
        s["tracks"] = snap.catalogue.n if snap else 0
        return s

    def status(self, snap: Snapshot | None) -> str:
        models = sorted({(c.id, c.analyser) for c in snap.cards.values()}) if snap else []
        heads = [f"{h.field} ({h.path.name})" for h in snap.heads] if snap else []
        return pages.status_page(self.status_json(snap), csrf=self.csrf, tracks=snap.catalogue.n if snap else 0,
                                 models=models, heads=heads, problems=snap.problems if snap else [])

    # -- corrections ------------------------------------------------------------------------------
    def correct(self, snap: Snapshot | None, tid: int, body: Any) -> tuple[int, dict[str, Any]]:
        """Queue a correction for the single writer and wait for its answer (202 while it is still queued)."""
        t = snap.by_id.get(tid) if snap else None
        if t is None:
            return 404, {"error": "no such track"}
        if not isinstance(body, dict) or body.get("field") not in field_registry.correctable():
            return 400, {"error": f"field must be one of {', '.join(field_registry.correctable())}"}
        action = body.get("action", "set")
        if action == "unlock":
            values = None
        elif action == "clear":
            values = ()
        elif action == "set":
            raw = body.get("values")
            if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
                return 400, {"error": "values must be a list of strings"}
            values = tuple(raw)
        else:
            return 400, {"error": f"action must be set, clear or unlock, got {action!r}"}
        if values:
            try:
                clean_values(body["field"], values)
            except ValueError as exc:
                return 400, {"error": str(exc)}
        rid = self.inbox.submit(Correction(t["path"], body["field"], values))
        apply_now(self.cfg)  # when no daemon or scan holds the lock, this server applies it itself
        answer = self.inbox.wait(rid, ANSWER_WAIT_S)
        if answer is None:
            holder = lock_holder(self.cfg.database)
            return 202, {"queued": True, "request": rid,
                         "message": f"queued: the tagger process holding the database (pid {holder}) applies it "
                                    "when its current file is done"}
        return (200 if answer.get("ok") else 409), answer
