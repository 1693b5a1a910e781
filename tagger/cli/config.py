"""`tagger config`: where the config file lives; write or print the defaults."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from tagger.cli.exits import EXIT_OK
from tagger.config import load_config
from tagger.errors import ConfigError

log = logging.getLogger("tagger")


def cmd_config(args: argparse.Namespace) -> int:
    """Where the configuration lives, and a documented copy of the defaults to start one from."""
    from tagger.config import DEFAULTS_FILE, default_config_path

    target = Path(args.config).expanduser() if args.config else default_config_path()
    if args.defaults:
        sys.stdout.write(DEFAULTS_FILE.read_text())
        return EXIT_OK
    if args.init:
        if target.exists() and not args.force:
            raise ConfigError(target, "already exists; edit it, or pass --force to replace it with the defaults")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_text(DEFAULTS_FILE.read_text())
            os.replace(tmp, target)
        except OSError as exc:
            raise ConfigError(target, f"cannot write: {exc.strerror or exc}") from exc
        print(f"wrote {target}: every key with its default and what it does; edit what you want to change")
        return EXIT_OK
    cfg = load_config(target if args.config else None)
    state = "in use" if cfg.source != "defaults" else "not present: the built-in defaults are in use " \
                                                      "(`tagger config --init` writes a copy to edit)"
    print(f"config file: {target} ({state})\ndatabase: {cfg.database}\nlibrary: "
          + ", ".join(map(str, cfg.library)) + f"\nmodels: {', '.join(cfg.models)}")
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    c = sub.add_parser("config", help="where the config file lives; --init writes one with every default")
    c.add_argument("--config", help="config file (default $XDG_CONFIG_HOME/tagger/config.yaml)")
    c.add_argument("--init", action="store_true", help="write the documented defaults there, to edit")
    c.add_argument("--force", action="store_true", help="with --init: replace an existing file")
    c.add_argument("--defaults", action="store_true", help="print the documented defaults")
    c.set_defaults(func=cmd_config)
