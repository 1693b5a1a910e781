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
    from tagger.lookup.query import stored_cards, track_view

    cfg = settings_from(args)
    if args.top < 1:
        raise ConfigError("--top", f"must be at least 1, got {args.top}")
    store = Store(cfg.database, writer=False)
    path = Path(args.file)
    cards = stored_cards(store)
    # decided by the models that have vectors for this file, as the scan that wrote it did
    view = track_view(store, path_key(path), cards,
                      lambda vectors, p, album: decider_for(cfg, {m: cards[m] for m in vectors}).decide(vectors, p, album))
    if view is None:
        raise TaggerError(path, "not in the database (run `tagger scan` on it first)")  # exit 1: not a database fault
    out = []
    for mv in view.models:
        entry = dict(mv.record)
        if mv.problem:
            entry["problem"] = mv.problem
        elif mv.labels is not None:
            entry["tags"] = {label: round(score, 6) for label, score in mv.labels}
        elif mv.scores is not None:
            entry["tags"] = mv.scores
        out.append(entry)
    decided = view.decision
    if args.json:
        print(json.dumps({"path": view.path, "decision": decided, "models": out}, ensure_ascii=True, indent=1))
        return EXIT_OK
    print(view.path)
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
