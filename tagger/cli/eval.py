"""`tagger eval`: the tool's decisions against the user's own tags; per-value calibration."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from tagger import fields as field_registry
from tagger.cli.exits import EXIT_FILES_FAILED, EXIT_OK
from tagger.cli.options import load_models, settings_from
from tagger.errors import ConfigError

log = logging.getLogger("tagger")


def cmd_eval(args: argparse.Namespace) -> int:
    """The tool's decisions on the user's own tagged tracks, against those tags; optionally calibrated."""
    from tagger import fields as field_registry
    from tagger.decision.evaluate import Calibration, Case, calibrate, evaluate
    from tagger.decision.track import Decider
    from tagger.fsutil import path_key
    from tagger.library.store import Store
    from tagger.library.vectors import stored_vectors

    cfg = settings_from(args)
    if args.remove_calibration:
        removed = Calibration.remove(cfg.database)
        print(f"removed {removed}" if removed else f"no calibration in {Calibration.path(cfg.database).parent}")
        return EXIT_OK
    if not 0.0 < args.precision <= 1.0:
        raise ConfigError("--precision", f"must be in (0, 1], got {args.precision}")
    if args.min_tracks < 1:
        raise ConfigError("--min-tracks", f"must be at least 1, got {args.min_tracks}")
    fields = tuple(args.field or field_registry.trainable())
    models = load_models(cfg)
    cards = {m.card.id: m.card for m in models}
    first = next(iter(cards))
    prefixes = [path_key(Path(p).expanduser()) for p in args.paths]
    with Store(cfg.database, writer=False) as store:
        records = [r for r in store.records(first)
                   if not prefixes or any(r["path"] == p or r["path"].startswith(p.rstrip(os.sep) + os.sep)
                                          for p in prefixes)]
        decider = Decider(cards, cfg.fields, cfg.vocabulary, cfg.database, lambda: list(store.records(first)),
                          calibrated=False)  # the rule itself is measured, never its own calibration
        cases: dict[str, list[Case]] = {f: [] for f in fields}
        for rec in records:
            user = rec.get("user") or {}
            if not any(user.get(f) for f in fields):
                continue
            vectors = stored_vectors(store, rec["path"], cards, skip_missing=True)
            if not vectors:
                continue
            decision = decider.decide(vectors, rec["path"], rec.get("album"))
            for f in fields:
                if user.get(f) and f in decision.fields:
                    fd = decision.fields[f]
                    cases[f].append(Case(rec["path"], tuple(user[f]), tuple(fd.written),
                                         fd.values[0].value if fd.values else "",
                                         fd.values[0].score if fd.values else 0.0))
    reports = {f: evaluate(f, cs) for f, cs in cases.items() if cs}
    if not reports:
        print(f"tagger: no analysed track under {', '.join(args.paths) or 'the database'} carries your own "
              f"{' or '.join(fields)} (tag some, run `tagger scan --no-write`, then `tagger eval`)", file=sys.stderr)
        return EXIT_FILES_FAILED
    calibration = None
    if args.calibrate:
        thresholds = {f: calibrate(cases[f], args.precision, args.min_tracks) for f in reports}
        calibration = Calibration(args.precision, [c.analyser for c in cards.values()], thresholds,
                                  {f: len(cases[f]) for f in reports})
        saved = calibration.save(cfg.database)
    if args.json:
        out = {"reports": {f: r.to_json() for f, r in reports.items()}, "heads": decider.head_analysers}
        if calibration is not None:
            out["calibration"] = {"file": os.fsdecode(saved), "precision": calibration.precision,
                                  "thresholds": calibration.thresholds}
        print(json.dumps(out, ensure_ascii=True, indent=1))
        return EXIT_OK
    for f, r in reports.items():
        written = r.right + r.wrong
        print(f"{f}: {r.tracks} of your tracks carry your own {f}; the tool would write one for {written} "
              f"({written / r.tracks:.0%}): {r.right} right, {r.wrong} wrong, {r.nothing} nothing")
        width = max([len(v) for v in r.values] + [5])
        print(f"  {'value':<{width}}  yours  written  right  precision  coverage")
        for v, vr in r.values.items():
            prec = "-" if vr.precision is None else f"{vr.precision:.2f}"
            cov = "-" if vr.coverage is None else f"{vr.coverage:.2f}"
            print(f"  {v:<{width}}  {vr.user_tracks:>5}  {vr.written:>7}  {vr.right:>5}  {prec:>9}  {cov:>8}")
        if r.never_proposed:
            print(f"  never proposed: {', '.join(r.never_proposed)}")
        mixed = [f"{u} -> {t} {n}" for u, row in r.confusion.items() for t, n in row.items()
                 if t != "(nothing)" and t.casefold() != u.casefold()]
        if mixed:
            print(f"  confused (yours -> tool's): {'; '.join(mixed[:12])}")
    if decider.heads:
        print("note: trained heads decide " + ", ".join(h.field for h in decider.heads) + " and were trained on "
              "these very tracks; their held-out figures are in the training report")
    if calibration is not None:
        for f, th in calibration.thresholds.items():
            shown = ", ".join(f"{v} {'never' if t is None else f'>= {t:.2f}'}" for v, t in th.items()) or "none"
            print(f"calibrated {f} for precision {calibration.precision:.2f}: {shown}")
        print(f"saved {saved}; `tagger scan` and the daemon use it (`tagger eval --remove-calibration` undoes it)")
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    ev = sub.add_parser("eval", help="how right the tool would be on your library: its decisions against your tags")
    ev.add_argument("paths", nargs="*", help="only tracks under these folders (default: every analysed track)")
    ev.add_argument("--field", action="append", choices=field_registry.trainable(), help="only this field (repeatable)")
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--calibrate", action="store_true",
                    help="store per-value thresholds so that what scans write reaches --precision on your tracks")
    ev.add_argument("--precision", type=float, default=0.9, help="with --calibrate: the precision to reach (0.9)")
    ev.add_argument("--min-tracks", type=int, default=3, dest="min_tracks",
                    help="with --calibrate: values led on fewer tagged tracks keep the default rule (3)")
    ev.add_argument("--remove-calibration", action="store_true", dest="remove_calibration",
                    help="delete the stored calibration; scans go back to the model set's own rule")
    common(ev)
    ev.set_defaults(func=cmd_eval)
