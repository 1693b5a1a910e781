"""`tagger scan`: analyse folders, store results, write tags (incremental)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from tagger.cli.exits import EXIT_FILES_FAILED, EXIT_OK
from tagger.cli.options import Progress, load_models, settings_from

log = logging.getLogger("tagger")


def _print_diff(outcome, out=None) -> None:
    out = out or sys.stdout
    print(os.fsdecode(outcome.path), file=out)
    if outcome.status != "ok":
        print(f"  failed: {outcome.reason}", file=out)
        return
    if outcome.write_error:
        print(f"  not written: {outcome.write_error}", file=out)
    if not outcome.changes:
        print("  (no tag changes)", file=out)
    for c in outcome.changes:
        print(f"  {c.field}: {c.before!r} -> {c.after!r}", file=out)


def cmd_scan(args: argparse.Namespace) -> int:
    from tagger.library.inbox import Inbox
    from tagger.library.store import Store
    from tagger.pipeline.corrections import drain
    from tagger.pipeline.scanner import scan

    cfg = settings_from(args)
    roots = [Path(p).expanduser() for p in args.paths] or list(cfg.library)
    models = load_models(cfg)
    # --pretend reads the database (unchanged files are decided from their stored vectors, with the
    # library's trained heads) but never writes to it.
    if args.pretend:
        store = Store(cfg.database, writer=False) if (Path(cfg.database) / "records.json").exists() else None
    else:
        store = Store(cfg.database, writer=True)
    try:
        if store is not None and not args.pretend:  # corrections made in the web page while no daemon ran
            drain(Inbox(cfg.database), store, cfg)
        report = scan(roots, cfg, models, store, force=args.force, pretend=args.pretend,
                      progress=None if args.json else Progress())
        if store is not None and not args.pretend:
            drain(Inbox(cfg.database), store, cfg)
    finally:
        if store is not None:
            store.close()
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=True, indent=1))
    else:
        if args.pretend:
            for o in report.outcomes:
                _print_diff(o)
        for root in report.missing_roots:
            print(f"missing library folder (nothing removed): {root}", file=sys.stderr)
        speed = f", {report.audio_seconds / report.seconds:.0f}x realtime" if report.seconds > 0 and report.analysed else ""
        print(f"analysed {report.analysed}, skipped {report.skipped} unchanged, "
              + (f"decided again {report.redecided}, " if report.redecided else "") + f"failed {len(report.failed)}, "
              f"tags written to {report.written}" + (" (pretend: nothing written)" if args.pretend else "")
              + f", moved {report.moved}, removed {report.removed} stale records{speed}")
        for path, reason in report.failed:
            print(f"  failed: {path}: {reason}")
        for path, reason in report.write_failed:
            print(f"  tags not written: {path}: {reason}")
    bad = report.failed or report.write_failed or report.missing_roots
    return EXIT_FILES_FAILED if bad else EXIT_OK


def add_parsers(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    s = sub.add_parser("scan", help="analyse folders, store results, write tags (incremental)")
    s.add_argument("paths", nargs="*", help="files or folders (default: the configured library)")
    s.add_argument("--pretend", action="store_true", help="print the exact tag changes; write nothing (files or database)")
    s.add_argument("--force", action="store_true", help="re-analyse files even when unchanged")
    s.add_argument("--no-write", action="store_true", dest="no_write", help="store results but do not touch audio files")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    common(s)
    s.set_defaults(func=cmd_scan)
