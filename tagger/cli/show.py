"""`tagger show`: what the database holds for a file, and the decision a scan would make."""
from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path

from tagger.cli.exits import EXIT_OK
from tagger.cli.options import bars, decider_for, settings_from
from tagger.errors import ConfigError, TaggerError

log = logging.getLogger("tagger")


def cmd_show(args: argparse.Namespace) -> int:
    from tagger.fsutil import path_key
    from tagger.library.store import Store
    from tagger.models.card import Card, CardError

    cfg = settings_from(args)
    if args.top < 1:
        raise ConfigError("--top", f"must be at least 1, got {args.top}")
    store = Store(cfg.database, writer=False)
    path = Path(args.file)
    recs = list(store.for_path(path_key(path)))
    if not recs:
        raise TaggerError(path, "not in the database (run `tagger scan` on it first)")  # exit 1: not a database fault
    out = []
    vectors: dict = {}
    cards: dict = {}
    for rec in recs:
        entry = {k: v for k, v in rec.items() if k != "slot"}
        if rec.get("status") == "ok" and not store.has_vectors(rec):
            entry["problem"] = "its vectors are missing from the database; `tagger scan` re-analyses it"
        elif rec.get("status") == "ok":
            tags, emb = store.vectors(rec)
            text = store.card_json(rec["model"])
            try:
                card = Card.from_json(text) if text else None
            except CardError:
                card = None
            if card is not None and len(card.labels) == len(tags):
                cards[rec["model"]], vectors[rec["model"]] = card, (str(rec.get("analyser")), tags, emb)
                entry["tags"] = {label: round(float(s), 6) for label, s in
                                 sorted(zip(card.labels, tags), key=lambda kv: -kv[1])}
            else:
                entry["tags"] = [float(x) for x in tags]
        out.append(entry)
    decision = decider_for(cfg, cards).decide(vectors, recs[0]["path"], recs[0].get("album")) if vectors else None
    decided = {name: {"values": fd.written, "reason": fd.reason} for name, fd in decision.fields.items()} \
        if decision else {}
    if args.json:
        print(json.dumps({"path": recs[0]["path"], "decision": decided, "models": out}, ensure_ascii=True, indent=1))
        return EXIT_OK
    print(recs[0]["path"])
    if decided:
        print(" decision (what a scan writes)")
        for name, d in decided.items():
            print(f"  {name}: {', '.join(d['values']) or '(nothing)'}  <- {d['reason']}")
    for entry in out:
        print(f" {entry['model']} ({entry['analyser']}), analysed {entry['analysed_at']}, status {entry['status']}")
        if entry.get("reason"):
            print(f"  reason: {entry['reason']}")
        if entry.get("problem"):
            print(f"  problem: {entry['problem']}")
        if isinstance(entry.get("tags"), dict):
            items = list(entry["tags"].items())
            print(bars(items if args.all else items[: args.top]))
    written = next((e["written"] for e in out if e.get("written")), None)
    for field, values in (written or {}).items():
        print(f" wrote {field}: {', '.join(values) or '(removed)'}")
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    sh = sub.add_parser("show", help="what the database holds for a file")
    sh.add_argument("file")
    sh.add_argument("--json", action="store_true", help="the decision and every model's labels as JSON")
    sh.add_argument("--top", type=int, default=5, help="labels shown per model (default 5)")
    sh.add_argument("--all", action="store_true", help="every label of every model")
    common(sh)
    sh.set_defaults(func=cmd_show)
