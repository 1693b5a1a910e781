"""`tagger train`: the user's own genre/mood heads from the library's tagged tracks."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from tagger.cli.exits import EXIT_FILES_FAILED, EXIT_OK
from tagger.cli.options import load_models, settings_from
from tagger.errors import ConfigError

log = logging.getLogger("tagger")


def cmd_train(args: argparse.Namespace) -> int:
    from tagger.library.store import Store
    from tagger.models.heads import heads_dir, remove_heads

    cfg = settings_from(args)
    fields = tuple(args.field) if args.field else None
    if args.remove:
        removed = remove_heads(cfg.database, fields)
        for path in removed:
            print(f"removed {path}")
        if not removed:
            print(f"no trained heads in {heads_dir(cfg.database)}")
        else:
            print("the next `tagger scan` (or the daemon after `systemctl reload tagger`) decides those fields "
                  "with the model set again and replaces the values the heads wrote")
        return EXIT_OK
    import importlib.util

    missing = [m for m in ("torch", "onnx", "matplotlib", "exporter") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError("train", f"needs the training extra ({', '.join(missing)} missing): "
                                   "pip install 'onnx-music-tagger[train]' (or `make setup-dev`)")
    if not 0.0 < args.precision <= 1.0:
        raise ConfigError("--precision", f"must be in (0, 1], got {args.precision}")
    from exporter.heads import TrainOptions, train
    from tagger import fields as field_registry

    opts = TrainOptions(fields=fields or field_registry.trainable(), calibration=args.calibration, precision=args.precision,
                        min_tracks=args.min_tracks)
    if not (Path(cfg.database) / "records.json").exists():
        raise ConfigError(str(cfg.database), "no database yet: run `tagger scan` first")
    cards = [m.card for m in load_models(cfg)]
    bar = sys.stderr.isatty() and not args.json

    def progress(name: str, done: int, total: int, eta: float | None) -> None:
        if bar:
            sys.stderr.write(f"\rtraining {name}: fit {done}/{total}" + (f", ETA {eta:.0f} s " if eta else " "))
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()

    with Store(cfg.database, writer=False) as store:
        results = train(store, cards, cfg.fields, Path(cfg.database), opts, progress, cfg.vocabulary)
    if args.json:
        print(json.dumps([{"field": r.field, "status": r.status, "reason": r.reason or None,
                           "head": os.fsdecode(r.head) if r.head else None, "report": r.report or None}
                          for r in results], ensure_ascii=True, indent=1))
    else:
        for r in results:
            if r.status != "trained":
                print(f"{r.field}: not trained: {r.reason}")
                continue
            rep = r.report
            prec = rep["precision_when_written"]
            print(f"{r.field}: head trained on {rep['tracks']} tracks, {len(rep['labels'])} values "
                  f"({rep['untagged_tracks']} untagged tracks to decide); held out ({rep['split']['kind']}): "
                  f"accuracy {rep['accuracy']:.2f} (majority {rep['majority_baseline']:.2f}), would write "
                  f"{rep['coverage']:.0%} of them at precision " + (f"{prec:.2f}" if prec is not None else "n/a"))
            ctx = rep["context"]
            print("  album/folder mates: " + (f"used (held-out precision {ctx['precision']:.2f} over {ctx['voted']} "
                                                 "tracks)" if ctx["enabled"] else ctx["note"]))
            agr = rep.get("set_agreement") or {}
            if agr:
                print("  agreement with the model set: " + (
                    f"used (held-out precision {agr['precision']:.2f} over {agr['agreed']} tracks where the head "
                    "alone stayed below its threshold)" if agr.get("enabled") else agr["note"]))
            if rep["left_out_rare"]:
                print(f"  left out (fewer than {opts.min_tracks} tracks): {', '.join(sorted(rep['left_out_rare']))}")
            never = [k for k, v in rep["per_label"].items() if "never_written" in v]
            if never:  # said as the scan decides: mates that agree (when enabled) still give these values
                mates = "; agreeing album/folder mates still give them" if ctx["enabled"] else ""
                print(f"  the head alone never writes (held-out precision below {opts.precision:.2f}): "
                      f"{', '.join(never)}{mates}")
            if rep["split"]["labels_split_by_track"]:
                print(f"  from one album only, so evaluated within it: {', '.join(rep['split']['labels_split_by_track'])}")
            print(f"  head: {r.head}\n  report: {r.files[1].parent}")
        if any(r.status == "trained" for r in results):
            print("the next `tagger scan` (or the daemon after `systemctl reload tagger`) writes these fields "
                  "in your vocabulary, replacing only values this tool wrote")
    if not any(r.status == "trained" for r in results):
        print("tagger: trained nothing (see the reason per field above); tag more of your tracks with your own "
              f"values (at least {opts.min_tracks} per value, or lower --min-tracks) and run `tagger scan`, then "
              "`tagger train` again", file=sys.stderr)
        return EXIT_FILES_FAILED
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    t = sub.add_parser("train", help="learn your own genre/mood values from the library's tagged tracks")
    t.add_argument("--field", action="append", help="only this field (repeatable; default: genre and mood)")
    t.add_argument("--remove", action="store_true", help="delete the trained heads; fields go back to the model set")
    t.add_argument("--precision", type=float, default=0.9,
                   help="held-out precision a value must reach to be written (default 0.9); below it the head abstains")
    t.add_argument("--calibration", choices=["precision", "equal-rate"], default="precision",
                   help="threshold per value: the precision target (default) or where TPR equals TNR")
    t.add_argument("--min-tracks", type=int, default=5, dest="min_tracks",
                   help="values with fewer tagged tracks are left out (default 5)")
    t.add_argument("--json", action="store_true")
    common(t)
    t.set_defaults(func=cmd_train)
