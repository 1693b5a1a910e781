"""`tagger mpd`: keep MPD's queue going with tracks like the one playing."""
from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path

from tagger.cli.exits import EXIT_OK
from tagger.cli.options import lookup_model, settings_from
from tagger.errors import ConfigError

log = logging.getLogger("tagger")


def cmd_mpd(args: argparse.Namespace) -> int:
    from tagger.integrations.mpd import (
        MpdClient,
        fill_once,
        keep_queue,
        music_directory,
    )
    from tagger.library.store import Store
    from tagger.lookup.similar import Library

    if not 1 <= args.ahead <= 100:
        raise ConfigError("--ahead", f"must be between 1 and 100, got {args.ahead}")
    cfg = settings_from(args)
    address = args.host or os.environ.get("MPD_HOST") or "localhost:6600"
    password = os.environ.get("MPD_PASSWORD")
    if "@" in address and not address.startswith("@"):  # MPD_HOST=password@host, as mpc reads it
        password, _, address = address.partition("@")
    with Store(cfg.database, writer=False) as store:
        model = lookup_model(cfg, store)
    opened: list[Store] = []

    def library() -> Library:
        """A fresh view per change (the daemon commits while this runs); the previous one is closed."""
        while opened:
            opened.pop().close()
        opened.append(Store(cfg.database, writer=False))
        return Library(opened[-1], model.spec.id, model.spec.labels)

    try:
        with MpdClient(address, password) as client:
            music_dir = music_directory(client, Path(args.music_dir).expanduser() if args.music_dir else None)
            if args.once:
                filled = fill_once(client, library(), music_dir, args.ahead)
                for rel in filled.added:
                    print(rel)
                if not filled.added:
                    print(f"nothing queued: {filled.reason}")
                return EXIT_OK
            log.info("keeping %d similar tracks queued on %s (music directory %s)", args.ahead, address, music_dir)
            keep_queue(client, library, music_dir, args.ahead)
    finally:
        while opened:
            opened.pop().close()
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    m = sub.add_parser("mpd", help="keep MPD's queue filled with tracks like the one playing")
    m.add_argument("--host", help="MPD's address: HOST:PORT, /path/to/socket or PASSWORD@ADDRESS "
                                  "(default $MPD_HOST, else localhost:6600)")
    m.add_argument("--ahead", type=int, default=5, help="tracks to keep queued after the current one (default 5)")
    m.add_argument("--music-dir", dest="music_dir", help="MPD's music directory (default: asked of MPD; it "
                                                         "answers over its Unix socket only)")
    m.add_argument("--once", action="store_true", help="fill the queue once and exit (print what was added)")
    common(m)
    m.set_defaults(func=cmd_mpd)
