"""`tagger undo`: remove the tags this tool wrote."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from tagger.cli.exits import EXIT_FILES_FAILED, EXIT_OK
from tagger.cli.options import settings_from
from tagger.errors import ConfigError, TaggerError

log = logging.getLogger("tagger")


def cmd_undo(args: argparse.Namespace) -> int:
    from tagger.library.files import discover
    from tagger.tagging.plan import plan_undo
    from tagger.tagging.writer import read_fields, write_changes

    cfg = settings_from(args)
    if args.all and args.paths:
        raise ConfigError("undo", "give paths or --all, not both")
    if not args.all and not args.paths:
        raise ConfigError("undo", "give files or folders, or --all for the configured library")
    roots = list(cfg.library) if args.all else [Path(p).expanduser() for p in args.paths]
    unreadable: list[tuple[str, str]] = []
    files, missing = discover(roots, cfg.extensions, unreadable=unreadable)
    explicit = {Path(os.path.abspath(p)) for p in roots if Path(p).is_file()}
    failed = len(missing) + len(unreadable)
    for m in missing:
        print(f"tagger: error: {m}: no such file or folder", file=sys.stderr)
    for where, reason in unreadable:
        print(f"tagger: error: {where}: {reason}", file=sys.stderr)
    undone = 0
    for path in files:
        try:
            current = read_fields(path, id3_version=cfg.id3_version, v23_sep=cfg.id3v23_separator)
            changes = plan_undo(current)
            if not changes:
                if path in explicit:
                    print(f"{path}: nothing to undo")
                continue
            undone += 1
            if args.pretend:
                print(os.fsdecode(path))
                for c in changes:
                    print(f"  {c.field}: {c.before!r} -> {c.after!r}")
                continue
            write_changes(path, changes, expect=None, id3_version=cfg.id3_version, v23_sep=cfg.id3v23_separator)
            print(f"{path}: removed {', '.join(c.field for c in changes)}")
        except TaggerError as exc:
            failed += 1
            print(f"tagger: error: {exc}", file=sys.stderr)
    if len(files) > len(explicit):
        verb = "would undo" if args.pretend else "undid"
        print(f"{verb} the tool's tags in {undone} of {len(files)} files" + (f"; {failed} failed" if failed else ""),
              file=sys.stderr)
    return EXIT_FILES_FAILED if failed else EXIT_OK


def add_parsers(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    u = sub.add_parser("undo", help="remove the tags this tool wrote (as listed in TAGGER_WRITTEN)")
    u.add_argument("paths", nargs="*", metavar="PATH", help="files or folders (walked like a scan)")
    u.add_argument("--all", action="store_true", help="every file of the configured library")
    u.add_argument("--pretend", action="store_true", help="print what would be removed; change nothing")
    common(u)
    u.set_defaults(func=cmd_undo)
