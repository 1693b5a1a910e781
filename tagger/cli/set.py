"""`tagger set`: the user's own genre/mood values, locked."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from tagger.cli.exits import EXIT_FILES_FAILED, EXIT_OK
from tagger.cli.options import settings_from
from tagger.errors import ConfigError, StoreLockedError

log = logging.getLogger("tagger")


def cmd_set(args: argparse.Namespace) -> int:
    """The web page's correction from the command line: through the running daemon when there is one."""
    from tagger.fsutil import path_key
    from tagger.library.inbox import Correction, Inbox, correct_files
    from tagger.library.store import Store

    cfg = settings_from(args)
    ops = [(f, list(v)) for f, v in (("genre", args.genre), ("mood", args.mood)) if v]
    ops += [(f, []) for f in args.clear or ()] + [(f, None) for f in args.unlock or ()]
    if not ops:
        raise ConfigError("set", "give --genre/--mood values, --clear FIELD or --unlock FIELD")
    from tagger.tagging.plan import clean_values

    for field, values in ops:
        if values:
            try:
                clean_values(field, values)
            except ValueError as exc:
                raise ConfigError(f"--{field}", str(exc)) from None
    paths = [Path(p).expanduser().absolute() for p in args.files]
    results: list[dict] = []
    try:
        store = Store(cfg.database, writer=True)
    except StoreLockedError:  # the daemon holds the database: it applies the request from its inbox
        inbox = Inbox(cfg.database)
        for field, values in ops:
            for p in paths:
                rid = inbox.submit(Correction(path_key(p), field, None if values is None else tuple(values)))
                got = inbox.wait(rid, 60.0)
                results.append(got or {"ok": False, "path": os.fsdecode(p),
                                       "error": "queued; the running tagger has not applied it within 60 s"})
    else:
        with store:
            for field, values in ops:
                results += correct_files(cfg, store, paths, field, values)
    for r in results:
        if r.get("ok"):
            print(f"{r['path']}: {r['field']} = {', '.join(r['values']) or '(none)'}"
                  + (" (locked)" if r["field"].upper() in r["locked"] else " (unlocked)"))
        else:
            print(f"tagger: not changed: {r.get('path', '')}: {r.get('error')}", file=sys.stderr)
    return EXIT_OK if all(r.get("ok") for r in results) else EXIT_FILES_FAILED


def add_parsers(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    st = sub.add_parser("set", help="set your own genre/mood (locked: the tool never overwrites it)")
    st.add_argument("files", nargs="+")
    st.add_argument("--genre", action="append", help="a genre value (repeat for several)")
    st.add_argument("--mood", action="append", help="a mood value (repeat for several)")
    st.add_argument("--clear", action="append", choices=["genre", "mood"], help="remove the field's values and lock it")
    st.add_argument("--unlock", action="append", choices=["genre", "mood"],
                    help="give the field back to the tool (its values stay as yours)")
    common(st)
    st.set_defaults(func=cmd_set)
