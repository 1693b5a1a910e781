"""`tagger analyze`: tag files and print the result (no database, no writes)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tagger.cli.exits import EXIT_FILES_FAILED, EXIT_OK
from tagger.cli.options import bars, decider_for, load_models, settings_from
from tagger.errors import TaggerError

log = logging.getLogger("tagger")


def cmd_analyze(args: argparse.Namespace) -> int:
    from tagger.analysis.engine import TrackFailure
    from tagger.fsutil import path_key
    from tagger.pipeline.scanner import engine_for
    from tagger.tagging.writer import read_fields

    cfg = settings_from(args)
    models = load_models(cfg)
    decider = decider_for(cfg, {m.card.id: m.card for m in models})
    engine = engine_for(cfg, models)
    paths = [Path(p) for p in args.files]
    failed = 0
    out: list[dict[str, Any]] = []
    try:
        for res in engine.analyse(paths):
            if isinstance(res, TrackFailure):
                failed += 1
                if args.json:
                    out.append({"path": os.fsdecode(res.path), "error": res.reason})
                else:
                    print(f"{os.fsdecode(res.path)}: error: {res.reason}", file=sys.stderr)
                continue
            vectors = {mid: (m.card.analyser, m.tags, m.embedding) for mid, m in res.models.items()}
            try:
                albums = read_fields(res.path, names=("ALBUM",))["ALBUM"]
                album: str | None = albums[0] if albums else None
            except TaggerError:
                album = None
            decision = decider.decide(vectors, path_key(res.path), album)
            if args.json:
                out.append({"path": os.fsdecode(res.path), "duration": round(res.duration, 3),
                            "models": {mid: {"analyser": m.card.analyser, "windows": m.n_windows,
                                             "tags": {k: round(float(v), 6) for k, v in
                                                      sorted(zip(m.card.labels, m.tags), key=lambda kv: -kv[1])}}
                                       for mid, m in res.models.items()},
                            "decision": {name: {"values": fd.written, "reason": fd.reason,
                                                "candidates": {c.value: round(c.score, 4) for c in fd.candidates[:8]}}
                                         for name, fd in decision.fields.items()}})
                continue
            print(f"{os.fsdecode(res.path)}  ({res.duration:.1f} s)")
            for mid, m in res.models.items():
                scores = sorted(zip(m.card.labels, map(float, m.tags)), key=lambda kv: -kv[1])
                print(f" {mid} ({m.n_windows} windows of {m.card.window / m.card.sample_rate:.0f} s)")
                print(bars(scores[: args.top]))
            print(" decision")
            for name, fd in decision.fields.items():
                print(f"  {name}: {', '.join(fd.written) or '(nothing)'}  <- {fd.reason}")
    finally:
        engine.close()  # decoder processes, when auto chose them (a GPU)
    if args.json:
        print(json.dumps(out, ensure_ascii=True, indent=1))
    return EXIT_FILES_FAILED if failed else EXIT_OK


def add_parsers(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    a = sub.add_parser("analyze", aliases=["analyse"], help="tag files and print the result (no database, no writes)")
    a.add_argument("files", nargs="+")
    a.add_argument("--json", action="store_true", help="every label's probability as JSON")
    a.add_argument("--top", type=int, default=10)
    common(a)
    a.set_defaults(func=cmd_analyze)
