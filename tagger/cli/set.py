"""`tagger set`: the user's own genre/mood values, locked."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from tagger import fields as field_registry
from tagger.cli.exits import EXIT_FILES_FAILED, EXIT_OK
from tagger.cli.options import settings_from
from tagger.errors import ConfigError, StoreLockedError

log = logging.getLogger("tagger")


def cmd_set(args: argparse.Namespace) -> int:
    """The web page's correction from the command line: through the running daemon when there is one."""
    from tagger.fsutil import path_key
    from tagger.library.inbox import Correction, Inbox
    from tagger.library.store import Store
    from tagger.pipeline.corrections import correct_files

    cfg = settings_from(args)
    names = field_registry.correctable()
    ops: list[tuple[str, list[str] | None]] = [(f, list(v)) for f in names if (v := getattr(args, f, None))]
    ops += [(f, []) for f in args.clear or ()] + [(f, None) for f in args.unlock or ()]
    if not ops:
        raise ConfigError("set", f"give {'/'.join('--' + f for f in names)} values, --clear FIELD or --unlock FIELD")
    from tagger.tagging.plan import clean_values

    for field, values in ops:
        if values:
            try:
                clean_values(field, values)
            except ValueError as exc:
                raise ConfigError(f"--{field}", str(exc)) from exc
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
                  + (" (locked)" if field_registry.field(r["field"]).tag in r["locked"] else " (unlocked)"))
        else:
            print(f"tagger: not changed: {r.get('path', '')}: {r.get('error')}", file=sys.stderr)
    return EXIT_OK if all(r.get("ok") for r in results) else EXIT_FILES_FAILED


def add_parsers(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    names = field_registry.correctable()
    st = sub.add_parser("set", help=f"set your own {'/'.join(names)} (locked: the tool never overwrites it)")
    st.add_argument("files", nargs="+")
    for name in names:
        st.add_argument(f"--{name}", action="append", help=f"a {name} value (repeat for several)")
    st.add_argument("--clear", action="append", choices=names, help="remove the field's values and lock it")
    st.add_argument("--unlock", action="append", choices=names,
                    help="give the field back to the tool (its values stay as yours)")
    common(st)
    st.set_defaults(func=cmd_set)
