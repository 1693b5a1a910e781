"""`tagger watch`: the daemon."""
from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from tagger.cli.exits import EXIT_OK
from tagger.cli.options import settings_from

log = logging.getLogger("tagger")


def cmd_watch(args: argparse.Namespace) -> int:
    import signal
    import threading
    from dataclasses import replace

    from tagger.daemon.watch import Daemon

    stop = threading.Event()  # a SIGTERM during start-up (loading the model) still ends cleanly
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cfg = settings_from(args)
    if args.polling:
        cfg = replace(cfg, polling=True)
    if args.settle is not None:
        cfg = replace(cfg, settle_seconds=args.settle)
    roots = [Path(p).expanduser() for p in args.paths] or list(cfg.library)
    daemon = Daemon(cfg, roots, config_path=Path(args.config) if args.config else None, stop_event=stop)
    daemon.run()
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    w = sub.add_parser("watch", help="daemon: tag new and changed files as they arrive (systemd-ready)")
    w.add_argument("paths", nargs="*", help="folders to watch (default: the configured library)")
    w.add_argument("--polling", action="store_true", help="poll instead of inotify (network mounts)")
    w.add_argument("--settle", type=float, help="seconds a file must be quiet before analysis")
    common(w)
    w.set_defaults(func=cmd_watch)
