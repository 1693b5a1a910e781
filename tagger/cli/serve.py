"""`tagger serve`: the HTTP API and web page."""
from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable

from tagger.cli.exits import EXIT_OK
from tagger.cli.options import lookup_model, settings_from

log = logging.getLogger("tagger")


def cmd_serve(args: argparse.Namespace) -> int:
    from tagger.serving.http import ServeConfig, serve

    cfg = settings_from(args)
    token = args.token or os.environ.get("TAGGER_TOKEN") or None
    sc = ServeConfig(host=args.host, port=args.port, token=token, allow_remote=args.allow_remote,
                     allowed_hosts=tuple(args.allowed_host or ()))
    from tagger.library.store import Store, StoreError

    try:
        with Store(cfg.database, writer=False) as store:
            model = lookup_model(cfg, store)
    except StoreError as exc:  # no usable database yet: the server itself reports that on start
        log.debug("choosing the lookup model without a database: %s", exc)
        model = lookup_model(cfg)
    serve(cfg, model, sc)
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    sv = sub.add_parser("serve", help="read-only HTTP JSON API (similar tracks, tags, search)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8765)
    sv.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (or set TAGGER_TOKEN)")
    sv.add_argument("--allow-remote", action="store_true", dest="allow_remote",
                    help="needed to bind anything but a loopback address")
    sv.add_argument("--allowed-host", action="append", dest="allowed_host",
                    help="extra Host header names to accept (DNS-rebinding protection)")
    common(sv)
    sv.set_defaults(func=cmd_serve)
